"""The embedded tiny model: real SD 1.x structure, deterministic build, loaded like a checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

from knsd.serve.tiny import build_tiny_model, ensure_tiny_model


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.safetensors"))
    }


def test_build_is_deterministic(tmp_path: Path, cache: Path) -> None:
    build_tiny_model(tmp_path / "again")
    reference = ensure_tiny_model(cache)
    assert _digest(tmp_path / "again") == _digest(reference)
    assert len(_digest(reference)) == 3  # unet, vae, text encoder


def test_structure_is_stable_diffusion_1(tiny_model) -> None:
    pipe = tiny_model.txt2img
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.vae_scale_factor == 8
    assert pipe.unet.config.in_channels == 4
    assert pipe.vae.config.latent_channels == 4
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.text_encoder.config.max_position_embeddings == 77
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert any("CrossAttn" in block for block in pipe.unet.config.down_block_types)
    ids = pipe.tokenizer("a pretty dog", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == pipe.tokenizer.bos_token_id


def test_ensure_reuses_the_cache(cache: Path) -> None:
    first = ensure_tiny_model(cache)
    stamp = (first / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_model(cache) == first
    assert (first / "model_index.json").stat().st_mtime_ns == stamp
