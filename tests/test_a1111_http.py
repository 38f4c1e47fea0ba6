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

from knsd.serve.app import create_app
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
