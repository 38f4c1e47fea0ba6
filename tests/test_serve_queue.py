"""One generation at a time, a bounded FIFO, 503 with Retry-After beyond it; optional auth."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.helpers import running

JOB = {"prompt": "x", "width": 128, "height": 128, "steps": 25}


class CountingPipeline:
    """The real pipeline, wrapped to record how many calls overlap."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in ("active", "max_active", "calls"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._pipe, name, value)

    def __call__(self, **kwargs: Any) -> Any:
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self._pipe(**kwargs)
        finally:
            with self._lock:
                self.active -= 1


def test_one_generation_at_a_time_fifo_queue(tiny_model, cache: Path) -> None:
    counting = CountingPipeline(tiny_model.txt2img)
    model = replace(tiny_model, txt2img=counting)
    with running(create_app(ServeSettings(cache=cache, max_queue=10), model=model), "/readyz") as url:
        with ThreadPoolExecutor(6) as pool:
            results = list(
                pool.map(
                    lambda i: httpx.post(url + "/sdapi/v1/txt2img", json={**JOB, "seed": i}, timeout=120),
                    range(6),
                )
            )
    assert [r.status_code for r in results] == [200] * 6
    assert counting.calls == 6 + 1  # and the warm-up generation before ready
    assert counting.max_active == 1


def test_queue_full_is_503_with_retry_after(tiny_model, cache: Path) -> None:
    app = create_app(ServeSettings(cache=cache, max_queue=1), model=tiny_model)
    with running(app, "/readyz") as url:
        with ThreadPoolExecutor(5) as pool:
            results = list(
                pool.map(lambda i: httpx.post(url + "/sdapi/v1/txt2img", json=JOB, timeout=120), range(5))
            )
        codes = sorted(r.status_code for r in results)
        # one running + one queued are admitted; the rest are rejected at once
        assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) <= {200, 503}
        rejected = next(r for r in results if r.status_code == 503)
        assert rejected.headers["retry-after"].isdigit()
        assert rejected.json()["detail"] == "pending request queue full"
        assert httpx.get(url + "/readyz").status_code == 200


def test_basic_auth_and_bearer_token(tiny_model, cache: Path) -> None:
    settings = ServeSettings(cache=cache, api_auth=(("alice", "s3cret"),), api_token="tok-123")
    with running(create_app(settings, model=tiny_model), "/readyz") as url:
        small = {"prompt": "x", "width": 64, "height": 64, "steps": 2}
        missing = httpx.post(url + "/sdapi/v1/txt2img", json=small)
        assert missing.status_code == 401 and missing.json()["detail"] == "Not authenticated"
        assert missing.headers["www-authenticate"].startswith("Basic")
        wrong = httpx.post(url + "/sdapi/v1/txt2img", json=small, auth=("alice", "nope"))
        assert wrong.status_code == 401 and wrong.json()["detail"] == "Incorrect username or password"
        assert httpx.post(url + "/sdapi/v1/txt2img", json=small, auth=("alice", "s3cret")).status_code == 200
        bearer = {"Authorization": "Bearer tok-123"}
        assert httpx.get(url + "/sdapi/v1/samplers", headers=bearer).status_code == 200
        assert (
            httpx.get(url + "/sdapi/v1/samplers", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
        assert httpx.get(url + "/sdapi/v1/samplers", headers=garbage).status_code == 401
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(url + open_path).status_code == 200


def test_requests_the_model_cannot_serve_are_refused_before_they_wait(tiny_model, cache: Path) -> None:
    """Model-dependent errors (clip skip past the text encoder's depth, composable diffusion's AND) are
    decided when the request is admitted, as diffusers' check_inputs does: a 422 comes back while another
    request still holds the pipeline, not after it."""
    app = create_app(ServeSettings(cache=cache, max_queue=2, warmup=False), model=tiny_model)
    with running(app, "/readyz") as url, ThreadPoolExecutor(1) as pool:
        long_job = pool.submit(
            httpx.post,
            url + "/sdapi/v1/txt2img",
            json={"prompt": "x", "width": 256, "height": 256, "steps": 150, "n_iter": 8},
            timeout=600,
        )
        while httpx.get(url + "/sdapi/v1/progress").json()["state"]["job_count"] == 0:
            assert not long_job.done(), long_job.result().text
        bad = [
            {"override_settings": {"CLIP_stop_at_last_layers": 12}},  # the tiny text encoder has 2 layers
            {"prompt": "a cat AND a dog"},
        ]
        for fields in bad:
            r = httpx.post(url + "/sdapi/v1/txt2img", json={**JOB, **fields}, timeout=60)
            assert r.status_code == 422, r.text[:300]
            state = httpx.get(url + "/sdapi/v1/progress").json()["state"]
            assert state["job_count"] == 8, "the refusal waited for the running job"
        httpx.post(url + "/sdapi/v1/interrupt")
        assert long_job.result().status_code == 200
