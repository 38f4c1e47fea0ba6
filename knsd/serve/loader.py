"""Loading a Stable Diffusion checkpoint: the tiny model, a diffusers folder or a single file.

All three go through `load_model`: the tiny model is first built into the cache as a diffusers folder
and then loaded exactly like a real one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.errors import ModelError
from knsd.serve.infotext import ModelInfo
from knsd.serve.settings import Device, DType
from knsd.serve.tiny import ensure_tiny_model

log = logging.getLogger("knsd.serve")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model comes from: `kind` is "folder" or "single_file"."""

    kind: str
    path: Path
    name: str


@dataclass(slots=True)
class LoadedModel:
    """The loaded pipelines (sharing their modules) and what A1111 reports about them."""

    txt2img: Any
    img2img: Any
    info: ModelInfo
    source: ModelSource
    device: str
    dtype: str
    load_seconds: float


def resolve_source(model: str, cache: Path) -> ModelSource:
    """Turn `--model tiny|PATH` into a source; a missing or unrecognised path is a ModelError."""
    if model == "tiny":
        return ModelSource("folder", ensure_tiny_model(cache), "tiny-sd")
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return ModelSource("folder", path, path.name)
        # A model volume holding one checkpoint file (e.g. /models/v1-5-pruned-emaonly.safetensors).
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SINGLE_FILE_SUFFIXES)
        if len(files) == 1:
            return ModelSource("single_file", files[0], files[0].stem)
        found = ", ".join(p.name for p in files) or "none"
        raise ModelError(
            f"{path} has no model_index.json and not exactly one .safetensors/.ckpt file (found: {found}); "
            "pass --model with the folder of a diffusers model or the checkpoint file itself"
        )
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelError(f"{path}: a single-file checkpoint must end in .safetensors or .ckpt")
        return ModelSource("single_file", path, path.stem)
    raise ModelError(f"model {model!r} not found: expected 'tiny', a diffusers folder or a .safetensors file")


def resolve_device(device: Device) -> str:
    """`auto` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but torch sees no CUDA device")
    return device


def resolve_dtype(dtype: DType, device: str) -> Any:
    """`auto` is float16 on CUDA and float32 on CPU."""
    import torch

    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    return getattr(torch, dtype)


def model_hash(source: ModelSource) -> str:
    """A1111's short (legacy) model hash: sha256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    if source.kind == "single_file":
        weights = source.path
    else:
        candidates = sorted((source.path / "unet").glob("*.safetensors")) or sorted(
            (source.path / "unet").glob("*.bin")
        )
        weights = candidates[0] if candidates else source.path / "model_index.json"
    digest = hashlib.sha256()
    with open(weights, "rb") as fh:
        fh.seek(0x100000)
        chunk = fh.read(0x10000)
        if not chunk:
            fh.seek(0)
            chunk = fh.read(0x10000)
        digest.update(chunk)
    return digest.hexdigest()[:8]


def load_model(
    model: str,
    cache: Path,
    device: Device = "auto",
    dtype: DType = "auto",
    config: Path | None = None,
    compile_unet: bool = False,
) -> LoadedModel:
    """Load a pipeline on the chosen device; no network access is ever made."""
    started = time.perf_counter()
    source = resolve_source(model, cache)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    # knsd disables the safety checker on purpose (a serving shim, like A1111); keep its warning out of logs.
    diffusers_logging.set_verbosity_error()

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True, "safety_checker": None}
    try:
        if source.kind == "folder":
            pipe = StableDiffusionPipeline.from_pretrained(str(source.path), **kwargs)
        else:
            if config is not None:
                kwargs["config"] = str(config)
            pipe = StableDiffusionPipeline.from_single_file(str(source.path), **kwargs)
    except (
        Exception
    ) as exc:  # diffusers raises many kinds (OSError, ValueError, SingleFileComponentError, ...)
        hint = ""
        if source.kind == "single_file" and config is None:
            hint = (
                " (a single-file checkpoint needs its pipeline config: pass --model-config with a diffusers "
                "folder of the same architecture, or have it in the Hugging Face cache)"
            )
        raise ModelError(f"could not load {source.path}: {exc}{hint}") from exc
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(target)
    if target == "cuda":
        import torch

        # SDPA is diffusers' default attention processor on torch 2; channels-last speeds up the convs.
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        import torch

        pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]  # mypy misreads diffusers' bases
    seconds = time.perf_counter() - started
    log.info("loaded %s (%s) on %s/%s in %.2fs", source.name, source.path, target, torch_dtype, seconds)
    return LoadedModel(
        txt2img=pipe,
        img2img=img2img,
        info=ModelInfo(name=source.name, hash=model_hash(source)),
        source=source,
        device=target,
        dtype=str(torch_dtype).removeprefix("torch."),
        load_seconds=seconds,
    )
