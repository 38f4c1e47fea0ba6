"""`knsd gateway` in front of a real `knsd serve` (tiny model), its state in a real `redis-server`: async jobs,
synchronous requests through the same queue, cancel, final 4xx, bounds, forwarding and probes."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_helpers import (
    SMALL,
    Redis,
    gateway,
    job,
    module_redis,
    module_upstream,
    prefix,
    redis_server,
    submit,
    wait_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LONG = {"prompt": "a long one", "width": 128, "height": 128, "steps": 30, "seed": 1}


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    yield from module_redis(tmp_path_factory)


@pytest.fixture(scope="module")
def upstream(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from module_upstream(cache, tmp_path_factory)


def _requests(upstream: str) -> float:
    """txt2img requests the pod has received, whatever became of them."""
    text = httpx.get(upstream + "/metrics", timeout=60).text
    pattern = r'^knsd_requests_total\{[^}]*route="/sdapi/v1/txt2img"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_async_job_gets_202_location_and_the_result_a_direct_request_gets(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        body = {**SMALL, "seed": 42}
        job_id = submit(gw.url, body)
        done = wait_job(gw.url, job_id)
        direct = httpx.post(upstream + "/sdapi/v1/txt2img", json=body, timeout=120).json()
    assert done["status"] == "succeeded" and done["attempts"] == 1 and done["http_status"] == 200
    assert done["result"]["images"] == direct["images"]  # the same seed through the queue: the same pixels
    assert done["created"] <= done["started"] <= done["finished"]
    assert done["route"] == "/sdapi/v1/txt2img" and done["id"] == job_id


def test_sync_request_is_answered_as_the_pod_answers_and_leaves_no_job(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        r = httpx.post(gw.url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 7}, timeout=120)
        assert r.status_code == 200 and len(r.json()["images"]) == 1
        assert r.headers["x-knsd-cache"] == "miss" and r.headers["x-knsd-attempts"] == "1"
        assert (
            httpx.get(f"{gw.url}/jobs/{r.headers['x-knsd-job']}", timeout=60).status_code == 404
        )  # answered once, gone
        bad = httpx.post(gw.url + "/sdapi/v1/txt2img", json={**SMALL, "width": 500}, timeout=120)
        openai = httpx.post(
            gw.url + "/v1/images/generations", json={"prompt": "x", "size": "64x64", "steps": 2}, timeout=120
        )
    assert bad.status_code == 422 and bad.json()["field"] == "width"  # the pod's own answer, passed through
    assert openai.status_code == 200 and len(openai.json()["data"]) == 1


def test_a_4xx_is_final_and_never_retried(cache: Path, redis: Redis, upstream: str, tmp_path: Path) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        done = wait_job(gw.url, submit(gw.url, {**SMALL, "steps": 9999}))
        assert gw.metric("knsd_gateway_retries_total") == 0
    assert done["status"] == "failed" and done["http_status"] == 422 and done["attempts"] == 1
    assert done["error"]["field"] == "steps" and "result" not in done


def test_delete_cancels_a_queued_job_which_never_reaches_the_pod(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    flags = ("--redis-prefix", prefix(), "--max-inflight", "1")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        before = _requests(upstream)
        running = submit(gw.url, LONG)
        wait_job(gw.url, running, until=("running",), timeout=60)
        queued = submit(gw.url, {**SMALL, "seed": 3})
        assert job(gw.url, queued)["status"] == "queued"  # the one slot is taken
        r = httpx.delete(f"{gw.url}/jobs/{queued}", timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert httpx.delete(f"{gw.url}/jobs/{queued}", timeout=60).status_code == 409  # already final
        # The running one is cut upstream: the gateway stops waiting for it and its slot frees.
        cut = httpx.delete(f"{gw.url}/jobs/{running}", timeout=60)
        assert cut.status_code == 200 and cut.json()["status"] == "cancelled"
        after = wait_job(gw.url, submit(gw.url, {**SMALL, "seed": 4}))
        assert gw.metric("knsd_gateway_running_jobs") == 0
    cancelled = job_of(redis, queued)
    assert after["status"] == "succeeded"
    assert cancelled["status"] == "cancelled" and cancelled["attempts"] == "0" and "started" not in cancelled
    # The pod got the long one (cut when cancelled) and the last one: never the one cancelled in line.
    assert _requests(upstream) - before == 2


def job_of(server: Redis, job_id: str) -> dict[str, str]:
    """A job's hash as redis-cli sees it (any prefix)."""
    keys = [k for k in server.cli("--scan", "--pattern", f"*:job:{job_id}").split() if k]
    assert len(keys) == 1, keys
    lines = server.cli("HGETALL", keys[0]).splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=False))


