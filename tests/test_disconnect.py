"""Clients that go away give up their place: a queued request leaves the queue, a running generation stops
at its next step, and the next request runs at once. Against a real `knsd serve --model tiny` process;
progress is counted in the denoising steps the server ran (its metrics), never timed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import served
from tests.hostile import health_watched, hold_request, metric

LONG = {"prompt": "long", "width": 256, "height": 256, "steps": 150, "n_iter": 8}  # 1,200 steps
SMALL = {"prompt": "next", "width": 64, "height": 64, "steps": 2}
STEPS = "knsd_denoising_step_seconds_count"
IMAGES = "knsd_images_generated_total"


@pytest.fixture(scope="module")
def server(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("disconnect") / "serve.log"
    with served(cache, "--model", "tiny", "--max-queue", "2", log=log) as (_, url):
        yield url


def _until(condition: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_disconnected_clients_give_up_slot_and_queue(server: str) -> None:
    with health_watched(server):
        images_before = metric(server, IMAGES)
        running = hold_request(server, "/sdapi/v1/txt2img", LONG)
        _until(lambda: httpx.get(server + "/sdapi/v1/progress").json()["state"]["sampling_step"] >= 1)
        queued = [hold_request(server, "/sdapi/v1/txt2img", {**LONG, "seed": i}) for i in range(2)]
        _until(lambda: metric(server, "knsd_queue_depth") == 2)
        assert metric(server, "knsd_queue_depth") == 2 and metric(server, "knsd_inflight_requests") == 1
        full = httpx.post(server + "/sdapi/v1/txt2img", json=SMALL, timeout=60)
        assert full.status_code == 503  # the slot and the queue are full

        steps_at_close = metric(server, STEPS)
        for conn in [running, *queued]:
            conn.close()
        # Their places are given up: nothing runs or waits any more (polled, not timed).
        _until(lambda: metric(server, "knsd_inflight_requests") + metric(server, "knsd_queue_depth") == 0)
        r = httpx.post(server + "/sdapi/v1/txt2img", json=SMALL, timeout=120)
        assert r.status_code == 200 and len(r.json()["images"]) == 1

        # The running one stopped within a few steps of its client leaving (it had ~1,200 to go), the queued
        # ones never ran: all the server did after the close was about one step plus the next request's.
        after_close = metric(server, STEPS) - steps_at_close
        assert after_close <= SMALL["steps"] + 5, f"{after_close} steps ran after the clients left"
        assert metric(server, IMAGES) - images_before == 1  # the next request's only: none for nobody
        assert metric(server, 'knsd_requests_total{route="/sdapi/v1/txt2img",status="499"}') == 3


def test_upload_cut_off_is_a_client_gone_not_a_crash(server: str) -> None:
    route = "/sdapi/v1/png-info"
    partial = hold_request(server, route, {"image": "x" * 1000}, missing=500)
    time.sleep(0.2)  # let the server read what was sent; the assertion below waits for the outcome
    partial.close()
    _until(lambda: metric(server, f'knsd_requests_total{{route="{route}",status="499"}}') == 1, 30)
    assert metric(server, f'knsd_requests_total{{route="{route}",status="500"}}') == 0
    assert metric(server, f'knsd_requests_total{{route="{route}",status="499"}}') == 1


def test_streamed_generation_stops_when_its_client_leaves(server: str) -> None:
    with health_watched(server):
        images_before = metric(server, IMAGES)
        stream = hold_request(server, "/sdapi/v1/txt2img", LONG, headers={"Accept": "text/event-stream"})
        assert stream.recv(4096).startswith(b"HTTP/1.1 200")
        _until(lambda: httpx.get(server + "/sdapi/v1/progress").json()["state"]["sampling_step"] >= 1)
        steps_at_close = metric(server, STEPS)
        stream.close()
        _until(lambda: metric(server, "knsd_inflight_requests") == 0)
        r = httpx.post(server + "/sdapi/v1/txt2img", json=SMALL, timeout=120)
        assert r.status_code == 200
        after_close = metric(server, STEPS) - steps_at_close
        assert after_close <= SMALL["steps"] + 5, f"{after_close} steps ran after the client left"
        assert metric(server, IMAGES) - images_before == 1
