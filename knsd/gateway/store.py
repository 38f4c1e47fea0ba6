"""Jobs in Redis: submit, hand to a worker, heartbeat, progress, finish, retry, cancel (each one script)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from knsd.gateway import scripts
from knsd.gateway.keys import GROUP, Keys

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL = ("succeeded", "failed", "cancelled")
LEFT = json.dumps({"error": "Cancelled", "detail": "the client of this synchronous request went away"})


@dataclass(frozen=True, slots=True)
class Entry:
    """A stream entry handed to this worker."""

    entry: str
    job_id: str
    tenant: str


@dataclass(frozen=True, slots=True)
class Started:
    """A job this worker now runs (attempt `attempts`; `reclaimed` from a silent worker)."""

    entry: Entry
    attempts: int
    reclaimed: bool
    failures: int
    route: str
    body: bytes
    headers: dict[str, str]
    cacheable: bool  # a deterministic request whose result may be cached (unless `no-store`)
    tag: str  # the Knative-Serving-Tag it was sent with (part of the cache key)
    created: float


def as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


class JobStore:
    """One gateway's view of the jobs: the scripts bound to its Redis client and key names."""

    def __init__(self, client: aioredis.Redis, keys: Keys, consumer: str, result_ttl: float) -> None:
        self.redis = client
        self.keys = keys
        self.consumer = consumer
        self.ttl_ms = int(result_ttl * 1000)
        self._submit = client.register_script(scripts.SUBMIT)
        self._done = client.register_script(scripts.DONE_AT_ONCE)
        self._start = client.register_script(scripts.START)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._hold = client.register_script(scripts.HOLD)
        self._progress = client.register_script(scripts.PROGRESS)
        self._finish = client.register_script(scripts.FINISH)
        self._retry = client.register_script(scripts.RETRY)
        self._promote = client.register_script(scripts.PROMOTE)
        self._cancel = client.register_script(scripts.CANCEL)
        self._forget = client.register_script(scripts.FORGET_CONSUMER)

    async def ensure_group(self) -> None:
        """The stream and its consumer group, created once (from the start, so nothing queued is skipped)."""
        try:
            await self.redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def submit(
        self, job_id: str, tenant: str, max_unfinished: int, fields: dict[str, Any]
    ) -> int | None:
        """Queue a job; None when it is in line, else the tenant's unfinished count that refused it."""
        k = self.keys
        flat = [item for pair in fields.items() for item in pair]
        ok, detail = await self._submit(
            keys=[k.job(job_id), k.stream, k.tenant(tenant), k.stats],
            args=[job_id, tenant, max_unfinished, *flat],
        )
        return None if int(ok) == 1 else int(detail)

    async def done_at_once(self, job_id: str, fields: dict[str, Any]) -> None:
        flat = [item for pair in fields.items() for item in pair]
        await self._done(keys=[self.keys.job(job_id)], args=[self.ttl_ms, "id", job_id, *flat])

    async def start(self, entry: Entry) -> Started | None:
        """Take the job of `entry`; None when there is nothing to run (cancelled, stale, client gone)."""
        k = self.keys
        reply = await self._start(
            keys=[k.job(entry.job_id), k.tenant(entry.tenant), k.stats, k.stream, k.lease(entry.job_id)],
            args=[GROUP, entry.entry, self.consumer, k.events, self.ttl_ms, LEFT, entry.job_id],
        )
        if _text(reply[0]) != "run":
            return None
        _, attempts, reclaimed, failures, route, body, headers, cacheable, tag, created = reply
        return Started(
            entry,
            int(attempts),
            int(reclaimed) == 1,
            int(failures or 0),
            _text(route),
            bytes(body or b""),
            json.loads(headers) if headers else {},
            _text(cacheable) == "1",
            _text(tag),
            float(created or 0),
        )

    async def hold(self, entry: Entry) -> bool:
        """Keep an entry not started yet; False when another worker has taken it over."""
        reply = await self._hold(keys=[self.keys.stream], args=[GROUP, self.consumer, entry.entry])
        return int(reply) == 1

    async def heartbeat(self, entry: Entry) -> str:
        """'running' while the job is this worker's; 'cancelled', 'lost' (reclaimed) or its end state else."""
        reply = await self._heartbeat(
            keys=[self.keys.job(entry.job_id), self.keys.stream], args=[GROUP, self.consumer, entry.entry]
        )
        return _text(reply)

    async def progress(self, job_id: str, progress: bytes) -> bool:
        reply = await self._progress(
            keys=[self.keys.job(job_id)], args=[self.consumer, progress, self.keys.events, job_id]
        )
        return int(reply) == 1

    async def finish(
        self, entry: Entry, status: Status, http_status: int, payload: bytes, pod: str = ""
    ) -> bool:
        """Record the outcome; False when the job is no longer this worker's (cancelled or reclaimed)."""
        k = self.keys
        field = "result" if status == "succeeded" else "error"
        reply = await self._finish(
            keys=[k.job(entry.job_id), k.tenant(entry.tenant), k.stats, k.stream],
            args=[GROUP, entry.entry, self.consumer, status, http_status, field, payload, self.ttl_ms,
                  k.events, entry.job_id, pod],
        )  # fmt: skip
        return int(reply) == 1

    async def retry(self, entry: Entry, delay: float, counted: bool, error: bytes, http_status: int) -> bool:
        k = self.keys
        reply = await self._retry(
            keys=[k.job(entry.job_id), k.tenant(entry.tenant), k.stats, k.stream, k.delayed],
            args=[GROUP, entry.entry, self.consumer, int(delay * 1000), int(counted), error, http_status,
                  k.events, entry.job_id],
        )  # fmt: skip
        return int(reply) == 1

    async def promote_due(self, limit: int = 100) -> int:
        """Move retries that are due back into the stream; how many moved."""
        now = await self.now_ms()
        due = await self.redis.zrangebyscore(self.keys.delayed, "-inf", now, start=0, num=limit)
        moved = 0
        for raw in due:
            job_id = _text(raw)
            moved += int(
                await self._promote(
                    keys=[self.keys.delayed, self.keys.stream, self.keys.job(job_id)], args=[job_id]
                )
            )
        return moved

    async def cancel(self, job_id: str, tenant: str, detail: str) -> tuple[str, str]:
        """('cancelled', was) | ('final', status) | ('missing', '')."""
        k = self.keys
        error = json.dumps({"error": "Cancelled", "detail": detail})
        reply = await self._cancel(
            keys=[k.job(job_id), k.tenant(tenant), k.stats, k.stream, k.delayed],
            args=[tenant, GROUP, self.ttl_ms, error, k.events, job_id],
        )
        return _text(reply[0]), _text(reply[1]) if len(reply) > 1 else ""

    async def get(self, job_id: str) -> dict[str, bytes]:
        raw = await self.redis.hgetall(self.keys.job(job_id))
        return {_text(key): as_bytes(value) for key, value in raw.items()}

    async def fields(self, job_id: str, *names: str) -> list[bytes | None]:
        values = await self.redis.hmget(self.keys.job(job_id), list(names))
        return [None if v is None else as_bytes(v) for v in values]

    async def delete(self, job_id: str) -> None:
        await self.redis.delete(self.keys.job(job_id))

    async def read_new(self, block_ms: int) -> Entry | None:
        """One entry never delivered before, waiting up to `block_ms` for it."""
        reply: Any = await self.redis.xreadgroup(
            GROUP, self.consumer, {self.keys.stream: ">"}, count=1, block=block_ms
        )
        for _stream, entries in reply or []:
            for entry_id, data in entries:
                return _entry(entry_id, data)
        return None

    async def claim_stale(self, min_idle: float, cursor: str = "0-0") -> tuple[Entry | None, str]:
        """One entry whose worker has been silent for `min_idle` seconds (XAUTOCLAIM), and the next cursor."""
        reply = await self.redis.xautoclaim(
            self.keys.stream, GROUP, self.consumer, int(min_idle * 1000), start_id=cursor, count=1
        )
        cursor = _text(reply[0])
        for entry_id, data in reply[1]:
            if data:
                return _entry(entry_id, data), cursor
            # The entry was deleted (a job finished or cancelled meanwhile): nothing to run.
            await self.redis.xack(self.keys.stream, GROUP, entry_id)
        return None, cursor

    async def forget_idle_consumers(self, idle: float) -> int:
        """Remove consumers (gone replicas) idle for `idle` seconds that hold no entry."""
        forgotten = 0
        for info in await self.redis.xinfo_consumers(self.keys.stream, GROUP):
            name = _text(info.get("name"))
            if (
                name != self.consumer
                and int(info.get("pending", 0)) == 0
                and int(info.get("idle", 0)) > idle * 1000
            ):
                forgotten += int(await self._forget(keys=[self.keys.stream], args=[GROUP, name])) > 0
        return forgotten

    async def counts(self, tenant: str | None = None) -> dict[str, int]:
        key = self.keys.tenant(tenant) if tenant else self.keys.stats
        raw = await self.redis.hgetall(key)
        return {_text(k): int(v) for k, v in raw.items()}

    async def now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


def _entry(entry_id: Any, data: dict[Any, Any]) -> Entry:
    return Entry(_text(entry_id), _text(data.get(b"job")), _text(data.get(b"tenant")))
