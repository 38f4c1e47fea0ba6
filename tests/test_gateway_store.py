"""The job scripts against a real redis-server, one transition at a time: who may start, finish, retry or cancel
a job, what a takeover does to the attempt counter, and the clean-up of consumers that are gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from knsd.gateway.keys import Keys
from knsd.gateway.store import JobStore
from tests.gateway_helpers import Redis, module_redis, prefix

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    yield from module_redis(tmp_path_factory)


def _stores(url: str, *consumers: str) -> tuple[aioredis.Redis, list[JobStore]]:
    client = aioredis.Redis.from_url(url)
    keys = Keys(prefix())
    return client, [JobStore(client, keys, name, result_ttl=60) for name in consumers]


FIELDS = {"route": "/sdapi/v1/txt2img", "body": b'{"prompt": "x"}', "headers": "{}", "sync": 0, "cacheable": 0,
          "tag": ""}  # fmt: skip


def test_a_job_goes_to_one_worker_and_only_it_may_finish_it(redis: Redis) -> None:
    async def scenario() -> None:
        client, (a, b) = _stores(redis.url, "a", "b")
        await a.ensure_group()
        assert await a.submit("j1", "t", 10, FIELDS) is None
        entry = await a.read_new(100)
        assert entry is not None and entry.job_id == "j1" and await b.read_new(50) is None
        started = await a.start(entry)
        assert started is not None and started.attempts == 1 and started.body == FIELDS["body"]
        assert await b.start(entry) is None  # not b's entry
        assert not await b.finish(entry, "succeeded", 200, b"{}")
        assert await a.counts("t") == {"queued": 0, "running": 1}
        assert await a.finish(entry, "succeeded", 200, b'{"images": []}', "pod-1")
        job = await a.get("j1")
        assert job["status"] == b"succeeded" and job["result"] == b'{"images": []}' and "body" not in job
        assert await a.counts("t") == {"queued": 0, "running": 0} and await client.xlen(a.keys.stream) == 0
        assert 0 < await client.pttl(a.keys.job("j1")) <= 60_000
        await client.aclose()

    asyncio.run(scenario())


def test_a_silent_workers_job_is_taken_over_and_the_attempt_counts(redis: Redis) -> None:
    async def scenario() -> None:
        client, (a, b) = _stores(redis.url, "a", "b")
        await a.ensure_group()
        await a.submit("j2", "t", 10, FIELDS)
        entry = await a.read_new(100)
        assert entry is not None and await a.start(entry) is not None
        assert (await b.claim_stale(10.0))[0] is None  # a is not silent yet
        await asyncio.sleep(0.2)
        taken, _ = await b.claim_stale(0.1)
        assert taken is not None and taken.entry == entry.entry
        again = await b.start(taken)
        assert again is not None and again.reclaimed and again.attempts == 2 and again.failures == 1
        assert await a.heartbeat(entry) == "lost" and not await a.finish(entry, "succeeded", 200, b"{}")
        assert not await a.retry(entry, 0, True, b"{}", 502)
        assert await b.retry(taken, 0.0, True, b'{"error": "BadGateway"}', 502)
        assert (await b.get("j2"))["status"] == b"queued" and await b.promote_due() == 1
        await client.aclose()

    asyncio.run(scenario())


def test_cancel_takes_a_queued_job_out_of_line_and_a_final_one_stays(redis: Redis) -> None:
    async def scenario() -> None:
        client, (a,) = _stores(redis.url, "a")
        await a.ensure_group()
        await a.submit("j3", "t", 10, FIELDS)
        assert await a.cancel("j3", "other-tenant", "x") == ("missing", "")
        assert await a.cancel("j3", "t", "x") == ("cancelled", "queued")
        assert await a.cancel("j3", "t", "x") == ("final", "cancelled")
        assert await a.read_new(50) is None  # its entry left the stream
        assert (await a.counts("t")).get("queued") == 0
        await client.aclose()

    asyncio.run(scenario())


def test_tenant_limit_counts_queued_and_running(redis: Redis) -> None:
    async def scenario() -> None:
        client, (a,) = _stores(redis.url, "a")
        await a.ensure_group()
        assert await a.submit("j4", "t", 2, FIELDS) is None
        entry = await a.read_new(100)
        assert entry is not None and await a.start(entry) is not None
        assert await a.submit("j5", "t", 2, FIELDS) is None
        assert await a.submit("j6", "t", 2, FIELDS) == 2  # one running + one queued = the limit
        assert await a.submit("j7", "u", 2, FIELDS) is None  # another tenant
        await client.aclose()

    asyncio.run(scenario())


def test_consumers_that_hold_nothing_are_forgotten(redis: Redis) -> None:
    async def scenario() -> None:
        client, (a, b, c) = _stores(redis.url, "a", "b", "c")
        await a.ensure_group()
        await a.submit("j8", "t", 10, FIELDS)
        await a.submit("j8b", "t", 10, FIELDS)
        assert await b.read_new(100) is not None  # b holds an entry
        done = await c.read_new(100)  # c held one, and is done with it
        assert done is not None and await c.start(done) is not None
        assert await c.finish(done, "succeeded", 200, b"{}")
        await asyncio.sleep(0.1)
        assert await a.forget_idle_consumers(0.05) == 1
        names = {info["name"] for info in await client.xinfo_consumers(a.keys.stream, "workers")}
        assert names == {b"b"}
        await client.aclose()

    asyncio.run(scenario())


def test_a_worker_holding_an_entry_keeps_it_until_someone_takes_it(redis: Redis, tmp_path: Path) -> None:
    async def scenario() -> None:
        client, (a, b) = _stores(redis.url, "a", "b")
        await a.ensure_group()
        await a.submit("j9", "t", 10, FIELDS)
        entry = await a.read_new(100)
        assert entry is not None
        await asyncio.sleep(0.2)
        assert await a.hold(entry)  # resets its idle time
        assert (await b.claim_stale(0.15))[0] is None
        await asyncio.sleep(0.2)
        taken, _ = await b.claim_stale(0.15)
        assert taken is not None and not await a.hold(entry) and await a.start(entry) is None
        await client.aclose()

    asyncio.run(scenario())
