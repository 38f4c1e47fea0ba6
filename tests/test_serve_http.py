"""The handler over real HTTP: a real uvicorn server on loopback and the real tiny pipeline."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

SMALL = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 4}


@pytest.fixture(scope="module")
def url(tiny_model, cache: Path) -> Iterator[str]:
    app = create_app(ServeSettings(cache=cache, max_body_bytes=256 * 1024), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_txt2img_response_shape(url: str) -> None:
    r = httpx.post(
        url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 42, "negative_prompt": "blurry"}, timeout=60
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    info = json.loads(body["info"])
    assert info["seed"] == 42 and info["all_seeds"] == [42]
    assert (info["width"], info["height"], info["steps"], info["sampler_name"]) == (64, 64, 4, "Euler")
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.format == "PNG" and image.size == (64, 64)
    text = image.text["parameters"]
    assert text.startswith("pretty dog\nNegative prompt: blurry\nSteps: 4, Sampler: Euler")
    assert "Seed: 42, Size: 64x64" in text and "Model: tiny-sd" in text
    assert text == info["infotexts"][0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _seed_of(b64: str) -> int:
    match = re.search(r"Seed: (\d+)", Image.open(io.BytesIO(base64.b64decode(b64))).text["parameters"])
    assert match is not None
    return int(match.group(1))


def test_same_seed_same_pixels_and_batch_seeds(url: str) -> None:
    batch = httpx.post(
        url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 7, "batch_size": 2, "n_iter": 2}, timeout=60
    )
    info = json.loads(batch.json()["info"])
    assert info["all_seeds"] == [7, 8, 9, 10]
    images = batch.json()["images"]
    assert [_seed_of(image) for image in images] == [7, 8, 9, 10]  # each PNG names its own seed
    single = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 9}, timeout=60).json()["images"][0]
    again = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 9}, timeout=60).json()["images"][0]
    # The same request on the same server is bit-identical.
    assert np.array_equal(_pixels(single), _pixels(again))
    # Inside a batch, CPU kernels may pick other algorithms for another batch size (A1111 documents the
    # same), so the third image (seed 7 + 2) matches seed 9 alone within a tolerance, not bit for bit:
    # PSNR >= 40 dB is far above what any two different seeds give (below 20 dB on the tiny model).
    assert _psnr(_pixels(single), _pixels(images[2])) >= 40
    assert _psnr(_pixels(images[0]), _pixels(images[1])) < 20


def test_a1111_default_request_is_512(url: str) -> None:
    r = httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "pretty dog", "steps": 2}, timeout=60)
    assert r.status_code == 200
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (512, 512)


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM", "DPM++ 2M Karras", "LMS", "Heun", "PLMS", "UniPC"])
def test_samplers_generate(url: str, sampler: str) -> None:
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "sampler_name": sampler, "seed": 1}, timeout=60)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["sampler_name"] == sampler.removesuffix(" Karras")


def test_send_images_false(url: str) -> None:
    r = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "send_images": False}, timeout=60)
    assert r.status_code == 200 and r.json()["images"] == []


def _png_b64(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_img2img(url: str) -> None:
    body = {**SMALL, "init_images": [_png_b64((255, 0, 0))], "denoising_strength": 0.5, "seed": 3}
    r = httpx.post(url + "/sdapi/v1/img2img", json=body, timeout=60)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["denoising_strength"] == 0.5
    assert "Denoising strength: 0.5" in info["infotexts"][0]
    other = httpx.post(
        url + "/sdapi/v1/img2img", json={**body, "init_images": [_png_b64((0, 0, 255))]}, timeout=60
    )
    assert not np.array_equal(_pixels(r.json()["images"][0]), _pixels(other.json()["images"][0]))


@pytest.mark.parametrize(
    ("path", "content", "status", "field"),
    [
        ("/sdapi/v1/txt2img", b'{"prompt": ', 400, None),
        ("/sdapi/v1/txt2img", b"[1, 2]", 400, None),
        ("/sdapi/v1/txt2img", json.dumps({"width": 500}).encode(), 422, "width"),
        ("/sdapi/v1/txt2img", json.dumps({"steps": 151}).encode(), 422, "steps"),
        ("/sdapi/v1/txt2img", json.dumps({"cfg_scale": -1}).encode(), 422, "cfg_scale"),
        ("/sdapi/v1/txt2img", json.dumps({"batch_size": 9}).encode(), 422, "batch_size"),
        ("/sdapi/v1/txt2img", json.dumps({"sampler_name": "Nope"}).encode(), 422, "sampler_name"),
        ("/sdapi/v1/img2img", json.dumps({"init_images": ["!!"]}).encode(), 422, "init_images[0]"),
        (
            "/sdapi/v1/img2img",
            json.dumps({"init_images": [base64.b64encode(b"text").decode()]}).encode(),
            422,
            "init_images[0]",
        ),
        ("/sdapi/v1/img2img", json.dumps({"prompt": "x"}).encode(), 422, "init_images"),
        ("/v1/images/generations", json.dumps({"prompt": "x", "size": "1x1"}).encode(), 422, "size"),
    ],
)
def test_bad_input_is_a_clear_error(
    url: str, path: str, content: bytes, status: int, field: str | None
) -> None:
    r = httpx.post(url + path, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status
    body = r.json()
    assert body["error"] and body["detail"]
    if field:
        assert body["field"] == field and "allowed" in body and "received" in body
    assert httpx.get(url + "/readyz").status_code == 200  # the server stays healthy


def test_body_over_limit_is_413(url: str) -> None:
    big = json.dumps({"prompt": "x" * 300_000})
    r = httpx.post(url + "/sdapi/v1/txt2img", content=big, timeout=30)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"x" * 10_000

    r = httpx.post(url + "/sdapi/v1/txt2img", content=chunks(), timeout=30)
    assert r.status_code == 413


def test_openai_images(url: str) -> None:
    r = httpx.post(
        url + "/v1/images/generations",
        json={"prompt": "cat", "n": 2, "size": "64x64", "seed": 11, "steps": 3},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int)
    assert [d["seed"] for d in body["data"]] == [11, 12]
    assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (64, 64)


def test_a1111_info_routes(url: str) -> None:
    models = httpx.get(url + "/sdapi/v1/sd-models").json()
    assert models[0]["model_name"] == "tiny-sd" and models[0]["title"].startswith("tiny-sd [")
    names = [s["name"] for s in httpx.get(url + "/sdapi/v1/samplers").json()]
    assert {"Euler", "Euler a", "DDIM", "DPM++ 2M", "LMS", "Heun", "PLMS", "UniPC"} <= set(names)
    assert "Karras" in [s["label"] for s in httpx.get(url + "/sdapi/v1/schedulers").json()]
    options = httpx.get(url + "/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == models[0]["title"]
    assert (
        httpx.post(url + "/sdapi/v1/options", json={"sd_model_checkpoint": models[0]["title"]}).status_code
        == 200
    )
    wrong = httpx.post(url + "/sdapi/v1/options", json={"sd_model_checkpoint": "sdxl"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "sd_model_checkpoint"
    assert httpx.get(url + "/sdapi/v1/nope").status_code == 404
    assert httpx.get(url + "/sdapi/v1/txt2img").status_code == 405


def test_progress_reports_the_running_step(url: str) -> None:
    idle = httpx.get(url + "/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    seen: list[dict] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.append(httpx.get(url + "/sdapi/v1/progress").json())
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        r = httpx.post(
            url + "/sdapi/v1/txt2img",
            json={"prompt": "x", "steps": 40, "width": 256, "height": 256},
            timeout=60,
        )
    finally:
        done.set()
        poller.join()
    assert r.status_code == 200
    running_states = [s for s in seen if s["state"]["job_count"] == 1]
    assert running_states, "progress never showed the running job"
    assert all(s["state"]["sampling_steps"] == 40 for s in running_states)
    assert any(0 < s["state"]["sampling_step"] < 40 and 0 < s["progress"] < 1 for s in running_states)


def test_interrupt_stops_early(url: str) -> None:
    result: dict = {}

    def generate() -> None:
        result["r"] = httpx.post(
            url + "/sdapi/v1/txt2img",
            json={"prompt": "x", "steps": 150, "width": 512, "height": 512},
            timeout=120,
        )

    def steps_run() -> float:  # denoising steps the server has run, from its own metrics
        text = httpx.get(url + "/metrics").text
        return float(re.search(r"^knsd_denoising_step_seconds_count (\S+)$", text, re.M).group(1))

    before = steps_run()
    worker = threading.Thread(target=generate)
    worker.start()
    while httpx.get(url + "/sdapi/v1/progress").json()["state"]["sampling_step"] < 2:
        time.sleep(0.02)
    assert httpx.post(url + "/sdapi/v1/interrupt").status_code == 200
    worker.join()
    assert result["r"].status_code == 200 and len(result["r"].json()["images"]) == 1
    # Counted, not timed (a loaded machine stretches any time bound): far fewer than the 150 steps asked.
    assert steps_run() - before < 75


def test_metrics(url: str) -> None:
    httpx.post(url + "/sdapi/v1/txt2img", json=SMALL, timeout=60)
    httpx.post(url + "/sdapi/v1/txt2img", json={"width": 1}, timeout=60)
    text = httpx.get(url + "/metrics").text
    for name in (
        "knsd_request_duration_seconds_bucket",
        "knsd_inflight_requests",
        "knsd_queue_depth",
        "knsd_model_load_seconds",
        "knsd_denoising_step_seconds_count",
        "knsd_ready 1.0",
    ):
        assert name in text
    assert 'knsd_requests_total{route="/sdapi/v1/txt2img",status="200"}' in text
    assert 'knsd_requests_total{route="/sdapi/v1/txt2img",status="422"}' in text
