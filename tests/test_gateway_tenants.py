"""Tenants of the gateway: bearer keys (401 otherwise), token buckets in Redis shared by replicas (429 with
Retry-After for one tenant while another is unaffected), limits on queued jobs, and jobs kept apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_helpers import (
    SMALL,
    Redis,
    bearer,
    gateway,
    module_redis,
    module_upstream,
    prefix,
    submit,
    wait_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
KEYS = ("--api-key", "alice=key-alice", "--api-key", "bob=key-bob")
ALICE, BOB = bearer("key-alice"), bearer("key-bob")
TXT2IMG = "/sdapi/v1/txt2img"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    yield from module_redis(tmp_path_factory)


@pytest.fixture(scope="module")
def upstream(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from module_upstream(cache, tmp_path_factory)


def test_requests_need_a_known_key_and_jobs_stay_with_their_tenant(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix(), *KEYS) as gw:
        none = httpx.post(gw.url + TXT2IMG, json=SMALL, timeout=60)
        wrong = httpx.post(gw.url + TXT2IMG, json=SMALL, headers=bearer("key-mallory"), timeout=60)
        listing = httpx.get(gw.url + "/sdapi/v1/samplers", timeout=60)
        job_id = submit(gw.url, SMALL, ALICE)
        theirs = httpx.get(f"{gw.url}/jobs/{job_id}", headers=BOB, timeout=60)
        cancel_theirs = httpx.delete(f"{gw.url}/jobs/{job_id}", headers=BOB, timeout=60)
        mine = wait_job(gw.url, job_id, ALICE)
        open_routes = [
            httpx.get(gw.url + p, timeout=60).status_code for p in ("/healthz", "/readyz", "/metrics")
        ]
        counted = gw.metric(
            "knsd_gateway_requests_total", 'code="202",route="/sdapi/v1/txt2img",tenant="alice"'
        )
    for refused in (none, wrong, listing):
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert theirs.status_code == 404 and cancel_theirs.status_code == 404  # not even said to exist
    assert mine["status"] == "succeeded"
    assert open_routes == [200, 200, 200] and counted == 1


def test_tenant_over_its_rate_gets_429_with_retry_after_while_another_is_unaffected(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    # Two replicas on one Redis: the bucket is theirs together.
    flags = ("--redis-prefix", prefix(), *KEYS, "--rate", "alice=1/m", "--burst", "alice=1")
    with (
        gateway(cache, upstream, redis.url, tmp_path / "a.log", *flags) as a,
        gateway(cache, upstream, redis.url, tmp_path / "b.log", *flags) as b,
    ):
        first = httpx.post(a.url + TXT2IMG, json=SMALL, headers=ALICE, timeout=120)
        over = httpx.post(b.url + TXT2IMG, json=SMALL, headers=ALICE, timeout=60)
        over_async = httpx.post(
            a.url + TXT2IMG, json=SMALL, headers={**ALICE, "Prefer": "respond-async"}, timeout=60
        )
        other = [httpx.post(gw.url + TXT2IMG, json=SMALL, headers=BOB, timeout=120) for gw in (a, b, a)]
        rejected = b.metric("knsd_gateway_rejected_total", 'reason="rate",tenant="alice"')
    assert first.status_code == 200
    for refused in (over, over_async):
        assert refused.status_code == 429 and refused.json()["error"] == "TooManyRequests"
        assert 1 <= int(refused.headers["retry-after"]) <= 60  # one token a minute
        assert "alice" in refused.json()["detail"]
    assert [r.status_code for r in other] == [200, 200, 200]
    assert rejected == 1


def test_tenant_at_its_queued_jobs_limit_gets_429(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    flags = ("--redis-prefix", prefix(), *KEYS, "--max-queued", "alice=2", "--max-inflight", "1")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        long = {**SMALL, "width": 128, "height": 128, "steps": 30}
        held = [submit(gw.url, long, ALICE), submit(gw.url, SMALL, ALICE)]
        third = httpx.post(
            gw.url + TXT2IMG, json=SMALL, headers={**ALICE, "Prefer": "respond-async"}, timeout=60
        )
        bobs = submit(gw.url, SMALL, BOB)  # bob has his own limit (100)
        for job_id in held:
            httpx.delete(f"{gw.url}/jobs/{job_id}", headers=ALICE, timeout=60)
        again = submit(gw.url, SMALL, ALICE)  # cancelling made room
        assert wait_job(gw.url, bobs, BOB)["status"] == "succeeded"
        assert wait_job(gw.url, again, ALICE)["status"] == "succeeded"
    assert third.status_code == 429 and third.headers["retry-after"]
    assert "2 unfinished jobs" in third.json()["detail"]
