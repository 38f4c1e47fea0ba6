"""The embedded tiny SDXL model: SDXL's structure (two CLIP towers, pooled text and size conditioning,
linear-projection transformers) with tiny widths and random weights, built deterministically offline."""

from __future__ import annotations

from pathlib import Path

from knsd.serve.models.tiny import parts

VERSION = "tiny-sdxl-v1"
SEED = 20240612
# The two text towers have different widths on purpose: diffusers tells CLIP-L and bigG apart in a single
# file partly by width, as in the real model (768 vs 1280).
HIDDEN_1, HIDDEN_2, TIME_DIM = 32, 48, 8


def build(folder: Path) -> None:
    """Build the tiny SDXL pipeline and save it as a diffusers folder."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer, vocab = parts.clip_tokenizer(folder)
    tokenizer_2, _ = parts.clip_tokenizer(folder, pad="!")
    text_encoder = parts.clip_text_encoder(SEED, vocab, HIDDEN_1, projection=False)
    text_encoder_2 = parts.clip_text_encoder(SEED + 1, vocab, HIDDEN_2, projection=True)
    torch.manual_seed(SEED + 2)
    unet = UNet2DConditionModel(  # type: ignore[attr-defined]  # mypy misreads diffusers/transformers
        sample_size=128,  # 1024 px default, like SDXL
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN_1 + HIDDEN_2,  # both towers' hidden states, concatenated
        attention_head_dim=8,
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM,
        # six size numbers (original, crop top-left, target) x TIME_DIM, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * TIME_DIM + HIDDEN_2,
    ).eval()
    # SDXL base's scheduler config.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=parts.vae(SEED + 3, 4, scaling_factor=0.13025, force_upcast=True),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[attr-defined]  # mypy misreads diffusers/transformers
