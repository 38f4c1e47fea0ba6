"""The workers: take a slot, take a job (a reclaimed one first, else the next in line), send it upstream,
then finish, retry or fail it. One loop per replica; every replica reads the same consumer group.

Retries: a 502, a 503 or a broken connection puts the job back in line after an exponential back-off
(`retry_base` x 2^(n-1), at most `retry_max`, plus up to 10 % jitter); after `max_attempts` such failures it
fails. A failure that finds the breaker open is the upstream's outage, not the job's: it does not count, so
jobs wait out an outage in the queue. Any other answer (a 4xx, a 500) is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from redis.exceptions import RedisError

from knsd.errors import KnsdError
from knsd.gateway.breaker import Breaker
from knsd.gateway.cachekey import key_of, model_id, parse_off_loop, result_model
from knsd.gateway.events import Events
from knsd.gateway.metrics import GatewayMetrics
from knsd.gateway.record import error_body
from knsd.gateway.resultcache import ResultCache
from knsd.gateway.settings import GatewaySettings
from knsd.gateway.slots import Slots
from knsd.gateway.store import Entry, JobStore, Started, Status
from knsd.gateway.upstream import Outcome, ProgressSink, Upstream, json_off_loop

log = logging.getLogger("knsd.gateway")
FORGET_AFTER = 3600.0  # a consumer with nothing pending, silent this long, is a replica that is gone


class Dispatcher:
    def __init__(
        self,
        settings: GatewaySettings,
        store: JobStore,
        slots: Slots,
        breaker: Breaker,
        upstream: Upstream,
        cache: ResultCache,
        events: Events,
        metrics: GatewayMetrics,
    ) -> None:
        self.s = settings
        self.store, self.slots, self.breaker, self.upstream = store, slots, breaker, upstream
        self.cache, self.events, self.metrics = cache, events, metrics
        self.stop = asyncio.Event()  # no new jobs (shutdown)
        self.running: dict[str, asyncio.Task[None]] = {}
        self._why: dict[str, str] = {}  # job id -> why its task was cancelled
        self._breaker_moved = asyncio.Event()
        self._claim_at = 0.0
        self._cursor = "0-0"
        events.on_cancel = lambda job_id: self._interrupt(job_id, "cancelled")
        events.on_slot = slots.freed.set
        events.on_breaker = lambda _state: self._breaker_moved.set()

    # the loop

    async def run(self) -> None:
        upkeep = asyncio.create_task(self._upkeep())
        try:
            while not self.stop.is_set():
                try:
                    await self._take_one()
                except (RedisError, OSError) as exc:
                    log.warning("redis unavailable (%s); retrying in 1s", exc)
                    await asyncio.sleep(1.0)
                    if "NOGROUP" in str(exc):  # a Redis that came back empty (no persistence): start over
                        with contextlib.suppress(RedisError, OSError):
                            await self.store.ensure_group()
        finally:
            upkeep.cancel()

    async def _take_one(self) -> None:
        token = await self.slots.acquire(self.stop)
        if token is None:
            return
        try:
            entry = await self._next(token)
        except BaseException:
            await self.slots.release(token)
            raise
        if entry is None:
            await self.slots.release(token)
            return
        task = asyncio.create_task(self._run(entry, token))
        self.running[entry.job_id] = task
        task.add_done_callback(lambda _t: self.running.pop(entry.job_id, None))

    async def _next(self, token: str) -> Entry | None:
        """The next job to run (a stale one first), once the breaker lets jobs through."""
        if not await self._breaker_closed(token):
            return None
        entry: Entry | None = None
        if time.monotonic() >= self._claim_at:
            entry, self._cursor = await self.store.claim_stale(self.s.reclaim_after, self._cursor)
            if entry is None and self._cursor == "0-0":  # a whole pass over the pending entries: none stale
                self._claim_at = time.monotonic() + self.s.reclaim_after / 4
        if entry is None:
            entry = await self.store.read_new(block_ms=1000)
        # The breaker may have opened while we waited for the entry: hold it (not started) until it closes.
        while entry is not None and not self.stop.is_set():
            if await self._breaker_closed(token):
                return entry
            if not await self.store.hold(entry):
                return None  # another worker took it over
            await self.slots.renew(token)
        return None

    async def _breaker_closed(self, token: str) -> bool:
        """True when jobs may go; else probe (when it is this worker's turn) or wait a little."""
        verdict = await self.breaker.allow(token)
        if verdict.state == "closed":
            return True
        if verdict.state == "probe":
            renew = asyncio.create_task(self._renew(token))  # a probe may wait out a cold start
            try:
                ok = await self.upstream.probe(self.s.probe_path, self.s.probe_timeout)
            finally:
                renew.cancel()
            state = await self.breaker.probed(token, ok)
            log.info("breaker probe of %s%s: %s -> %s", self.upstream.base, self.s.probe_path, ok, state)
            return state == "closed"
        self._breaker_moved.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.05, min(verdict.wait, 1.0))):  # not wait_for (3.11 cancel)
                await self._breaker_moved.wait()
        return False

    async def _renew(self, token: str) -> None:
        while True:
            await asyncio.sleep(self.s.heartbeat)
            with contextlib.suppress(RedisError, OSError):
                await self.slots.renew(token)

    async def _upkeep(self) -> None:
        forget_at = time.monotonic() + 60
        while True:
            try:
                await self.store.promote_due()
                if time.monotonic() >= forget_at:
                    forget_at = time.monotonic() + 60
                    await self.store.forget_idle_consumers(FORGET_AFTER)
            except (RedisError, OSError) as exc:
                log.debug("upkeep: %s", exc)
            except Exception:  # a bug here must not stop retries from coming due
                log.exception("upkeep failed")
            await asyncio.sleep(0.25)

    # one job

    async def _run(self, entry: Entry, token: str) -> None:
        job: Started | None = None
        try:
            job = await self.store.start(entry)
            if job is None:
                return
            if job.reclaimed:
                self.metrics.reclaimed.inc()
                log.info("job %s reclaimed (attempt %d)", entry.job_id, job.attempts)
            if job.failures >= self.s.max_attempts:
                detail = f"gave up after {job.failures} failed attempts (the last: its worker went silent)"
                await self._end(job, "failed", 502, error_body("BadGateway", detail, 502))
                return
            self.metrics.running.inc()
            heartbeat = asyncio.create_task(self._heartbeat(entry, token))
            try:
                outcome = await self.upstream.attempt(
                    job.route, job.body, job.headers, self._sink(entry.job_id)
                )
            finally:
                heartbeat.cancel()
                self.metrics.running.dec()
            self.metrics.attempts.labels(outcome.kind, str(outcome.status)).inc()
            await self._settle(job, outcome)
        except asyncio.CancelledError:
            why = self._why.pop(entry.job_id, "shutdown")
            if job is not None:
                await asyncio.shield(self._abandon(job, why))
            if why == "shutdown":
                raise
        except (RedisError, OSError) as exc:
            # The entry stays pending with us; once we are silent for reclaim_after, another worker takes it.
            log.warning("job %s: redis failed mid-job (%s); it will be reclaimed", entry.job_id, exc)
        finally:
            self._why.pop(entry.job_id, None)
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self.slots.release(token))

    def _sink(self, job_id: str) -> ProgressSink:
        async def progress(data: bytes) -> None:
            with contextlib.suppress(ValueError):
                await json_off_loop(data)  # only valid JSON is spliced into GET /jobs/ID
                if not await self.store.progress(job_id, data):
                    self._interrupt(job_id, "lost")

        return progress

    async def _heartbeat(self, entry: Entry, token: str) -> None:
        while True:
            await asyncio.sleep(self.s.heartbeat)
            try:
                state = await self.store.heartbeat(entry)
                await self.slots.renew(token)
            except (RedisError, OSError) as exc:
                log.debug("heartbeat of %s: %s", entry.job_id, exc)
                continue
            if state != "running":
                self._interrupt(entry.job_id, "cancelled" if state == "cancelled" else "lost")
                return

    def _interrupt(self, job_id: str, why: str) -> None:
        """Cut a running job's upstream request (a cancel, or the job was taken over)."""
        task = self.running.get(job_id)
        if task is not None and not task.done():
            self._why[job_id] = why
            task.cancel()

    async def _settle(self, job: Started, outcome: Outcome) -> None:
        body = outcome.body
        if outcome.kind == "ok":
            try:
                parsed = await json_off_loop(body)
            except ValueError:
                await self.breaker.record(True)
                detail = f"the upstream answered {outcome.status} with a body that is not JSON"
                await self._end(job, "failed", 502, error_body("BadGateway", detail, 502), outcome.pod)
                return
            await self.breaker.record(True)
            await self._remember(job, parsed, body)
            await self._end(job, "succeeded", outcome.status, body, outcome.pod)
            return
        body = await _json_error(outcome)
        if outcome.kind == "final":
            await self.breaker.record(not outcome.upstream_failed)
            await self._end(job, "failed", outcome.status, body, outcome.pod)
            return
        state = await self.breaker.record(False)
        counted = state == "closed"  # the breaker is open: an outage, not this job's fault
        failures = job.failures + int(counted)
        if failures >= self.s.max_attempts:
            await self._end(job, "failed", outcome.status, body, outcome.pod)
            return
        delay = min(self.s.retry_max, self.s.retry_base * 2 ** max(0, failures - 1)) * (
            1 + random.random() / 10
        )
        if await self.store.retry(job.entry, delay, counted, body, outcome.status):
            self.metrics.retries.inc()
            log.info(
                "job %s: upstream %d, retry in %.1fs (%d failed)",
                job.entry.job_id,
                outcome.status,
                delay,
                failures,
            )

    async def _remember(self, job: Started, parsed: object, body: bytes) -> None:
        """Note the model that made the result and, for a deterministic request, cache the result under it."""
        made_by = result_model(parsed)  # A1111's info says; OpenAI's answer does not
        if made_by is not None:
            await self.cache.set_model(made_by, self.s.model_ttl)
        if not job.cacheable:
            return
        model = made_by or await self.cache.model()
        if model is None:
            title = await self.upstream.checkpoint()  # the route is warm: it just answered
            if title is None:
                return
            model = model_id(title)
            await self.cache.set_model(model, self.s.model_ttl)
        with contextlib.suppress(KnsdError):
            data = await parse_off_loop(job.route, job.body)
            await self.cache.put(await key_of(job.route, data, model, job.tag, len(job.body)), body)

    async def _end(self, job: Started, status: Status, http_status: int, body: bytes, pod: str = "") -> None:
        if await self.store.finish(job.entry, status, http_status, body, pod):
            self.metrics.jobs.labels(job.entry.tenant, status).inc()
            self.metrics.job_seconds.labels(status).observe(max(0.0, time.time() - job.created))

    async def _abandon(self, job: Started, why: str) -> None:
        """A cancelled job lets go of its entry; one cut by a shutdown goes back in line for another replica."""
        with contextlib.suppress(RedisError, OSError):
            if why == "shutdown":
                detail = "the gateway replica running it shut down"
                await self.store.retry(job.entry, 0.0, False, error_body("Unavailable", detail, 503), 503)
            elif why == "cancelled":
                await self.store.finish(job.entry, "cancelled", 499, b"null")

    async def drain(self, timeout: float) -> None:
        """Stop taking jobs; let the running ones finish for `timeout`, then hand them back to the queue."""
        self.stop.set()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=timeout)
        for task in list(self.running.values()):
            task.cancel()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=5)


async def _json_error(outcome: Outcome) -> bytes:
    """The upstream's error body if it is JSON, else knsd's shape quoting it."""
    try:
        await json_off_loop(outcome.body)
        return outcome.body
    except ValueError:
        text = outcome.body[:300].decode(errors="replace")
        return error_body("UpstreamError", f"the upstream answered {outcome.status}: {text}", outcome.status)
