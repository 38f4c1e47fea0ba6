"""Streamed generation on a real server: A1111's routes with `Accept: text/event-stream`, OpenAI's with
`"stream": true` (through the official `openai` client), previews in the stream and in /sdapi/v1/progress."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Route

from knsd.errors import Unavailable
from knsd.serve.generate.progress import Progress
from knsd.serve.http import events as sse
from knsd.serve.http.app import create_app
from knsd.serve.http.stream import EventStream
from knsd.serve.settings import ServeSettings
from tests.helpers import running
from tests.streams import Event, events, leave_after, steps_run, stream_txt2img

SMALL = {"prompt": "a cat", "width": 64, "height": 64, "seed": 7}


@pytest.fixture(scope="module")
def url(tiny_model: Any, cache: Path) -> Iterator[str]:
    app = create_app(ServeSettings(cache=cache, stream_keepalive=0.2), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _collect(url: str, body: dict[str, Any]) -> tuple[httpx.Response, list[Event]]:
    with httpx.Client() as client, stream_txt2img(client, url, body) as response:
        return response, list(events(response))


def test_a1111_stream_is_progress_events_then_the_usual_body(url: str) -> None:
    options = {"show_progress_every_n_steps": 4, "show_progress_type": "Approx cheap"}
    body = {**SMALL, "steps": 12, "override_settings": options}
    response, got = _collect(url, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert got[0] == Event(":", "knsd stream")  # the first bytes go out before any step
    progress = [e.data for e in got if e.name == "progress"]
    idle = httpx.get(url + "/sdapi/v1/progress").json()
    assert progress and all(
        p.keys() == idle.keys() and p["state"].keys() == idle["state"].keys() for p in progress
    )
    steps = [p["state"]["sampling_step"] for p in progress]
    assert (
        steps == sorted(steps) and steps[0] < 12 and {p["state"]["sampling_steps"] for p in progress} == {12}
    )
    assert all(p["state"]["job_count"] == 1 for p in progress)
    previews = [p["current_image"] for p in progress if p["current_image"]]
    assert 1 <= len(previews) <= 3 and all(_png(p).size == (8, 8) for p in previews)
    assert [e.name for e in got if e.name != ":"][-1] == "result"
    result = got[-1].data
    plain = httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=300).json()
    assert result.keys() == plain.keys() == {"images", "parameters", "info"}
    assert result["images"] == plain["images"]  # same seed, same PNG bytes streamed or not


def test_admission_errors_stay_plain_json(url: str) -> None:
    for body, field in (
        ({**SMALL, "width": 500}, "width"),
        (
            {**SMALL, "override_settings": {"show_progress_type": "TAESD"}},
            "override_settings.show_progress_type",
        ),
    ):
        with httpx.Client() as client, stream_txt2img(client, url, body) as response:
            response.read()
        assert response.status_code == 422 and response.headers["content-type"] == "application/json"
        assert response.json()["field"] == field
    taesd = httpx.post(url + "/sdapi/v1/options", json={"show_progress_type": "TAESD"})
    assert taesd.status_code == 422 and "VAE-taesd/taesd_decoder.pth" in taesd.json()["detail"]


def test_a_queued_stream_reports_only_its_own_job(url: str) -> None:
    """Behind a running request, a stream says nothing of that job: its progress events are its own."""
    body = {**SMALL, "steps": 30, "width": 128}
    ahead = threading.Thread(target=lambda: httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=300))
    ahead.start()
    try:
        with httpx.Client() as client:
            while (
                ahead.is_alive() and not client.get(url + "/sdapi/v1/progress").json()["state"]["job_count"]
            ):
                pass  # until the first request runs
            with stream_txt2img(client, url, {**SMALL, "steps": 3}) as response:
                got = list(events(response))
    finally:
        ahead.join()
    progress = [e.data["state"] for e in got if e.name == "progress"]
    assert progress and {p["sampling_steps"] for p in progress} == {3}
    assert got[-1].name == "result"


def _stream_app(job: Any, keepalive: float) -> Starlette:
    """A server whose one route answers with an EventStream around `job` (no model)."""

    async def route(request: Any) -> EventStream:
        return EventStream(
            Progress(),
            job,
            on_progress=lambda p, previews: [],
            on_error=lambda f: sse.event("error", {**f.body, "status": f.status}),
            keepalive=keepalive,
        )

    return Starlette(routes=[Route("/", route, methods=["POST"])])


def test_keep_alive_comments_fill_the_silence() -> None:
    """A job that says nothing: comments come at the interval until it ends (it ends once the client has
    seen two, so nothing here depends on how fast the machine is)."""
    heard = threading.Event()

    async def job(feed: Any) -> list[bytes]:
        while not heard.is_set():
            await asyncio.sleep(0.01)
        return [sse.event("result", {"done": True})]

    with running(_stream_app(job, keepalive=0.05)) as base, httpx.stream("POST", base + "/") as response:
        got = []
        for event in events(response):
            got.append(event)
            if got.count(Event(":", "keep-alive")) == 2:
                heard.set()
    assert got[0] == Event(":", "knsd stream") and got[-1] == Event("result", {"done": True})


def test_a_step_reported_as_the_job_ends_does_not_hold_the_stream_open() -> None:
    """The pipeline's last step report lands in the loop turn in which the job ends and the pump is
    cancelled: the stream still ends with its result. (Python 3.11's `asyncio.wait_for` returned the
    finished wait and dropped the cancellation then; the pump kept sending keep-alives to a finished
    request, which hung until a proxy's timeout cut it.)"""

    async def job(feed: Any) -> list[bytes]:
        feed.notify()  # the step report, as the pipeline thread sends it
        await asyncio.sleep(0)  # the report reaches the loop and wakes the pump's wait...
        await asyncio.sleep(0)  # ...which finishes; the pump has not run yet when the job returns
        return [sse.event("result", {"done": True})]

    for _ in range(5):
        with running(_stream_app(job, keepalive=0.05)) as base:
            with httpx.stream("POST", base + "/", timeout=10) as response:
                got = []
                for event in events(response):  # a hung stream sends keep-alives for ever: stop at 40
                    got.append(event)
                    if got.count(Event(":", "keep-alive")) >= 40:
                        break
        assert got[-1] == Event("result", {"done": True}), got[-3:]


def test_an_error_after_the_start_is_an_error_event() -> None:
    async def job(feed: Any) -> list[bytes]:
        raise Unavailable("server is shutting down", retry_after=1)

    with running(_stream_app(job, keepalive=60)) as base, httpx.stream("POST", base + "/") as response:
        got = list(events(response))
    assert response.status_code == 200
    assert got[-1].name == "error" and got[-1].data["status"] == 503
    assert got[-1].data["error"] == "Unavailable" and got[-1].data["detail"] == "server is shutting down"


def test_progress_route_shows_the_live_preview(url: str) -> None:
    body = {**SMALL, "steps": 60, "override_settings": {"show_progress_every_n_steps": 1}}
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=300), done.set())
    )
    worker.start()
    seen: list[dict[str, Any]] = []
    with httpx.Client() as client:
        while not done.is_set():
            seen.append(client.get(url + "/sdapi/v1/progress").json())
            if seen[-1]["current_image"]:
                skipped = client.get(url + "/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
                assert skipped["current_image"] is None
                break
    worker.join()
    assert any(s["current_image"] and _png(s["current_image"]).format == "PNG" for s in seen)
    assert httpx.get(url + "/sdapi/v1/progress").json()["current_image"] is None  # idle: as A1111


def test_previews_follow_the_options(url: str) -> None:
    assert httpx.post(url + "/sdapi/v1/options", json={"live_previews_enable": False}).status_code == 200
    try:
        _, got = _collect(url, {**SMALL, "steps": 4, "override_settings": {"show_progress_every_n_steps": 1}})
        assert [e for e in got if e.name == "progress" and e.data["current_image"]] == []
        options = httpx.get(url + "/sdapi/v1/options").json()
        assert options["live_previews_enable"] is False and options["show_progress_type"] == "Approx cheap"
        bad = httpx.post(url + "/sdapi/v1/options", json={"show_progress_every_n_steps": -3})
        assert bad.status_code == 422 and bad.json()["field"] == "show_progress_every_n_steps"
    finally:
        httpx.post(url + "/sdapi/v1/options", json={"live_previews_enable": True})


def test_openai_client_streams_partial_images_then_the_image(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    stream = client.images.generate(
        prompt="a cat", size="64x64", stream=True, partial_images=2, extra_body={"steps": 12, "seed": 7}
    )
    got = list(stream)
    assert [e.type for e in got] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in got[:2]] == [0, 1]
    for e in got:
        assert _png(e.b64_json).size == (64, 64) and e.size == "64x64" and e.output_format == "png"
    plain = client.images.generate(prompt="a cat", size="64x64", extra_body={"steps": 12, "seed": 7})
    assert got[-1].b64_json == plain.data[0].b64_json
    assert got[-1].usage.input_tokens == got[-1].usage.input_tokens_details.text_tokens > 0

    none = list(
        client.images.generate(prompt="a cat", size="64x64", stream=True, extra_body={"steps": 2, "n": 2})
    )
    assert [e.type for e in none] == ["image_generation.completed"] * 2
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.images.generate(prompt="a cat", size="64x64", stream=True, partial_images=4)
    assert err.value.response.json()["field"] == "partial_images"


def test_img2img_streams_too(url: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 90)).save(buffer, format="PNG")
    init = base64.b64encode(buffer.getvalue()).decode()
    body = {**SMALL, "steps": 8, "init_images": [init], "denoising_strength": 0.5}
    with httpx.Client() as client:
        headers = {"Accept": "text/event-stream"}
        with client.stream("POST", url + "/sdapi/v1/img2img", json=body, headers=headers, timeout=300) as r:
            got = list(events(r))
    assert [e.data["state"]["job"] for e in got if e.name == "progress"][0] == "img2img"
    assert got[-1].name == "result" and _png(got[-1].data["images"][0]).size == (64, 64)


def test_a_stream_left_by_its_client_stops_at_the_next_step(url: str) -> None:
    with httpx.Client() as client:
        before, left_at = leave_after(client, url, {**SMALL, "steps": 150, "width": 256, "height": 256}, 3)
    after = httpx.post(url + "/sdapi/v1/txt2img", json={**SMALL, "steps": 2}, timeout=300)
    assert after.status_code == 200
    abandoned = steps_run(url) - 2 - before
    assert abandoned < 150 and abandoned - (left_at - before) <= 2, (before, left_at, abandoned)
