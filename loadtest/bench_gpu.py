"""`make bench-gpu`: the GPU figures in one prepared run (< 8 minutes on one H100/H200), printed as JSON.

On CUDA, through knsd's own loader, quantizer and engine (fp16, SDPA attention, channels-last):
  - generation: SD 1.5 at 512x512, 50 steps, and SDXL at 1024x1024, 30 steps (random weights, full size),
    each as fp16 eager, fp16 with --compile (torch.compile of the denoiser, mode reduce-overhead), and the
    denoiser quantized int8 (weight-only) and fp8 (dynamic, compute capability >= 8.9); seconds per image
    (median of --runs after one warm-up, whose time is the compile time where compiling), steps/s, peak
    memory;
  - cold start to the first image: `knsd serve --model FILE` on the full-size SD 1.5 single file (random
    weights, original layout, fp16, local disk): spawn -> /readyz 200 -> the first 512x512 50-step image,
    a first start (converts) and a later start (converted weights kept), their phases, and the floor
    (a process importing torch and the pipeline's classes and reading the file), whole processes timed
    from spawn; then the same with --compile, first (compiles) and again (Inductor's cache, kept in the
    knsd cache, is reused).
Items run most important first; one that would overrun --budget seconds is skipped and says so.
Without CUDA (or with --dry-run) the same code runs on the CPU on the tiny models at 64x64, 2 steps
(fp8 is skipped: it needs CUDA), so the script is checked where no GPU is at hand.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FULL = {"sd15": ("sd1", 512, 50), "sdxl": ("sdxl", 1024, 30)}
DRY = {"sd15": ("tiny", 64, 2), "sdxl": ("tiny-sdxl", 64, 2)}
VARIANTS = (
    ("fp16", "none", False),
    ("fp16+compile", "none", True),
    ("int8", "int8", False),
    ("fp8", "fp8", False),
)


class Budget:
    """Runs items while time is left; an item expected to overrun is recorded as skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def run(self, out: dict[str, Any], key: str, expected: float, fn: Callable[[], Any]) -> None:
        left = self.deadline - time.monotonic()
        if left < expected:
            out[key] = {"skipped": f"time budget: {left:.0f} s left, ~{expected:.0f} s needed"}
            return
        started = time.monotonic()
        try:
            out[key] = fn()
        except Exception as exc:  # one item failing must not lose the others' figures
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
        progress(f"{key}: {time.monotonic() - started:.0f} s")


