"""Benchmark of model loading and quantization, ratios measured side by side.

  (1) cold start on the production path: a fresh process loading the full-size SD 1.5 single file (random
      weights, fp16, original layout, on local disk, no --model-config, offline) / its floor, a fresh process
      doing `import torch, diffusers` plus reading the file's bytes. Goal <= 1.5. Both read the file from the
      page cache (it is read once before); the load includes knsd's family detection, config build and the
      A1111 sha256 of the file (on a second thread). Measured as stored (float16, what a GPU pod loads) and
      cast to float32 (knsd's CPU default).
  (2) --quantize int8 on each tiny model: peak RSS and s/image (knsd bench, fresh processes) and the
      denoiser's weight bytes, each as int8 / unquantized, and the PSNR of the int8 image against the
      unquantized one (same seed).
`--quick` skips (1) (it writes a 2.1 GB file and needs ~6 GB of memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.full_size import write_random_checkpoint  # noqa: E402

FLOOR = """
import sys, time
t0 = time.perf_counter()
import torch, diffusers
from diffusers import StableDiffusionPipeline
with open(sys.argv[1], "rb") as fh:
    while fh.read(1 << 24):
        pass
print(time.perf_counter() - t0)
"""
LOAD = """
import sys, time
from pathlib import Path
t0 = time.perf_counter()
from knsd.serve.models.loader import load_model
model = load_model(sys.argv[1], Path(sys.argv[2]), device="cpu", dtype=sys.argv[3])
print(time.perf_counter() - t0)
"""


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "KNSD_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _seconds(code: str, *args: str, cache: Path) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], env=_env(cache), capture_output=True, text=True,
                         check=True, timeout=1800)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def cold_start(workdir: Path, rounds: int) -> None:
    path = workdir / "v1-5-pruned-emaonly.safetensors"
    started = time.perf_counter()
    write_random_checkpoint("sd15", path, workdir / "build-cache")
    print(f"wrote {path.name}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s")
    with open(path, "rb") as fh:  # into the page cache, for both sides
        while fh.read(1 << 24):
            pass
    floors: list[float] = []
    loads: dict[str, list[float]] = {"float16": [], "float32": []}
    for i in range(
        rounds
    ):  # interleaved: floor, load fp16, load fp32, ...; a fresh cache each (sha256 included)
        floors.append(_seconds(FLOOR, str(path), cache=workdir / "c"))
        for dtype, times in loads.items():
            cache = workdir / f"cache-{dtype}-{i}"
            times.append(_seconds(LOAD, str(path), str(cache), dtype, cache=cache))
    floor = min(floors)
    print(f"(1) cold start, full-size SD 1.5 single file, floor {floor:.2f} s (import + read "
          f"{path.stat().st_size / 1e9:.2f} GB):")  # fmt: skip
    for dtype, times in loads.items():
        note = "as stored, the GPU path" if dtype == "float16" else "cast for CPU serving"
        print(
            f"    load {dtype} ({note}): {min(times):.2f} s / floor = {min(times) / floor:.2f} (goal <= 1.5)"
        )


def _bench(model: str, quantize: str, cache: Path, runs: int) -> dict[str, float]:
    args = ["bench", "--model", model, "--width", "64", "--height", "64", "--steps", "8", "-n", str(runs),
            "--quantize", quantize, "-o", "json"]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "knsd", *args], env=_env(cache), capture_output=True, text=True,
                         check=True, timeout=1800)  # fmt: skip
    return dict(json.loads(out.stdout))


def _psnr_and_weights(model: str, cache: Path) -> tuple[float, float]:
    import numpy as np

    from knsd.serve.api.request import parse_txt2img
    from knsd.serve.generate.engine import Engine
    from knsd.serve.models.loader import load_model

    req = parse_txt2img({"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 8, "seed": 3}, 1 << 30)
    images, sizes = [], []
    for quantize in ("none", "int8"):
        loaded = load_model(model, cache, device="cpu", quantize=quantize)
        images.append(np.asarray(Engine(loaded).generate(req).images[0]).astype(np.float64))
        sizes.append(sum(_nbytes(t) for t in loaded.denoiser.state_dict().values()))
    mse = float(((images[0] - images[1]) ** 2).mean())
    return (float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)), sizes[1] / sizes[0]


def _nbytes(tensor: object) -> int:
    """Bytes a (possibly torchao-quantized) tensor holds: the sum of its inner tensors."""
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is not None:
        names, _ = inner()
        return sum(_nbytes(getattr(tensor, n)) for n in names)
    return int(tensor.numel() * tensor.element_size())  # type: ignore[attr-defined]


def quantization(cache: Path, runs: int) -> None:
    print("(2) --quantize int8 / none on the tiny models (64x64, 8 steps, CPU):")
    for model in ("tiny", "tiny-sdxl", "tiny-sd3"):
        base, q = _bench(model, "none", cache, runs), _bench(model, "int8", cache, runs)
        psnr, weights = _psnr_and_weights(model, cache)
        print(f"    {model:10s} peak RSS {q['peak_memory_bytes'] / base['peak_memory_bytes']:.2f}, "
              f"denoiser weights {weights:.2f}, latency {q['seconds_per_image'] / base['seconds_per_image']:.2f}, "
              f"PSNR {psnr:.1f} dB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the full-size cold start")
    parser.add_argument("--cold-only", action="store_true", help="only the full-size cold start")
    parser.add_argument("--rounds", type=int, default=2, help="cold-start rounds (the best of each side)")
    parser.add_argument("--runs", type=int, default=3, help="measured generations per bench")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="knsd-bench-families-") as tmp:
        work = Path(tmp)
        if not args.quick:
            cold_start(work, args.rounds)
        if not args.cold_only:
            quantization(work / "tiny-cache", args.runs)


if __name__ == "__main__":
    main()
