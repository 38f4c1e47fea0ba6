"""--quantize (torchao) on the tiny models, and `knsd bench` feeding `knsd simulate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knsd.errors import ModelError, UsageError
from knsd.serve.api.request import parse_txt2img
from knsd.serve.generate.engine import Engine
from knsd.serve.models.loader import load_model
from tests.helpers import knsd_env

REQUEST = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 3, "seed": 2}


def _pixels(model: Any) -> np.ndarray:
    return np.asarray(Engine(model).generate(parse_txt2img(REQUEST, 1 << 30)).images[0]).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images, in dB."""
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", ["tiny", "tiny-sd3"])
def test_int8_quantizes_the_denoiser_on_cpu(name: str, cache: Path) -> None:
    full = load_model(name, cache, device="cpu")
    q = load_model(name, cache, device="cpu", quantize="int8")
    linears = [m.weight for m in q.denoiser.modules() if type(m).__name__ == "Linear"]
    assert linears and all(type(w).__module__.startswith("torchao") for w in linears)
    if name == "tiny-sd3":  # SD 3.5's T5 is quantized too, the CLIP towers are not
        assert type(
            q.txt2img.text_encoder_3.encoder.block[0].layer[1].DenseReluDense.wo.weight
        ).__module__.startswith("torchao")
        assert (
            type(q.txt2img.text_encoder.text_model.encoder.layers[0].mlp.fc1.weight).__name__ == "Parameter"
        )
    a, b = _pixels(full), _pixels(q)
    assert not np.array_equal(a, b)  # the weights did change
    assert psnr(a, b) > 30  # ... and the image barely did


def test_fp8_is_refused_on_cpu_naming_the_capability(cache: Path) -> None:
    with pytest.raises(ModelError, match=r"compute capability >= 8\.9"):
        load_model("tiny", cache, device="cpu", quantize="fp8")
    with pytest.raises(UsageError, match="--quantize"):
        load_model("tiny", cache, device="cpu", quantize="int4")


def _knsd(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "knsd", *args], env=knsd_env(cache), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_bench_json_feeds_simulate(cache: Path, tmp_path: Path) -> None:
    out = _knsd(cache, "bench", "--model", "tiny", "--width", "64", "--height", "64", "--steps", "2", "-n", "2",
                "-o", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["kind"], report["family"], report["steps"], len(report["image_seconds"])) == (
        "knsd-bench",
        "sd1",
        2,
        2,
    )
    assert report["steps_per_second"] == pytest.approx(2 / report["seconds_per_image"])
    assert report["load_seconds"] > 0 and report["peak_memory_bytes"] > 1 << 20
    path = tmp_path / "bench.json"
    path.write_text(out.stdout)
    sim = _knsd(
        cache, "simulate", "--rate", "0.05", "--duration", "30m", "--service-time", str(path), "-o", "json"
    )
    assert sim.returncode == 0, sim.stderr
    assert str(round(report["seconds_per_image"], 2))[:3] in json.loads(sim.stdout)["service_time"]
    bad = _knsd(
        cache, "simulate", "--rate", "0.05", "--duration", "30m", "--service-time", str(tmp_path / "x.json")
    )
    assert bad.returncode == 2 and "--service-time" in bad.stderr


def test_bench_refuses_fp8_on_cpu(cache: Path) -> None:
    out = _knsd(cache, "bench", "--model", "tiny", "--device", "cpu", "--quantize", "fp8")
    assert out.returncode == 1 and "8.9" in out.stderr and "knsd bench: error" in out.stderr


def test_render_passes_quantize_to_the_pod(cache: Path) -> None:
    import yaml

    out = _knsd(cache, "render", "--quantize", "int8")
    assert out.returncode == 0, out.stderr
    service = next(d for d in yaml.safe_load_all(out.stdout) if d and d.get("kind") == "Service")
    assert service["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--quantize", "int8"]
    assert "--quantize" not in _knsd(cache, "render").stdout
    bad = _knsd(cache, "render", "--quantize", "int4")
    assert bad.returncode == 2 and "--quantize" in bad.stderr and "none, int8 or fp8" in bad.stderr
