"""Loading a Stable Diffusion checkpoint: the tiny model, a diffusers folder or a single file.

All three go through `load_model`: the tiny model is first built into the cache as a diffusers folder
and then loaded exactly like a real one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.errors import ModelError
from knsd.serve.api.infotext import ModelInfo
from knsd.serve.models.families import SD1, Family
from knsd.serve.models.families.detect import T5_KEY, Detected, detect, read_shapes
from knsd.serve.models.hashes import file_sha256
from knsd.serve.models.tiny import TINY_NAMES, ensure_tiny_model
from knsd.serve.settings import Device, DType

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
    family: Family = SD1
    sha256: str | None = None  # of the checkpoint file (a folder: its denoiser weights)
    quantize: str = "none"

    @property
    def title(self) -> str:
        """A1111's checkpoint title: file name (with extension) and the 10-hex short hash of its sha256."""
        name = self.source.path.name if self.source.kind == "single_file" else self.info.name
        return f"{name} [{self.info.hash}]"

    @property
    def components(self) -> dict[str, Any]:
        """The pipeline's modules by name, to build other pipelines (e.g. ControlNet) over them."""
        return dict(self.txt2img.components)

    @property
    def tokenizers(self) -> list[Any]:
        """The family's tokenizers in pipeline order (tokenizer, tokenizer_2, tokenizer_3); absent ones dropped."""
        found = (getattr(self.txt2img, name, None) for name in self.family.tokenizer_names)
        return [t for t in found if t is not None]

    @property
    def text_encoders(self) -> list[Any]:
        """The family's text encoders in pipeline order; SD 3.5 without T5 has two."""
        found = (getattr(self.txt2img, name, None) for name in self.family.text_encoder_names)
        return [t for t in found if t is not None]

    @property
    def denoiser(self) -> Any:
        """The UNet (SD 1.x/2.x/SDXL) or the MMDiT transformer (SD 3.x)."""
        return getattr(self.txt2img, self.family.denoiser)


def resolve_source(model: str, cache: Path) -> ModelSource:
    """Turn `--model tiny|tiny-sdxl|tiny-sd3|PATH` into a source; a missing or unrecognised path is a ModelError."""
    if model in TINY_NAMES:
        return ModelSource("folder", ensure_tiny_model(cache, model), "tiny-sd" if model == "tiny" else model)
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
    raise ModelError(
        f"model {model!r} not found: expected {', '.join(TINY_NAMES)}, a diffusers folder or a .safetensors file"
    )


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


def _denoiser_weights(source: ModelSource, family: Family) -> Path:
    """The file A1111-style hashes are taken of: the checkpoint, or a folder's denoiser weights."""
    if source.kind == "single_file":
        return source.path
    folder = source.path / family.denoiser
    candidates = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return candidates[0] if candidates else source.path / "model_index.json"


def _load_pipeline(source: ModelSource, cache: Path, config: Path | None, dtype: Any) -> tuple[Any, Family]:
    from knsd.serve.models.families import pipelines

    if source.kind == "folder":
        family = pipelines.folder_family(source.path)
        return pipelines.load_folder(source.path, family, dtype), family
    shapes = read_shapes(source.path)
    if config is not None:  # --model-config overrides detection
        family = pipelines.folder_family(config)
        detected = Detected(family, "custom", has_t5=T5_KEY in shapes)
    else:
        detected = detect(source.path, shapes)
        config = pipelines.config_for(detected, cache)
    log.info("%s: %s (%s), config %s", source.path.name, detected.family.label, detected.variant, config)
    return pipelines.load_single_file(source.path, detected, config, dtype), detected.family


def prepare_pipeline(
    pipe: Any, family: Family, target: str, quantize: str = "none", compile_unet: bool = False
) -> tuple[Any, Any]:
    """Move a loaded pipeline to its device, quantize and compile it; returns it and its img2img twin."""
    from knsd.serve.models.families import pipelines
    from knsd.serve.models.quantize import quantize_pipeline

    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(target)
    quantize_pipeline(pipe, family, quantize)  # on the device: fp8 kernels exist only on CUDA
    denoiser = getattr(pipe, family.denoiser)
    if target == "cuda":
        import torch

        # SDPA is diffusers' default attention processor on torch 2; channels-last speeds up the convs.
        denoiser.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        import torch

        setattr(pipe, family.denoiser, torch.compile(denoiser, mode="reduce-overhead", fullgraph=True))
    img2img = pipelines.img2img_pipeline(family, pipe)
    img2img.set_progress_bar_config(disable=True)
    return pipe, img2img


def load_model(
    model: str,
    cache: Path,
    device: Device = "auto",
    dtype: DType = "auto",
    config: Path | None = None,
    compile_unet: bool = False,
    quantize: str = "none",
) -> LoadedModel:
    """Load a pipeline of any supported family on the chosen device; no network access is ever made."""
    started = time.perf_counter()
    source = resolve_source(model, cache)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    from knsd.serve.models.families import pipelines
    from knsd.serve.models.quantize import check_quantize

    check_quantize(quantize, target)
    from diffusers.utils import logging as diffusers_logging

    # knsd disables the safety checker on purpose (a serving shim, like A1111); keep its warning out of logs.
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()  # per-component loading bars would flood pod logs
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # mypy misreads diffusers/transformers
    # A1111 hashes the whole file; do it on a second thread while the weights load (hashlib frees the GIL).
    hasher = ThreadPoolExecutor(1, "knsd-hash")
    try:
        sha256 = hasher.submit(file_sha256, source.path, cache) if source.kind == "single_file" else None
        try:
            pipe, family = _load_pipeline(source, cache, config, torch_dtype)
        except (
            Exception
        ) as exc:  # diffusers raises many kinds (OSError, ValueError, SingleFileComponentError)
            raise pipelines.describe_failure(source.path, exc, config is not None) from exc
        if sha256 is None:
            sha256 = hasher.submit(file_sha256, _denoiser_weights(source, family), cache)
        pipe, img2img = prepare_pipeline(pipe, family, target, quantize, compile_unet)
        digest = sha256.result()
    finally:
        hasher.shutdown(wait=False)
    seconds = time.perf_counter() - started
    log.info("loaded %s (%s) on %s/%s in %.2fs", source.name, source.path, target, torch_dtype, seconds)
    return LoadedModel(
        txt2img=pipe,
        img2img=img2img,
        info=ModelInfo(name=source.name, hash=digest[:10]),
        source=source,
        device=target,
        dtype=str(torch_dtype).removeprefix("torch."),
        load_seconds=seconds,
        family=family,
        sha256=digest,
        quantize=quantize,
    )
