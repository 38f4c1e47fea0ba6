"""Single-file checkpoints (like v1-5-pruned-emaonly.safetensors) through the same loading path."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from knsd.bench.ldm import pipeline_to_ldm
from knsd.serve.api.request import parse_txt2img
from knsd.serve.generate.engine import Engine
from tests.helpers import start_serve, wait_for

pytestmark = pytest.mark.slow
REQUEST = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 4, "seed": 5}


@pytest.fixture(scope="module")
def checkpoint(pristine_tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model written in the original (LDM) single-file layout, as SD 1.5 ships (from the model as
    built: the shared `tiny_model` may carry a server's embedding tokens)."""
    volume = tmp_path_factory.mktemp("models")
    path = volume / "v1-5-tiny-emaonly.safetensors"
    save_file(pipeline_to_ldm(pristine_tiny_model.txt2img), str(path))
    return path


def _generate(url: str) -> np.ndarray:
    r = httpx.post(url + "/sdapi/v1/txt2img", json=REQUEST, timeout=60)
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))))


@pytest.mark.parametrize("as_volume", [False, True], ids=["file", "volume"])
def test_single_file_serves_the_same_pixels(
    pristine_tiny_model, cache: Path, checkpoint: Path, tmp_path: Path, as_volume: bool
) -> None:
    model = checkpoint.parent if as_volume else checkpoint
    proc, url = start_serve(cache, "--model", str(model), "--model-config", str(pristine_tiny_model.source.path),
                            log=tmp_path / "serve.log")  # fmt: skip
    try:
        wait_for(url + "/readyz", 120)
        models = httpx.get(url + "/sdapi/v1/sd-models").json()
        assert models[0]["model_name"] == "v1-5-tiny-emaonly" and models[0]["filename"] == str(checkpoint)
        expected = np.asarray(Engine(pristine_tiny_model).generate(parse_txt2img(REQUEST, 1 << 30)).images[0])
        assert np.array_equal(_generate(url), expected)
    finally:
        proc.kill()
        proc.wait(10)


def test_single_file_without_a_config_offline(cache: Path, checkpoint: Path, tmp_path: Path) -> None:
    """No --model-config, HF_HUB_OFFLINE=1: the architecture is detected and its config built in."""
    proc, url = start_serve(cache, "--model", str(checkpoint), log=tmp_path / "serve.log")
    try:
        wait_for(url + "/readyz", 120)
        assert _generate(url).shape == (64, 64, 3)
    finally:
        proc.kill()
        proc.wait(10)


def test_not_a_checkpoint_is_a_clear_error(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(path))
    log = tmp_path / "serve.log"
    proc, _ = start_serve(cache, "--model", str(path), log=log)
    assert proc.wait(120) == 1
    text = log.read_text()
    assert "could not load" in text and "no Stable Diffusion UNet or MMDiT" in text
