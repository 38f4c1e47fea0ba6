"""A1111 parity over real HTTP: hires fix, clip skip through /sdapi/v1/options, refusals by name."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

SMALL = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def url(tiny_model, cache: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    app = create_app(ServeSettings(cache=cache, warmup=False), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base


def test_hires_fix_over_http(url: str) -> None:
    body = {**SMALL, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.6, "hr_second_pass_steps": 2}
    r = httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert image.size == (128, 128)
    info = json.loads(r.json()["info"])
    assert image.text["parameters"] == info["infotexts"][0]
    assert "Hires upscale: 2.0, Hires steps: 2" in info["infotexts"][0]
    assert r.json()["parameters"]["enable_hr"] is True


def test_clip_skip_through_options_and_override_settings(url: str) -> None:
    assert httpx.post(url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}).status_code == 200
    try:
        assert httpx.get(url + "/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
        r = httpx.post(url + "/sdapi/v1/txt2img", json=SMALL, timeout=120)
        assert "Clip skip: 2" in json.loads(r.json()["info"])["infotexts"][0]
        body = {**SMALL, "override_settings": {"CLIP_stop_at_last_layers": 1}}
        r = httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=120)
        assert "Clip skip" not in json.loads(r.json()["info"])["infotexts"][0]
    finally:
        httpx.post(url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    bad = httpx.post(url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "CLIP_stop_at_last_layers"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a cat AND a dog"}, "prompt"),
        ({"prompt": "(a:1.2.3)"}, "prompt"),
        ({"restore_faces": True}, "restore_faces"),
        ({"enable_hr": True, "hr_upscaler": "4x-UltraSharp"}, "hr_upscaler"),
        ({"override_settings": {"randn_source": "GPU"}}, "override_settings.randn_source"),
    ],
)
def test_refusals_name_the_field(url: str, body: dict, field: str) -> None:
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, **body}, timeout=120)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


# What the `webuiapi` Python client sends by default (its txt2img/img2img signatures), shrunk to 64x64.
WEBUIAPI_TXT2IMG = {
    "enable_hr": False, "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0,
    "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0,
    "prompt": "a cat", "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0.0,
    "seed_resize_from_h": 0, "seed_resize_from_w": 0, "sampler_name": "Euler a", "batch_size": 1,
    "n_iter": 1, "steps": 2, "cfg_scale": 7.0, "width": 64, "height": 64, "restore_faces": False,
    "tiling": False, "do_not_save_samples": False, "do_not_save_grid": False, "negative_prompt": "",
    "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {},
    "override_settings_restore_afterwards": True, "script_args": [], "script_name": None,
    "send_images": True, "save_images": False, "alwayson_scripts": {}, "sampler_index": "Euler a",
}  # fmt: skip


def test_a_stock_client_body_is_accepted(url: str) -> None:
    r = httpx.post(url + "/sdapi/v1/txt2img", json=WEBUIAPI_TXT2IMG, timeout=120)
    assert r.status_code == 200, r.text
    image = Image.new("RGB", (64, 64), "white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    body = {
        **WEBUIAPI_TXT2IMG, "init_images": [base64.b64encode(buffer.getvalue()).decode()], "resize_mode": 0,
        "mask": None, "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True,
        "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": 1,
        "image_cfg_scale": 1.5, "include_init_images": False, "denoising_strength": 0.75,
    }  # fmt: skip
    del body["enable_hr"]
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    # DDIM and Euler a read eta (A1111's infotext keys), a negative one is refused by name
    for sampler, key in (("DDIM", "Eta DDIM"), ("Euler a", "Eta")):
        r = httpx.post(
            url + "/sdapi/v1/txt2img", json={**SMALL, "sampler_name": sampler, "eta": 0.5}, timeout=120
        )
        assert r.status_code == 200 and f"{key}: 0.5" in json.loads(r.json()["info"])["infotexts"][0]
    bad = httpx.post(
        url + "/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Euler a", "eta": -0.5}, timeout=120
    )
    assert bad.status_code == 422 and bad.json()["field"] == "eta"
