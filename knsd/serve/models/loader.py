"""Loading a Stable Diffusion checkpoint: the tiny model, a diffusers folder or a single file.

All go through `load_model`: the tiny model is first built into the cache as a diffusers folder and then
loaded exactly like a real one. A `.safetensors` single file takes the fast path: its tensors come from
`prefetch` (mapped, in the served dtype, started before torch was imported), the modules are built around
them (`singlefile`), and the converted weights are kept for later starts (`converted`, `background`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knsd.errors import ModelError
from knsd.serve.api.infotext import ModelInfo
from knsd.serve.models.background import AfterReady, PendingConversion
from knsd.serve.models.families import SD1, Family
from knsd.serve.models.families.detect import T5_KEY, Detected, detect, read_shapes
from knsd.serve.models.hashes import known_sha256
from knsd.serve.models.prefetch import Prefetch, Prepared
from knsd.serve.models.source import SINGLE_FILE_SUFFIXES, ModelSource, resolve_source
from knsd.serve.settings import Device, DType
from knsd.serve.timeline import Timeline

__all__ = ["SINGLE_FILE_SUFFIXES", "LoadedModel", "ModelSource", "load_model", "resolve_source"]
log = logging.getLogger("knsd.serve")
CONVERTED_MAX_BYTES = 32 << 30


@dataclass(slots=True)
class LoadedModel:
    """The loaded pipelines (sharing their modules) and what A1111 reports about them."""

    txt2img: Any
    img2img: Any
    name: str
    source: ModelSource
    device: str
    dtype: str
    load_seconds: float
    family: Family = SD1
    quantize: str = "none"
    # A1111's sha256 of the checkpoint file (a folder: its denoiser weights), once known (see `after_ready`).
    after_ready: AfterReady | None = None
    loaded_from: str = "folder"  # "converted", "original" (a single file) or "folder"
    timeline: Timeline = field(default_factory=Timeline)
    # The checkpoint's own scheduler config, as loaded: every pass builds its scheduler from it, never from
    # the pipeline's current scheduler, which the last pass replaced (its Karras/exponential flags with it).
    scheduler_config: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler_config = dict(self.txt2img.scheduler.config)

    @property
    def sha256(self) -> str | None:
        """The checkpoint's sha256 when known (cached, or hashed in the background after start-up)."""
        return self.after_ready.sha256 if self.after_ready is not None else None

    @property
    def info(self) -> ModelInfo:
        """Name and A1111's short hash (10 hex of the sha256; None until the hash is known)."""
        sha = self.sha256
        return ModelInfo(name=self.name, hash=sha[:10] if sha else None)

    @property
    def title(self) -> str:
        """A1111's checkpoint title: file name (with extension) and the 10-hex short hash, when known."""
        name = self.source.path.name if self.source.kind == "single_file" else self.name
        short = self.info.hash
        return f"{name} [{short}]" if short else name

    def wait_hash(self, timeout: float | None = None) -> str | None:
        """Start the background work now if it has not started, wait for it, return the sha256."""
        if self.after_ready is not None:
            self.after_ready.wait(timeout)
        return self.sha256

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


def _import_classes(config: Path) -> None:
    """Import the pipeline's and its components' classes (the heavy imports, timed on their own)."""
    import json

    import diffusers
    import transformers

    index = json.loads((config / "model_index.json").read_text())
    getattr(diffusers, index["_class_name"])
    for value in index.values():
        if isinstance(value, list) and len(value) == 2 and value[0] in ("diffusers", "transformers"):
            getattr(diffusers if value[0] == "diffusers" else transformers, value[1])


