"""The embedded tiny model: real SD 1.x structure, deterministic build, loaded like a checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from knsd.serve.addons.files import Folders
from knsd.serve.addons.tiny import ensure_tiny_addons
from knsd.serve.models.tiny import ensure_tiny_model
from knsd.serve.models.tiny.sd1 import build as build_tiny_model


def _digest(folder: Path, only: set[str] | None = None) -> dict[str, str]:
    """sha256 of the safetensors files under `folder` (only under its top-level folders `only`, if given)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.safetensors"))
        if only is None or p.relative_to(folder).parts[0] in only
    }


def _components(folder: Path) -> set[str]:
    """The pipeline's component folders (model_index.json), not the add-on folders a server writes next to
    them (`Lora/`, `ControlNet/`, `embeddings/`: the tiny add-ons of `knsd serve --model tiny`)."""
    return {k for k in json.loads((folder / "model_index.json").read_text()) if not k.startswith("_")}


def test_build_is_deterministic(tmp_path: Path, cache: Path) -> None:
    build_tiny_model(tmp_path / "again")
    reference = ensure_tiny_model(cache)
    # The whole fresh build against the model files of the cached one (which may hold add-ons by now).
    assert _digest(tmp_path / "again") == _digest(reference, _components(reference))
    assert len(_digest(reference, _components(reference))) == 3  # unet, vae, text encoder


def _contents(folder: Path) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Metadata and per-tensor sha256 of each safetensors file: its bytes are not comparable, as safetensors
    writes the `__metadata__` entries in a random (hash map) order."""
    from safetensors import safe_open

    out: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            names = fh.keys()  # a safe_open handle is not iterable
            tensors = {k: hashlib.sha256(fh.get_tensor(k).numpy().tobytes()).hexdigest() for k in names}
            out[str(path.relative_to(folder))] = (fh.metadata() or {}, tensors)
    return out


def test_tiny_addons_are_deterministic(pristine_tiny_model: Any, tmp_path: Path) -> None:
    """The tiny add-ons (a separate build, from the loaded model) come out the same every time."""
    contents: list[dict[str, tuple[dict[str, str], dict[str, str]]]] = []
    for run in ("a", "b"):
        torch.manual_seed(len(contents))  # the global generator must not matter
        ensure_tiny_addons(Folders(*(tmp_path / run / k for k in ("Lora", "ControlNet", "embeddings"))),
                           pristine_tiny_model.txt2img)  # fmt: skip
        contents.append(_contents(tmp_path / run))
    assert contents[0] == contents[1]
    assert sorted(contents[0]) == [
        "ControlNet/tiny-canny.safetensors", "Lora/tiny-lora.safetensors", "embeddings/tiny-emb.safetensors"
    ]  # fmt: skip


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
