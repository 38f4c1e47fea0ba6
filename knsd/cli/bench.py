"""`knsd bench`: capacity planning before deploying."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path

import typer

from knsd.cli.common import cli_errors


class FamilyChoice(StrEnum):
    sd1 = "sd1"
    sd2 = "sd2"
    sdxl = "sdxl"
    sd3 = "sd3"
    sd3_large = "sd3-large"


class _Progress:
    """One updating line on a terminal (stderr); nothing when stderr is not a TTY or output is JSON."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 20
        filled = width * done // max(total, 1)
        end = "\n" if phase == "done" else ""
        sys.stderr.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] {phase} {done}/{total}{end}")
        sys.stderr.flush()


def bench(
    model: str | None = typer.Option(
        None,
        "--model",
        help="A checkpoint (folder or single file) or tiny/tiny-sdxl/tiny-sd3; default: random weights.",
    ),
    family: FamilyChoice = typer.Option(
        FamilyChoice.sd1,
        "--family",
        help="Without --model: which full-size architecture to build (random weights).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option(
        "auto", "--dtype", help="auto (float16 on CUDA, float32 on CPU), float16, bfloat16, float32."
    ),
    quantize: str = typer.Option("none", "--quantize", help="none, int8 or fp8 (denoiser weights)."),
    width: int = typer.Option(512, "--width", min=64, max=2048, help="Image width."),
    height: int = typer.Option(512, "--height", min=64, max=2048, help="Image height."),
    steps: int = typer.Option(20, "--steps", min=1, max=150, help="Denoising steps per image."),
    runs: int = typer.Option(3, "-n", "--runs", min=1, max=1000, help="Measured generations."),
    warmup: int = typer.Option(1, "--warmup", min=0, max=100, help="Generations before measuring."),
    output: str = typer.Option("", "-o", "--output", help="'json' for a machine-readable report."),
    cold_start: bool = typer.Option(
        False,
        "--cold-start",
        help="Time `knsd serve` from spawn to ready against its floor (imports + reading the file), by phase; "
        "without --model, on the family's full-size single file (random weights, written once to the cache).",
    ),
    rounds: int = typer.Option(5, "--rounds", min=1, max=100, help="--cold-start: rounds (medians)."),
) -> None:
    """Time model load and image generation here: load time, s/image, steps/s and peak memory."""
    from knsd.cache import cache_dir

    with cli_errors("bench"):
        from knsd.errors import UsageError

        if output not in ("", "json"):
            raise UsageError("-o", f"must be json (or omitted), got {output!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise UsageError("--device", f"must be auto, cpu or cuda, got {device!r}")
        if dtype not in ("auto", "float16", "bfloat16", "float32"):
            raise UsageError("--dtype", f"must be auto, float16, bfloat16 or float32, got {dtype!r}")
        if cold_start:
            _cold_start(model, family.value, device, dtype, rounds, output, Path(cache_dir()))
            return
        from knsd.bench.run import BenchSpec, run_bench
        from knsd.simulate.benchreport import to_json, to_text

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        spec = BenchSpec(
            model,
            family.value,
            device,
            dtype,
            quantize,
            width,
            height,
            steps,
            runs,
            warmup,
            Path(cache_dir()),
        )
        result = run_bench(spec, _Progress(sys.stderr.isatty() and output != "json"))
        sys.stdout.write(to_json(result) + "\n" if output == "json" else to_text(result))


COLD_START_VARIANTS = {"sd1": "sd15", "sdxl": "sdxl-base", "sd3": "sd35-medium"}


def _cold_start(
    model: str | None, family: str, device: str, dtype: str, rounds: int, output: str, cache: Path
) -> None:
    from knsd.bench.checkpoint import bench_checkpoint
    from knsd.bench.coldstart import ColdStartSpec, ensure_checkpoint, run_cold_start, to_json, to_text
    from knsd.errors import UsageError
    from knsd.serve.models.source import single_file_of

    def progress(what: str) -> None:
        if sys.stderr.isatty() or output != "json":
            sys.stderr.write(f"knsd bench --cold-start: {what}\n")
            sys.stderr.flush()

    if model is None:
        if family not in COLD_START_VARIANTS:
            raise UsageError(
                "--family", f"--cold-start builds {', '.join(COLD_START_VARIANTS)}, got {family!r}"
            )
        variant = COLD_START_VARIANTS[family]
        path = ensure_checkpoint(bench_checkpoint(cache, variant), variant, cache, progress)
    else:
        found = single_file_of(model)
        if found is None or found.suffix.lower() != ".safetensors":
            raise UsageError("--model", f"--cold-start needs a .safetensors single file, got {model!r}")
        path = found
    result = run_cold_start(ColdStartSpec(path, rounds, cache, device, dtype), progress)
    sys.stdout.write(to_json(result) + "\n" if output == "json" else to_text(result))