def test_in_flight_bound_is_shared_by_sync_and_async(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    flags = ("--redis-prefix", prefix(), "--max-inflight", "1")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        first = submit(gw.url, {**SMALL, "steps": 40, "width": 128, "height": 128})
        results: list[httpx.Response] = []
        sync = threading.Thread(
            target=lambda: results.append(httpx.post(gw.url + "/sdapi/v1/txt2img", json=SMALL, timeout=180))
        )
        sync.start()
        later = submit(gw.url, {**SMALL, "seed": 11})
        seen_inflight = set()
        while not results:
            seen_inflight.add(gw.metric("knsd_gateway_inflight_requests"))
            sync.join(0.05)
        sync.join()
        assert wait_job(gw.url, later)["status"] == "succeeded"
        assert wait_job(gw.url, first)["status"] == "succeeded"
    assert results[0].status_code == 200  # queued in Redis behind the async job, not refused
    assert seen_inflight <= {0.0, 1.0}


def test_bounds_and_bad_input_are_clear_4xx(cache: Path, redis: Redis, upstream: str, tmp_path: Path) -> None:
    flags = ("--redis-prefix", prefix(), "--max-body-mb", "0.01")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        big = httpx.post(gw.url + "/sdapi/v1/txt2img", json={"prompt": "x" * 20000}, timeout=60)
        broken = httpx.post(
            gw.url + "/sdapi/v1/txt2img",
            content=b"{nope",
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        stream = httpx.post(
            gw.url + "/v1/images/generations", json={"prompt": "x", "stream": True}, timeout=60
        )
        clip = httpx.post(gw.url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=60)
        title = httpx.get(upstream + "/sdapi/v1/options", timeout=60).json()["sd_model_checkpoint"]
        same_model = httpx.post(gw.url + "/sdapi/v1/options", json={"sd_model_checkpoint": title}, timeout=60)
        missing = httpx.get(gw.url + "/jobs/does-not-exist", timeout=60)
        listed = httpx.get(gw.url + "/sdapi/v1/sd-models", timeout=60)
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    assert broken.status_code == 400 and "JSON" in broken.json()["detail"]
    assert stream.status_code == 422 and stream.json()["field"] == "stream"
    assert clip.status_code == 422 and clip.json()["field"] == "CLIP_stop_at_last_layers"
    assert same_model.status_code == 200
    assert missing.status_code == 404
    assert (
        listed.status_code == 200
        and listed.json() == httpx.get(upstream + "/sdapi/v1/sd-models", timeout=60).json()
    )


def test_readyz_follows_redis_and_healthz_does_not(cache: Path, upstream: str, tmp_path: Path) -> None:
    with redis_server(tmp_path / "own-redis") as own:
        with gateway(cache, upstream, own.url, tmp_path / "gw.log") as gw:
            assert httpx.get(gw.url + "/readyz", timeout=60).status_code == 200
            own.stop()
            down = httpx.get(gw.url + "/readyz", timeout=60)
            queued = httpx.post(
                gw.url + "/sdapi/v1/txt2img", json=SMALL, headers={"Prefer": "respond-async"}, timeout=60
            )
            assert httpx.get(gw.url + "/healthz", timeout=60).status_code == 200
            assert gw.metric("knsd_gateway_redis_up") == 0
    assert down.status_code == 503 and down.json()["status"] == "redis unreachable"
    assert queued.status_code == 503 and queued.headers["retry-after"] and "Redis" in queued.json()["detail"]


def test_sync_request_accepting_an_event_stream_gets_events(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        headers = {"Accept": "text/event-stream"}
        body = {**LONG, "seed": 8}
        with httpx.stream("POST", gw.url + "/sdapi/v1/txt2img", json=body, headers=headers, timeout=300) as r:
            kind = r.headers["content-type"]
            text = r.read().decode()
        refused = httpx.post(gw.url + "/sdapi/v1/txt2img", content=b"[]", headers=headers, timeout=60)
    assert kind.startswith("text/event-stream")
    events = [block for block in text.split("\n\n") if block.startswith("event:")]
    assert events[-1].startswith("event: result\ndata: ") and len(events) == text.count("event: ")
    assert events[:-1] and all(e.startswith("event: progress\n") for e in events[:-1])  # relayed from the pod
    steps = {json.loads(e.split("data: ", 1)[1])["state"]["sampling_steps"] for e in events[:-1]}
    assert steps == {LONG["steps"]}
    result = json.loads(events[-1].split("data: ", 1)[1])
    assert len(result["images"]) == 1
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("application/json")


def test_every_gateway_metric_the_dashboard_uses_is_exported(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    from tests.test_grafana import DASHBOARD, exprs, metric_names

    flags = ("--redis-prefix", prefix(), "--api-key", "alice=ka", "--rate", "alice=1/m")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        alice = {"Authorization": "Bearer ka"}
        assert httpx.post(
            gw.url + "/sdapi/v1/txt2img", json={**SMALL, "seed": 5}, headers=alice, timeout=120
        ).is_success
        assert (
            httpx.post(gw.url + "/sdapi/v1/txt2img", json=SMALL, headers=alice, timeout=60).status_code == 429
        )
        text = httpx.get(gw.url + "/metrics", timeout=60).text
    exported = {
        line.split()[0].split("{")[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    used = set().union(*(metric_names(e) for e in exprs(json.loads(DASHBOARD.read_text())["panels"])))
    gateway_used = {name for name in used if name.startswith("knsd_gateway_")}
    assert len(gateway_used) >= 12 and gateway_used - exported == set()
    assert 'knsd_gateway_jobs_total{status="succeeded",tenant="alice"} 1.0' in text
    assert 'knsd_gateway_rejected_total{reason="rate",tenant="alice"} 1.0' in text
    assert "knsd_gateway_queue_depth 0.0" in text and "knsd_gateway_breaker_state 0.0" in text


def test_progress_is_relayed_from_the_streamed_upstream_into_the_job(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        job_id = submit(gw.url, LONG)
        seen = []
        while not seen or seen[-1]["status"] not in ("succeeded", "failed"):
            seen.append(job(gw.url, job_id))
            time.sleep(0.05)
        running = [s["progress"] for s in seen if s["status"] == "running" and s["progress"]]
    assert seen[-1]["status"] == "succeeded"
    assert running and all(p["state"]["sampling_steps"] == LONG["steps"] for p in running)
    assert all(0 <= p["progress"] <= 1 for p in running)
    assert [p["state"]["sampling_step"] for p in running] == sorted(
        p["state"]["sampling_step"] for p in running
    )


def _edit_image() -> bytes:
    import io

    from PIL import Image

    image = Image.new("RGBA", (64, 64), (200, 60, 30, 255))
    image.paste((0, 0, 0, 0), (16, 16, 48, 48))  # the transparent square is what the edit repaints
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_openai_edits_are_jobs_through_the_same_queue(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    """`/v1/images/edits` (multipart) is queued like the JSON routes: answered synchronously to OpenAI's own
    client with the pod's pixels, or as an async job; a streamed edit is refused by name."""
    import openai

    fields = {"prompt": "a cat", "size": "64x64", "steps": "2", "seed": "5"}
    files = {"image": ("in.png", _edit_image(), "image/png")}
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        result = client.images.edit(
            image=("in.png", _edit_image()), prompt="a cat", size="64x64", extra_body={"steps": 2, "seed": 5}
        )
        queued = httpx.post(
            gw.url + "/v1/images/edits",
            data=fields,
            files=files,
            headers={"Prefer": "respond-async"},
            timeout=60,
        )
        assert queued.status_code == 202, queued.text
        done = wait_job(gw.url, queued.json()["id"])
        streamed = httpx.post(
            gw.url + "/v1/images/edits", data={**fields, "stream": "true"}, files=files, timeout=60
        )
        direct = httpx.post(upstream + "/v1/images/edits", data=fields, files=files, timeout=120)
    assert result.data is not None and len(result.data) == 1
    assert done["status"] == "succeeded" and done["route"] == "/v1/images/edits"
    assert done["result"]["data"][0]["b64_json"] == direct.json()["data"][0]["b64_json"]
    assert result.data[0].b64_json == direct.json()["data"][0]["b64_json"]
    assert streamed.status_code == 422 and streamed.json()["field"] == "stream"
