"""Hostile input against a real `knsd serve --model tiny` process: every shape is refused with a 4xx naming
what is wrong, or served within bounds, while a concurrent client sees `/healthz` answer within 1 s."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import start_serve, wait_for
from tests.hostile import health_watched

SMALL = {"prompt": "x", "width": 64, "height": 64, "steps": 2}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("hostile") / "serve.log"
    proc, url = start_serve(
        cache, "--max-pixels", str(256 * 256), "--allowed-hosts", "127.0.0.1,localhost", log=log
    )
    try:
        wait_for(url + "/readyz", 180)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except Exception:
            proc.kill()


def post(url: str, path: str, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return httpx.post(url + path, content=data, headers={**JSON, **(headers or {})}, timeout=120)


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_json_routes_take_only_json(server: str, kind: str) -> None:
    with health_watched(server):
        for path in ("/sdapi/v1/options", "/sdapi/v1/txt2img"):
            r = post(server, path, json.dumps({"CLIP_stop_at_last_layers": 2}), {"Content-Type": kind})
            assert r.status_code == 415 and "application/json" in r.json()["detail"]
        assert httpx.get(server + "/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1
        # What A1111's clients send: application/json (requests' json=, openai's client), or nothing.
        plain = httpx.post(server + "/sdapi/v1/txt2img", content=json.dumps(SMALL), timeout=120)
        assert plain.status_code == 200
        typed = post(
            server,
            "/sdapi/v1/txt2img",
            json.dumps(SMALL),
            {"Content-Type": "application/json; charset=utf-8"},
        )
        assert typed.status_code == 200


def test_cross_site_writes_are_refused(server: str) -> None:
    with health_watched(server):
        evil = {"Origin": "http://evil.example"}
        r = post(server, "/sdapi/v1/options", json.dumps({"CLIP_stop_at_last_layers": 2}), evil)
        assert r.status_code == 403 and "evil.example" in r.json()["detail"]
        assert post(server, "/sdapi/v1/interrupt", "", evil).status_code == 403
        assert httpx.get(server + "/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1
        # The server's own page: its Origin is the server's.
        own = {"Origin": server}
        assert post(server, "/sdapi/v1/txt2img", json.dumps(SMALL), own).status_code == 200
        # Behind a proxy that rewrote Host: the X-Forwarded-Host it set (a browser cannot add it unasked).
        proxied = {"Origin": "https://sd.example.com", "X-Forwarded-Host": "sd.example.com"}
        assert post(server, "/sdapi/v1/txt2img", json.dumps(SMALL), proxied).status_code == 200
        # Reading is not state-changing: a GET from another site's page is answered (and unreadable there).
        assert httpx.get(server + "/sdapi/v1/samplers", headers=evil).status_code == 200


def test_other_hosts_are_refused_probes_stay_open(server: str) -> None:
    with health_watched(server):
        rebound = {"Host": "attacker.example"}
        r = httpx.get(server + "/sdapi/v1/options", headers=rebound)
        assert r.status_code == 400 and "allowed-hosts" in r.json()["detail"]
        assert httpx.get(server.replace("127.0.0.1", "localhost") + "/sdapi/v1/samplers").status_code == 200
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(server + probe, headers=rebound).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"prompt": "x", "cfg_scale": NaN}', "cfg_scale"),
        ('{"prompt": "x", "steps": Infinity}', "steps"),
        ('{"prompt": "x", "seed": -Infinity}', "seed"),
        ('{"prompt": "x", "denoising_strength": 1e999}', "denoising_strength"),
        (
            '{"prompt": "x", "override_settings": {"eta_noise_seed_delta": NaN}}',
            "override_settings.eta_noise_seed_delta",
        ),
        (
            '{"prompt": "x", "alwayson_scripts": {"controlnet": {"args": [{"weight": NaN}]}}}',
            "alwayson_scripts.controlnet.args[0].weight",
        ),
    ],
)
def test_non_finite_numbers_are_422s_naming_the_field(server: str, body: str, field: str) -> None:
    with health_watched(server):
        r = post(server, "/sdapi/v1/txt2img", body)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field and "finite" in r.json()["detail"]


@pytest.mark.parametrize("prompt", ["[a:b:1e999]", "(a:" + "9" * 400 + ")", "(" * 8000 + "a"])
def test_non_finite_inside_prompts_is_a_422(server: str, prompt: str) -> None:
    with health_watched(server):
        r = post(server, "/sdapi/v1/txt2img", json.dumps({**SMALL, "prompt": prompt}))
        assert r.status_code == 422, r.text[:300]
        assert r.json()["field"] == "prompt" and "finite" in r.json()["detail"]


def test_deep_nesting_and_value_floods_are_400s(server: str) -> None:
    with health_watched(server):
        for body in (
            "[" * 100_000 + "]" * 100_000,
            '{"a":' * 70 + "1" + "}" * 70,
            "[" + "0," * 300_000 + "0]",
        ):
            r = post(server, "/sdapi/v1/txt2img", body)
            assert r.status_code == 400, r.text[:300]
            assert "nested" in r.json()["detail"] or "values" in r.json()["detail"]
