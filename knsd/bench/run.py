"""Running `knsd bench`: load (or build) a model, warm up, time N generations, read peak memory."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.bench.random_model import FULL_SIZE, random_pipeline
from knsd.errors import UsageError
from knsd.simulate.benchreport import BenchResult


@dataclass(frozen=True, slots=True)
class BenchSpec:
    """What to measure."""

    model: str | None  # None: the family's full-size architecture with random weights
    family: str
    device: str
    dtype: str
    quantize: str
    width: int
    height: int
    steps: int
    runs: int
    warmup: int
    cache: Path


def _random_model(spec: BenchSpec, target: str, torch_dtype: Any) -> Any:
    from diffusers.utils import logging as diffusers_logging

    from knsd.serve.models.families.pipelines import folder_family
    from knsd.serve.models.families.standard import config_dir
    from knsd.serve.models.loader import LoadedModel, ModelSource, prepare_pipeline

    diffusers_logging.set_verbosity_error()  # as `load_model` does: no safety-checker notice, no load bars
    diffusers_logging.disable_progress_bar()
    variant = FULL_SIZE[spec.family]
    started = time.perf_counter()
    pipe = random_pipeline(variant, spec.cache, torch_dtype)
    family = folder_family(config_dir(variant, spec.cache))
    pipe, img2img = prepare_pipeline(pipe, family, target, spec.quantize)
    source = ModelSource("folder", config_dir(variant, spec.cache), f"{variant} (random weights)")
    return LoadedModel(pipe, img2img, source.name, source, target,
                       str(torch_dtype).removeprefix("torch."), time.perf_counter() - started, family)  # fmt: skip


def _peak_memory(device: str) -> tuple[int, str]:
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated()), "cuda max allocated"
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss if sys.platform == "darwin" else rss * 1024), "process max RSS"


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name())
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


def run_bench(spec: BenchSpec, progress: Callable[[str, int, int], None] | None = None) -> BenchResult:
    """Load, warm up and time `spec.runs` txt2img generations through knsd's own engine."""
    from knsd.serve.api.request import parse_txt2img
    from knsd.serve.generate.engine import Engine
    from knsd.serve.models.loader import load_model, resolve_device, resolve_dtype
    from knsd.serve.models.quantize import check_quantize

    target = resolve_device(spec.device)  # type: ignore[arg-type]
    check_quantize(spec.quantize, target)
    if spec.family not in FULL_SIZE:
        raise UsageError("--family", f"must be one of {', '.join(FULL_SIZE)}, got {spec.family!r}")
    if progress:
        progress("loading", 0, 1)
    if spec.model is None:
        model = _random_model(spec, target, resolve_dtype(spec.dtype, target))  # type: ignore[arg-type]
    else:
        model = load_model(spec.model, spec.cache, target, spec.dtype, quantize=spec.quantize)  # type: ignore[arg-type]
    if target == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    engine = Engine(model)
    body = {"prompt": "a lighthouse on a cliff at dusk", "width": spec.width, "height": spec.height,
            "steps": spec.steps, "seed": 1, "cfg_scale": 7.0}  # fmt: skip
    request = parse_txt2img(body, spec.width * spec.height)
    timings: list[float] = []
    total = spec.warmup + spec.runs
    for i in range(total):
        if progress:
            progress("warm-up" if i < spec.warmup else "measuring", i, total)
        started = time.perf_counter()
        engine.generate(request, job="bench")
        if target == "cuda":
            import torch

            torch.cuda.synchronize()
        if i >= spec.warmup:
            timings.append(time.perf_counter() - started)
    if progress:
        progress("done", total, total)
    peak, kind = _peak_memory(target)
    return BenchResult(
        model=spec.model or model.source.name,
        family=model.family.name,
        device=target,
        device_name=_device_name(target),
        dtype=model.dtype,
        quantize=spec.quantize,
        width=spec.width,
        height=spec.height,
        steps=spec.steps,
        load_seconds=model.load_seconds,
        image_seconds=tuple(timings),
        peak_memory_bytes=peak,
        memory_kind=kind,
    )
