"""Every model family through the HTTP API on its embedded tiny model (real uvicorn, real pipelines)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from knsd.serve.http.app import create_app
from knsd.serve.models.loader import LoadedModel, load_model
from knsd.serve.settings import ServeSettings
from tests.helpers import running

SMALL = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module", params=["tiny-sdxl", "tiny-sd3"])
def served(request: pytest.FixtureRequest, cache: Path) -> Iterator[tuple[str, LoadedModel]]:
    model = load_model(request.param, cache, device="cpu")
    with running(create_app(ServeSettings(model=request.param, cache=cache), model=model), "/readyz") as url:
        assert model.wait_hash(60) is not None  # hashed after ready, off the start-up path
        yield url, model


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _png_b64(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_family_and_components(served: tuple[str, LoadedModel]) -> None:
    _, model = served
    expected = {"tiny-sdxl": ("sdxl", 2, 4), "tiny-sd3": ("sd3", 3, 16)}[model.info.name]
    assert (model.family.name, len(model.text_encoders), model.family.latent_channels) == expected
    assert len(model.tokenizers) == len(model.text_encoders)
    assert model.denoiser is model.components[model.family.denoiser]


def test_txt2img_seeds_and_infotext(served: tuple[str, LoadedModel]) -> None:
    url, model = served
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 11, "n_iter": 2}, timeout=120)
    assert r.status_code == 200, r.text
    images = [_image(b) for b in r.json()["images"]]
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
    again = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 12}, timeout=120).json()["images"][0]
    assert np.array_equal(np.asarray(_image(again)), np.asarray(images[1]))  # seed 11 + 1
    text = images[0].text["parameters"]
    assert f"Model: {model.info.name}" in text and f"Model hash: {model.info.hash}" in text
    assert np.asarray(images[0]).std() > 1  # not a blank image


def test_img2img_and_openai(served: tuple[str, LoadedModel]) -> None:
    url, _ = served
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    body = {**SMALL, "init_images": [_png_b64(init)], "denoising_strength": 0.5, "seed": 3}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = np.asarray(_image(r.json()["images"][0])).astype(float)
    assert out.shape == (64, 64, 3)
    o = httpx.post(
        url + "/v1/images/generations", json={"prompt": "a cat", "size": "64x64", "steps": 2}, timeout=120
    )
    assert o.status_code == 200, o.text
    assert _image(o.json()["data"][0]["b64_json"]).size == (64, 64)


def test_sd_models_title_and_hashes(served: tuple[str, LoadedModel]) -> None:
    url, model = served
    item = httpx.get(url + "/sdapi/v1/sd-models").json()[0]
    weights = sorted((model.source.path / model.family.denoiser).glob("*.safetensors"))[0]
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (item["sha256"], item["hash"]) == (sha, sha[:10])
    assert item["title"] == f"{model.info.name} [{sha[:10]}]"
    assert httpx.get(url + "/sdapi/v1/options").json()["sd_checkpoint_hash"] == sha


def test_sd3_size_multiple_of_16(served: tuple[str, LoadedModel]) -> None:
    url, model = served
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "width": 72}, timeout=60)
    if model.family.name == "sd3":
        assert r.status_code == 422 and r.json()["field"] == "width"
        assert "multiple of 16" in r.json()["allowed"]
        big = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "height": 1536}, timeout=60)
        assert big.status_code == 422 and "at most 1024" in big.json()["allowed"]
    else:
        assert r.status_code == 200 and _image(r.json()["images"][0]).size == (72, 64)


@pytest.mark.parametrize("sampler", ["DDIM", "Euler a", "Heun", "DPM++ 2M", "Euler"])
def test_samplers_per_family(served: tuple[str, LoadedModel], sampler: str) -> None:
    url, model = served
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "sampler_name": sampler, "seed": 1}, timeout=120)
    if model.family.name == "sd3" and sampler in ("DDIM", "Euler a"):
        assert r.status_code == 422 and r.json()["field"] == "sampler_name"
        assert "Euler, Heun, DPM++ 2M, UniPC" in r.json()["allowed"]
    else:
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["sampler_name"] == sampler


def test_sd3_img2img_refuses_samplers_without_noise_scaling(served: tuple[str, LoadedModel]) -> None:
    url, model = served
    if model.family.name != "sd3":
        pytest.skip("SD 3.x only")
    init = _png_b64(Image.new("RGB", (64, 64)))
    body = {**SMALL, "init_images": [init], "sampler_name": "DPM++ 2M"}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["allowed"].startswith("one of Euler, Heun (img2img")
