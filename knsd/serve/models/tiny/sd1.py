"""The embedded default model (`tiny`): a real SD 1.x pipeline with tiny widths and random weights.

It has Stable Diffusion 1.x's structure (VAE scale factor 8, 4 latent channels, a CLIP text encoder with
77-token prompts, a UNet with cross-attention) but is small enough that a 512x512, 50-step request takes
a couple of seconds on a laptop CPU. `tiny-inpaint` is the same with the 9-channel UNet input of SD 1.5
inpainting checkpoints (latents, mask, masked-image latents).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from knsd.serve.models.tiny.parts import write_tokenizer_files

# Bump when the architecture or the build changes: a new folder is built next to the old one.
VERSION = "tiny-sd-v1"
INPAINT_VERSION = "tiny-inpaint-v1"
SEED = 20240611


def build_inpaint(folder: Path) -> None:
    """Build the tiny inpainting pipeline (a 9-channel UNet input) deterministically."""
    build(folder, in_channels=9)


def build(folder: Path, in_channels: int = 4) -> None:
    """Build the tiny pipeline deterministically and save it as a diffusers folder."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = write_tokenizer_files(folder / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "_tokenizer_src"))
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    # Cross-attention only at the lowest resolution keeps 64x64 latents (512x512 images) cheap.
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    # Four blocks: VAE scale factor 2**3 = 8, like SD 1.x.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=512,
    )
    # SD 1.5's scheduler config.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[attr-defined]  # mypy misreads diffusers' bases
    shutil.rmtree(folder / "_tokenizer_src")