def progress(message: str) -> None:
    print(f"bench-gpu: {message}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _peak(device: str) -> int:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def base_model(name: str, device: str, cache: Path, dry: bool) -> Any:
    """The full-size architecture with random weights (GPU) or a tiny model (dry run), prepared on `device`."""
    import torch

    from knsd.bench.random_model import FULL_SIZE
    from knsd.bench.run import BenchSpec, _random_model
    from knsd.serve.models.loader import load_model

    if dry:
        return load_model(DRY[name][0], cache, device=device)  # type: ignore[arg-type]
    family = FULL[name][0]
    spec = BenchSpec(None, family, device, "float16", "none", 64, 64, 1, 1, 0, cache)
    assert family in FULL_SIZE
    return _random_model(spec, device, torch.float16)


def generation(model: Any, quantize: str, compiled: bool, size: int, steps: int, runs: int) -> dict[str, Any]:
    """Seconds per image of one variant: the denoiser copied, quantized and/or compiled, then swapped in."""
    import torch

    from knsd.serve.api.request import parse_txt2img
    from knsd.serve.generate.engine import Engine
    from knsd.serve.models.quantize import check_quantize, quantize_pipeline

    check_quantize(quantize, model.device)
    pipe, family = model.txt2img, model.family
    original = getattr(pipe, family.denoiser)
    denoiser = copy.deepcopy(original) if quantize != "none" else original
    try:
        setattr(pipe, family.denoiser, denoiser)
        quantize_pipeline(pipe, family, quantize)
        if compiled:
            setattr(
                pipe,
                family.denoiser,
                torch.compile(getattr(pipe, family.denoiser), mode="reduce-overhead", fullgraph=True),
            )
        engine = Engine(model)
        request = parse_txt2img({"prompt": "a lighthouse at dusk", "width": size, "height": size, "steps": steps,
                                 "seed": 1}, size * size)  # fmt: skip
        if model.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        engine.generate(request, job="bench")
        _sync(model.device)
        first = time.perf_counter() - started
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            engine.generate(request, job="bench")
            _sync(model.device)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        return {"dtype": model.dtype, "seconds_per_image": median, "steps_per_second": steps / median, "image_seconds": times,
                "first_image_seconds": first, "peak_memory_bytes": _peak(model.device)}  # fmt: skip
    finally:
        setattr(pipe, family.denoiser, original)
        del denoiser


def first_image(url: str, size: int, steps: int) -> float:
    import httpx

    body = {"prompt": "a lighthouse at dusk", "width": size, "height": size, "steps": steps, "seed": 1}
    started = time.perf_counter()
    response = httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - started


def cold_start(path: Path, cache: Path, device: str, size: int, steps: int, compiled: bool) -> dict[str, Any]:
    """Floor, first start and later start of `knsd serve` on the file, each to its first image."""
    from knsd.bench.coldstart import ColdStartSpec, _floor, _kept_files, pipeline_classes, serve_once

    spec = ColdStartSpec(path, 1, cache, device, "auto", timeout=600)
    out: dict[str, Any] = {"floor_seconds": _floor(spec, pipeline_classes(path, cache))}
    extra = ["--compile"] if compiled else []
    for kind in ("first", "later"):
        image: list[float] = []
        before = set(_kept_files(spec))

        def after(url: str, kind: str = kind, before: set[Path] = before, image: list[float] = image) -> None:
            image.append(first_image(url, size, steps))
            deadline = time.monotonic() + 300
            while kind == "first" and not compiled and not set(_kept_files(spec)) - before:
                if time.monotonic() > deadline:  # the later start needs the converted weights kept
                    raise RuntimeError("the first start did not keep the converted weights")
                time.sleep(0.5)

        seconds, phases = serve_once(spec, extra, after)
        out[kind] = {"ready_seconds": seconds, "first_image_seconds": image[0], "to_first_image_seconds":
                     seconds + image[0], "phases": {n: {"seconds": v[0], "ended": v[1]} for n, v in phases.items()}}  # fmt: skip
    out["ready_ratio_later"] = out["later"]["ready_seconds"] / out["floor_seconds"]
    out["ready_ratio_first"] = out["first"]["ready_seconds"] / out["floor_seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, 64x64, 2 steps")
    parser.add_argument("--runs", type=int, default=3, help="measured images per variant")
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole run")
    args = parser.parse_args()
    from knsd.serve.thirdparty import quiet_third_party

    quiet_third_party()
    import torch

    dry = args.dry_run or not torch.cuda.is_available()
    device = "cpu" if dry else "cuda"
    budget = Budget(args.budget)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run: tiny models)",
        "torch": torch.__version__,
        "dry_run": dry,
        "method": "seconds per image: median of --runs after one warm-up image; cold start: whole processes "
        "from spawn (Popen) to /readyz 200, then the first image over HTTP",
    }
    from knsd.cache import cache_dir

    cache = Path(os.environ.get("KNSD_BENCH_CACHE", str(cache_dir())))
    with tempfile.TemporaryDirectory(prefix="knsd-bench-gpu-") as tmp:
        # 1. cold start to the first image, SD 1.5 single file
        size, steps = (64, 2) if dry else (512, 50)
        path = Path(tmp) / "volume" / "v1-5-pruned-emaonly.safetensors"
        cold: dict[str, Any] = {}
        report["cold_start_sd15"] = cold

        def write() -> dict[str, Any]:
            write_checkpoint(path, cache, dry)
            return {"bytes": path.stat().st_size}

        budget.run(cold, "file", 10 if dry else 90, write)
        if path.is_file():
            budget.run(
                cold,
                "eager",
                60 if dry else 90,
                lambda: cold_start(path, Path(tmp) / "c", device, size, steps, False),
            )
        # 2. generation per model and variant
        for name in ("sd15", "sdxl"):
            _, side, count = DRY[name] if dry else FULL[name]
            section: dict[str, Any] = {"size": side, "steps": count}
            report[f"generation_{name}"] = section
            holder: dict[str, Any] = {}
            budget.run(
                section, "build", 20 if dry else 60, lambda n=name, h=holder: _build(h, n, device, cache, dry)
            )
            if "model" not in holder:
                continue
            for label, quantize, compiled in VARIANTS:
                if quantize == "fp8" and device != "cuda":
                    section[label] = {"skipped": "fp8 needs CUDA compute capability >= 8.9"}
                    continue
                expected = (15 if dry else 120) if compiled else (5 if dry else 45)
                budget.run(section, label, expected, lambda q=quantize, c=compiled, s=side, k=count, h=holder:
                           generation(h["model"], q, c, s, k, args.runs))  # fmt: skip
            holder.clear()
            if device == "cuda":
                torch.cuda.empty_cache()
        # 3. cold start with --compile (CUDA: the first compiles, the second reuses Inductor's cache)
        if path.is_file() and not dry:
            budget.run(
                cold, "compile", 200, lambda: cold_start(path, Path(tmp) / "c", device, size, steps, True)
            )
    print(json.dumps(report, indent=2))


def _build(holder: dict[str, Any], name: str, device: str, cache: Path, dry: bool) -> dict[str, Any]:
    started = time.perf_counter()
    holder["model"] = base_model(name, device, cache, dry)
    return {"seconds": time.perf_counter() - started}


def write_checkpoint(path: Path, cache: Path, dry: bool) -> None:
    """The SD 1.5 single file: full size with random weights, or the tiny model (dry run)."""
    if not dry:
        from knsd.bench.checkpoint import write_random_checkpoint

        write_random_checkpoint("sd15", path, cache)
        return
    from safetensors.torch import save_file

    from knsd.bench.ldm import pipeline_to_ldm
    from knsd.serve.models.loader import load_model

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(pipeline_to_ldm(load_model("tiny", cache, device="cpu").txt2img), str(path))


if __name__ == "__main__":
    main()