def _single_file(
    source: ModelSource,
    prepared: Prepared | None,
    cache: Path,
    config: Path | None,
    dtype: Any,
    timeline: Timeline,
) -> tuple[Any, Family, str, PendingConversion | None]:
    """A single file's pipeline, its family, where it came from and the conversion to keep (if any)."""
    from knsd.serve.models import singlefile
    from knsd.serve.models.families import pipelines

    if prepared is not None and prepared.detected is not None:
        detected = prepared.detected
        config = config if config is not None else pipelines.config_for(detected, cache)
    elif config is not None:
        detected = Detected(
            pipelines.folder_family(config), "custom", has_t5=T5_KEY in read_shapes(source.path)
        )
    else:
        detected = detect(source.path, read_shapes(source.path))
        config = pipelines.config_for(detected, cache)
    log.info("%s: %s (%s), config %s", source.path.name, detected.family.label, detected.variant, config)
    with timeline.phase("imports"):
        _import_classes(config)
    if prepared is not None and prepared.kind == "converted":
        try:
            with timeline.phase("build"):
                pipe = singlefile.from_converted(config, detected, prepared.tensors)
            return pipe, detected.family, "converted", None
        except (ModelError, RuntimeError, KeyError, ValueError) as exc:
            log.warning(
                "converted weights %s unusable (%s): converting the original again", prepared.identity, exc
            )
            with timeline.phase("convert"):
                prepared.tensors = _cast(prepared, dtype)
    if prepared is not None:
        with timeline.phase("build"):
            pipe = singlefile.from_original(config, detected, prepared.tensors, dtype)
        pending = None
        if prepared.identity is not None:
            meta = {"knsd.source": str(source.path), "knsd.variant": detected.variant}
            pending = PendingConversion(prepared.identity, singlefile.converted_state(pipe), meta)
        return pipe, detected.family, "original", pending
    with timeline.phase("build"):  # a .ckpt: diffusers reads it (weights only, never unpickling code)
        pipe = pipelines.load_single_file(source.path, detected, config, dtype)
    return pipe, detected.family, "original", None


def _cast(prepared: Prepared, dtype: Any) -> dict[str, Any]:
    from knsd.serve.models.singlefile import wanted_names

    return dict(prepared.source.cast(wanted_names(prepared.source.entries), dtype))


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


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging

    # knsd disables the safety checker on purpose (a serving shim, like A1111); keep its warning out of logs.
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()  # per-component loading bars would flood pod logs
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # mypy misreads diffusers/transformers


def load_model(
    model: str,
    cache: Path,
    device: Device = "auto",
    dtype: DType = "auto",
    config: Path | None = None,
    compile_unet: bool = False,
    quantize: str = "none",
    *,
    prefetch: Prefetch | None = None,
    converted_max_bytes: int = CONVERTED_MAX_BYTES,
) -> LoadedModel:
    """Load a pipeline of any supported family on the chosen device; no network access is ever made.

    `prefetch` is the head start `knsd serve` began before importing torch (one is made here otherwise);
    `converted_max_bytes` bounds the converted files kept in the cache (0: none kept, none used).
    """
    timeline = prefetch.timeline if prefetch is not None else Timeline()
    started = time.perf_counter()
    source = resolve_source(model, cache)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    from knsd.serve.models.families import pipelines
    from knsd.serve.models.quantize import check_quantize

    check_quantize(quantize, target)
    with timeline.phase("imports"):
        _quiet_libraries()
    prepared = None
    if source.kind == "single_file" and source.path.suffix.lower() == ".safetensors":
        if prefetch is None:
            prefetch = Prefetch(model, cache, target, dtype, config, converted_max_bytes > 0, timeline)
        prepared = prefetch.result()
        if prepared is not None and (prepared.path != source.path or prepared.dtype != str(torch_dtype)[6:]):
            prepared = None  # prepared for another device or dtype than torch reports: read again
    try:
        if source.kind == "folder":
            family = pipelines.folder_family(source.path)
            with timeline.phase("imports"):
                _import_classes(source.path)
            with timeline.phase("build"):
                pipe = pipelines.load_folder(source.path, family, torch_dtype)
            loaded_from, pending = "folder", None
        else:
            pipe, family, loaded_from, pending = _single_file(
                source, prepared, cache, config, torch_dtype, timeline
            )
    except Exception as exc:  # diffusers raises many kinds (OSError, ValueError, SingleFileComponentError)
        raise pipelines.describe_failure(source.path, exc, config is not None) from exc
    with timeline.phase("to device"):
        pipe, img2img = prepare_pipeline(pipe, family, target, quantize, compile_unet)
    hash_path = _denoiser_weights(source, family)
    sha = known_sha256(hash_path, cache)
    if sha is None and prepared is not None and loaded_from == "converted":
        sha = prepared.sha256  # recorded in the converted file, whose identity matched the source's
    seconds = time.perf_counter() - started
    log.info("loaded %s (%s, %s) on %s/%s in %.2fs", source.name, source.path, loaded_from, target,
             str(torch_dtype)[6:], seconds)  # fmt: skip
    return LoadedModel(
        txt2img=pipe,
        img2img=img2img,
        name=source.name,
        source=source,
        device=target,
        dtype=str(torch_dtype).removeprefix("torch."),
        load_seconds=seconds,
        family=family,
        quantize=quantize,
        after_ready=AfterReady(hash_path, cache, sha, pending, converted_max_bytes),
        loaded_from=loaded_from,
        timeline=timeline,
    )
