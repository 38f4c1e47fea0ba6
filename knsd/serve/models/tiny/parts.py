"""Shared pieces of the embedded tiny models: CLIP text encoders, tokenizers and a VAE, built offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def byte_alphabet() -> list[str]:
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


def write_tokenizer_files(folder: Path, pad: str = SPECIAL_TOKENS[1]) -> int:
    """Write a byte-level CLIP BPE vocabulary (no merges) and return its size.

    `pad` is the padding token: CLIP-L pads with end-of-text, OpenCLIP towers (bigG) with "!" (id 0).
    """
    alphabet = byte_alphabet()
    vocab = [*alphabet, *(c + "</w>" for c in alphabet), *SPECIAL_TOKENS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False)
    )
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "unk_token": SPECIAL_TOKENS[1],
        "pad_token": pad,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def clip_tokenizer(folder: Path, pad: str = "<|endoftext|>") -> tuple[Any, int]:
    """A byte-level CLIP tokenizer (written and read back, so it is exactly what a saved model loads)."""
    from transformers import CLIPTokenizer

    src = folder / f"_tokenizer_src_{abs(hash(pad)) % 1000}"
    vocab_size = write_tokenizer_files(src, pad=pad)
    tokenizer = CLIPTokenizer.from_pretrained(str(src))
    shutil.rmtree(src)
    return tokenizer, vocab_size


def clip_text_encoder(seed: int, vocab_size: int, hidden: int, projection: bool) -> Any:
    """A two-layer CLIP text encoder; `projection` adds the pooled projection SDXL/SD3 need."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    return model.eval()  # type: ignore[no-untyped-call]  # mypy misreads diffusers/transformers


def vae(seed: int, latent_channels: int, **extra: Any) -> Any:
    """A four-level VAE (scale factor 8, like every real SD VAE); `extra` sets family-specific options."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(  # type: ignore[attr-defined]  # mypy misreads diffusers/transformers
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=1024,
        **extra,
    ).eval()
