"""Faults around the gateway: a gateway killed mid-job (another reclaims it), the upstream killed mid-job and
gone for a while (the breaker answers 503 at once, queued jobs wait and succeed once it is back), and a Redis
restart (its append-only file keeps the queue)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_helpers import (
    SMALL,
    Gateway,
    Redis,
    gateway,
    module_upstream,
    prefix,
    redis_server,
    serve_on,
    stop_process,
    submit,
    wait_job,
)
from tests.helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
LONG = {"prompt": "a long one", "width": 128, "height": 128, "steps": 30, "seed": 1}
TXT2IMG = "/sdapi/v1/txt2img"


@pytest.fixture(scope="module")
def upstream(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from module_upstream(cache, tmp_path_factory)


def test_gateway_killed_mid_job_loses_nothing(cache: Path, upstream: str, tmp_path: Path) -> None:
    flags = ("--redis-prefix", prefix(), "--reclaim-after", "2", "--max-inflight", "1")
    with redis_server(tmp_path / "redis") as redis:
        first = Gateway(cache, upstream, redis.url, tmp_path / "a.log", *flags)
        running = submit(first.url, LONG)
        wait_job(first.url, running, until=("running",), timeout=60)
        behind = submit(first.url, {**SMALL, "seed": 5})
        first.kill(signal.SIGKILL)  # mid-job: no drain, no goodbye; its slot and its entry are left behind
        with gateway(cache, upstream, redis.url, tmp_path / "b.log", *flags) as second:
            done = wait_job(second.url, running, timeout=300)
            after = wait_job(second.url, behind, timeout=300)
            reclaimed = second.metric("knsd_gateway_reclaimed_total")
    assert done["status"] == "succeeded" and done["attempts"] == 2  # the attempt counter went up on reclaim
    assert after["status"] == "succeeded" and after["attempts"] == 1
    assert reclaimed == 1


def test_upstream_gone_breaker_503s_at_once_and_a_job_queued_meanwhile_succeeds_once_back(
    cache: Path, tmp_path: Path
) -> None:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    flags = ("--redis-prefix", prefix(), "--breaker-failures", "2", "--breaker-open", "1", "--retry-base", "0.2",
             "--probe-timeout", "5")  # fmt: skip
    pods = [serve_on(cache, port, tmp_path / "serve-1.log")]
    try:
        with (
            redis_server(tmp_path / "redis") as redis,
            gateway(cache, origin, redis.url, tmp_path / "gw.log", *flags) as gw,
        ):
            assert httpx.post(gw.url + TXT2IMG, json=SMALL, timeout=120).status_code == 200
            interrupted = submit(gw.url, LONG)
            wait_job(gw.url, interrupted, until=("running",), timeout=60)
            stop_process(pods[0])  # the upstream dies mid-job (SIGKILL), and stays away for a while
            failing = httpx.post(gw.url + TXT2IMG, json=SMALL, timeout=120)  # its failures open the breaker
            attempts = gw.metric("knsd_gateway_upstream_attempts_total", 'code="502",outcome="retry"')
            fast = httpx.post(gw.url + TXT2IMG, json=SMALL, timeout=120)
            queued = submit(gw.url, {**SMALL, "seed": 9})
            assert wait_job(gw.url, queued, timeout=5, until=("queued",))["attempts"] == 0
            assert gw.metric("knsd_gateway_breaker_state") in (1, 2)  # open, or half-open while probing
            untouched = gw.metric("knsd_gateway_upstream_attempts_total", 'code="502",outcome="retry"')
            pods.append(serve_on(cache, port, tmp_path / "serve-2.log"))  # back
            back = wait_job(gw.url, queued, timeout=300)
            resumed = wait_job(gw.url, interrupted, timeout=300)
            closed = gw.metric("knsd_gateway_breaker_state")
    finally:
        for pod in pods:
            stop_process(pod)
    for refused in (failing, fast):
        assert refused.status_code == 503 and "circuit breaker open" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
    assert attempts >= 2 and untouched == attempts  # the refused request and the queued job sent nothing
    assert back["status"] == "succeeded" and back["attempts"] == 1
    assert resumed["status"] == "succeeded" and resumed["attempts"] >= 2
    assert closed == 0


def test_queue_survives_a_redis_restart(cache: Path, upstream: str, tmp_path: Path) -> None:
    flags = ("--redis-prefix", prefix(), "--reclaim-after", "2", "--max-inflight", "1")
    redis = Redis(tmp_path / "redis", aof=True)
    redis.start()
    try:
        with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
            running = submit(gw.url, LONG)
            wait_job(gw.url, running, until=("running",), timeout=60)
            queued = [submit(gw.url, {**SMALL, "seed": s}) for s in (1, 2)]
            redis.stop()  # SIGTERM: the append-only file is flushed
            assert httpx.get(gw.url + "/readyz", timeout=60).status_code == 503
            redis.start()  # same port, same directory
            results = [wait_job(gw.url, j, timeout=300) for j in (running, *queued)]
            assert httpx.get(gw.url + "/readyz", timeout=60).status_code == 200
    finally:
        redis.stop()
    assert [r["status"] for r in results] == ["succeeded"] * 3


def test_a_redis_that_comes_back_empty_is_set_up_again(cache: Path, upstream: str, tmp_path: Path) -> None:
    redis = Redis(tmp_path / "redis", aof=False)
    redis.start()
    try:
        with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
            assert wait_job(gw.url, submit(gw.url, SMALL))["status"] == "succeeded"
            redis.stop()
            redis.start()  # no persistence: the stream and its consumer group are gone
            after = wait_job(gw.url, submit(gw.url, {**SMALL, "seed": 3}), timeout=120)
            sync = httpx.post(gw.url + TXT2IMG, json={**SMALL, "seed": 4}, timeout=120)
    finally:
        redis.stop()
    assert after["status"] == "succeeded" and sync.status_code == 200
