"""The embedded default model: a real SD 1.x pipeline with tiny widths and random weights.

It has Stable Diffusion 1.x's structure (VAE scale factor 8, 4 latent channels, a CLIP text encoder with
77-token prompts, a UNet with cross-attention) but is small enough that a 512x512, 50-step request takes
a couple of seconds on a laptop CPU. It is built deterministically from a fixed seed without touching the
network (the tokenizer's vocabulary is written here), saved as a diffusers folder in the cache, and then
loaded from there like any real checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from knsd.cachedir import build_once

# Bump when the architecture or the build changes: a new folder is built next to the old one.
TINY_VERSION = "tiny-sd-v1"
SEED = 20240611
_SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _builders() -> dict[str, tuple[str, Callable[[Path], None]]]:
    """`--model` name -> (cache folder name, builder) for every embedded tiny model."""
    from knsd.serve import tiny_sd3, tiny_sdxl

    return {
        "tiny": (TINY_VERSION, build_tiny_model),
        "tiny-sdxl": (tiny_sdxl.VERSION, tiny_sdxl.build),
        "tiny-sd3": (tiny_sd3.VERSION, tiny_sd3.build),
    }


TINY_NAMES = ("tiny", "tiny-sdxl", "tiny-sd3")


def tiny_model_dir(cache: Path, name: str = "tiny") -> Path:
    """The folder a tiny model lives in under the knsd cache."""
    return cache / "models" / _builders()[name][0]


def ensure_tiny_model(cache: Path, name: str = "tiny") -> Path:
    """Build a tiny model into the cache unless it is already there; return its folder."""
    version, builder = _builders()[name]
    return build_once(cache / "models" / version, builder, cache)


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values (`bytes_to_unicode`)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tokenizer_files(folder: Path, pad: str = _SPECIAL[1]) -> int:
    """Write a byte-level CLIP BPE vocabulary (no merges) and return its size.

    `pad` is the padding token: CLIP-L pads with end-of-text, OpenCLIP towers (bigG) with "!" (id 0).
    """
    alphabet = _byte_alphabet()
    vocab = [*alphabet, *(c + "</w>" for c in alphabet), *_SPECIAL]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False)
    )
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": _SPECIAL[0],
        "eos_token": _SPECIAL[1],
        "unk_token": _SPECIAL[1],
        "pad_token": pad,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def build_tiny_model(folder: Path) -> None:
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
        in_channels=4,
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
