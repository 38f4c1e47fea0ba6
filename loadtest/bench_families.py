"""Benchmark of quantization on each tiny model, ratios measured side by side.

--quantize int8 on each tiny model: peak RSS and s/image (knsd bench, fresh processes) and the denoiser's
weight bytes, each as int8 / unquantized, and the PSNR of the int8 image against the unquantized one
(same seed). The cold start of a full-size single file is `knsd bench --cold-start` (make bench runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "KNSD_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _seconds(code: str, *args: str, cache: Path) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], env=_env(cache), capture_output=True, text=True,
                         check=True, timeout=1800)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--runs", type=int, default=3, help="measured generations per bench")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="knsd-bench-families-") as tmp:
        quantization(Path(tmp) / "tiny-cache", args.runs)


if __name__ == "__main__":
    main()
