"""A1111 v1.10.1's whole options object over real HTTP: every key with A1111's default and wire type, every
key class on POST (honoured, stored, kept at knsd's value, unknown), and honoured keys change generation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from knsd.serve.api.options import option_specs
from knsd.serve.api.policy import GENERATION_OPTIONS, KNSD_DEFAULTS
from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

SMALL = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 2, "seed": 5}


@pytest.fixture
def url(tiny_model: Any, cache: Path) -> Iterator[str]:
    """A fresh server per test: POSTed options persist for the server's life."""
    app = create_app(ServeSettings(cache=cache, warmup=False), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base


def _get(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/sdapi/v1/options")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def _post(url: str, body: Any) -> httpx.Response:
    return httpx.post(url + "/sdapi/v1/options", json=body, timeout=30)


def test_get_returns_every_key_with_a1111s_defaults_and_wire_types(url: str) -> None:
    data = _get(url)
    specs = option_specs()
    assert list(data) == list(specs) and len(data) == 329
    # ints of float-typed fields go out as floats, as A1111's response model sends them
    assert data["CLIP_stop_at_last_layers"] == 1.0 and isinstance(data["CLIP_stop_at_last_layers"], float)
    assert isinstance(data["jpeg_quality"], float) and data["n_rows"] == -1.0
    assert data["eta_noise_seed_delta"] == 0 and isinstance(data["eta_noise_seed_delta"], int)  # typed Any
    assert data["send_seed"] is True and data["samples_format"] == "png" and data["eta_ancestral"] == 1.0
    assert data["sd_model_checkpoint"].startswith("tiny") and len(data["sd_checkpoint_hash"]) == 64
    assert data["randn_source"] == "CPU"  # knsd draws on CPU generators (A1111's default is "GPU")
    # every other key has A1111's default, except settings where knsd documents its own
    own = {k for k, v in {**KNSD_DEFAULTS, **GENERATION_OPTIONS}.items() if v != specs[k].default}
    differ = {k for k, s in specs.items() if data[k] != s.default}
    assert differ == {"sd_checkpoint_hash", "sd_model_checkpoint"} | own and "randn_source" in own


def test_a1111s_own_options_round_trip(url: str) -> None:
    """A1111's test/test_utils.py::test_options_write, plus the whole object posted back unchanged."""
    before = _get(url)
    assert _post(url, {"send_seed": not before["send_seed"]}).status_code == 200
    assert _get(url)["send_seed"] is (not before["send_seed"])
    assert _post(url, {"send_seed": before["send_seed"]}).status_code == 200
    assert _post(url, _get(url)).status_code == 200  # a client saving the object it read
    assert _get(url) == before


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"made_up_setting": 1}, "made_up_setting", "options object"),
        ({"send_seed": "yes"}, "send_seed", "true or false"),
        ({"emphasis": "Loud"}, "emphasis", "'No norm'"),
        ({"jpeg_quality": 50}, "jpeg_quality", "knsd cannot change"),
        ({"randn_source": "GPU"}, "randn_source", "'CPU'"),
        ({"api_enable_requests": False}, "api_enable_requests", "API may not change"),
        ({"eta_ancestral": -1}, "eta_ancestral", "at least 0"),
        ({"CLIP_stop_at_last_layers": 13}, "CLIP_stop_at_last_layers", "between 1 and 12"),
        ({"sd_model_checkpoint": "other.safetensors"}, "sd_model_checkpoint", "one model per pod"),
    ],
)
def test_post_refuses_by_name_and_sets_nothing(
    url: str, body: dict[str, Any], field: str, words: str
) -> None:
    before = _get(url)
    r = _post(url, {"send_seed": False, **body})  # the valid key before it is not set either
    assert r.status_code == 422 and r.json()["field"] == field and words in r.json()["detail"], r.text
    assert _get(url) == before


def test_stored_kept_and_honoured_keys(url: str) -> None:
    stored = {
        "outdir_samples": "/tmp/x",
        "hide_samplers": ["Euler"],
        "ui_reorder_list": ["prompt"],
        "n_rows": 3,
    }
    kept = {"sd_vae": "None", "samples_format": "png", "randn_source": "CPU"}
    assert _post(url, {**stored, **kept}).status_code == 200
    data = _get(url)
    assert {k: data[k] for k in stored} == {**stored, "n_rows": 3.0}
    assert {k: data[k] for k in kept} == kept
    # honoured: the ENSD option changes Euler a's later noise and is written to the infotext
    plain = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Euler a"}, timeout=120)
    assert _post(url, {"eta_noise_seed_delta": 31337}).status_code == 200
    ensd = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Euler a"}, timeout=120)
    assert plain.json()["images"] != ensd.json()["images"]
    assert "ENSD: 31337" in json.loads(ensd.json()["info"])["infotexts"][0]


def test_override_settings_take_every_key_for_one_request(url: str) -> None:
    body = {**SMALL, "override_settings": {"send_seed": False, "eta_noise_seed_delta": 5, "sd_vae": "None"}}
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**body, "sampler_name": "Euler a"}, timeout=120)
    assert r.status_code == 200 and "ENSD: 5" in json.loads(r.json()["info"])["infotexts"][0]
    assert _get(url)["eta_noise_seed_delta"] == 0  # overrides never outlive the request
    bad = httpx.post(
        url + "/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"tiling_x": 1}}, timeout=30
    )
    assert bad.status_code == 422 and bad.json()["field"] == "override_settings.tiling_x"
