"""The gateway's exact-match result cache, in Redis: fixed seeds hit with the same bytes, random seeds never do,
Cache-Control bypasses, and the cache keeps to its TTL and its bound in bytes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_helpers import (
    SMALL,
    Redis,
    gateway,
    module_redis,
    module_upstream,
    prefix,
    submit,
    wait_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TXT2IMG = "/sdapi/v1/txt2img"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    yield from module_redis(tmp_path_factory)


@pytest.fixture(scope="module")
def upstream(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from module_upstream(cache, tmp_path_factory)


def _generated(upstream: str) -> float:
    """Images the pod has made: a cache hit makes none."""
    text = httpx.get(upstream + "/metrics", timeout=60).text
    return float(re.search(r"^knsd_images_generated_total (\S+)$", text, re.M).group(1))


def test_fixed_seed_repeated_is_a_hit_with_identical_bytes(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        first = httpx.post(gw.url + TXT2IMG, json={**SMALL, "seed": 1234}, timeout=120)
        made = _generated(upstream)
        # The same request written differently: other key order, other spacing.
        again = json.dumps({"seed": 1234, **{k: SMALL[k] for k in reversed(list(SMALL))}}, indent=1)
        second = httpx.post(
            gw.url + TXT2IMG, content=again, headers={"Content-Type": "application/json"}, timeout=60
        )
        job_id = submit(gw.url, {**SMALL, "seed": 1234})
        async_job = wait_job(gw.url, job_id)
        hits = gw.metric("knsd_gateway_cache_requests_total", 'result="hit"')
    assert first.status_code == 200 and first.headers["x-knsd-cache"] == "miss"
    assert second.status_code == 200 and second.headers["x-knsd-cache"] == "hit"
    assert second.content == first.content  # byte for byte
    assert async_job["status"] == "succeeded" and async_job["result"] == first.json()
    assert async_job["attempts"] == 0  # answered from the cache, never sent upstream
    assert _generated(upstream) == made and hits == 2


def test_random_seed_is_never_a_hit(cache: Path, redis: Redis, upstream: str, tmp_path: Path) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        made = _generated(upstream)
        answers = [httpx.post(gw.url + TXT2IMG, json={**SMALL, "seed": -1}, timeout=120) for _ in range(3)]
        answers += [httpx.post(gw.url + TXT2IMG, json=SMALL, timeout=120) for _ in range(2)]  # absent: -1
        uncacheable = gw.metric("knsd_gateway_cache_requests_total", 'result="uncacheable"')
        entries = gw.metric("knsd_gateway_cache_entries")
    assert [a.headers["x-knsd-cache"] for a in answers] == ["miss"] * 5
    assert len({a.json()["images"][0] for a in answers}) == 5  # five random seeds, five images
    assert _generated(upstream) - made == 5 and uncacheable == 5 and entries == 0


def test_no_cache_bypasses_and_no_store_stores_nothing(
    cache: Path, redis: Redis, upstream: str, tmp_path: Path
) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        body = {**SMALL, "seed": 77}
        httpx.post(gw.url + TXT2IMG, json=body, timeout=120)
        assert httpx.post(gw.url + TXT2IMG, json=body, timeout=60).headers["x-knsd-cache"] == "hit"
        made = _generated(upstream)
        fresh = httpx.post(gw.url + TXT2IMG, json=body, headers={"Cache-Control": "no-cache"}, timeout=120)
        assert fresh.headers["x-knsd-cache"] == "miss" and _generated(upstream) == made + 1
        other = {**SMALL, "seed": 78}
        httpx.post(gw.url + TXT2IMG, json=other, headers={"Cache-Control": "no-store"}, timeout=120)
        later = httpx.post(gw.url + TXT2IMG, json=other, timeout=120)
    assert later.headers["x-knsd-cache"] == "miss"  # no-store left nothing behind
    assert _generated(upstream) == made + 3


def test_cache_keeps_to_its_bound_in_bytes(cache: Path, redis: Redis, upstream: str, tmp_path: Path) -> None:
    size = len(httpx.post(upstream + TXT2IMG, json={**SMALL, "seed": 1}, timeout=120).content)
    bound = 2.5 * size  # room for two answers of this size, not three
    flags = ("--redis-prefix", prefix(), "--cache-max-mb", f"{bound / 2**20:.6f}")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        for seed in (1, 2, 3):
            httpx.post(gw.url + TXT2IMG, json={**SMALL, "seed": seed}, timeout=120)
        held = gw.metric("knsd_gateway_cache_bytes")
        newest = httpx.post(gw.url + TXT2IMG, json={**SMALL, "seed": 3}, timeout=60).headers["x-knsd-cache"]
        oldest = httpx.post(gw.url + TXT2IMG, json={**SMALL, "seed": 1}, timeout=120).headers["x-knsd-cache"]
    assert 0 < held <= bound
    assert (newest, oldest) == ("hit", "miss")  # the oldest went first


def test_cache_entries_expire(cache: Path, redis: Redis, upstream: str, tmp_path: Path) -> None:
    flags = ("--redis-prefix", prefix(), "--cache-ttl", "3")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        body = {**SMALL, "seed": 21}
        httpx.post(gw.url + TXT2IMG, json=body, timeout=120)
        fresh = httpx.post(gw.url + TXT2IMG, json=body, timeout=60).headers["x-knsd-cache"]
        time.sleep(3.5)  # past the TTL (the entry was stored before the request above)
        stale = httpx.post(gw.url + TXT2IMG, json=body, timeout=120).headers["x-knsd-cache"]
    assert (fresh, stale) == ("hit", "miss")
