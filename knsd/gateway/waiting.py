"""A synchronous request waiting for its job in the shared queue: the plain answer, or the event stream.

The job runs wherever a worker takes it; this handler only watches it (pub/sub hints and a 1 s re-read), keeps
its lease alive (a job whose client left is not run), cancels it when the client goes or the wait times out,
and answers 503 at once if the breaker opens while the job is still in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

from aiohttp import web
from redis.exceptions import RedisError

from knsd.errors import GatewayTimeout, KnsdError, Unavailable
from knsd.gateway.cachekey import STREAMED
from knsd.gateway.state import GatewayState
from knsd.gateway.store import FINAL

LEASE = 15.0  # seconds a waiting request's lease lives without renewal
KEEPALIVE = 15.0
CACHE_HEADER, JOB_HEADER = "X-Knsd-Cache", "X-Knsd-Job"


async def answer(request: web.Request, gw: GatewayState, job_id: str, tenant: str) -> web.StreamResponse:
    """Wait for the job and answer as the upstream did (its status and body)."""
    stream = request.path in STREAMED and wants_events(request.headers.get("Accept"))
    renew = asyncio.create_task(_keep_lease(gw, job_id))
    response: web.StreamResponse | None = None
    done = False
    try:
        if stream:
            response = await _open_stream(request, job_id)
        try:
            final = await _wait(gw, job_id, tenant, response)
        except KnsdError as exc:
            if response is None:
                raise  # not streaming yet: the app's error handler answers
            await response.write(b"event: error\ndata: " + json.dumps(exc.to_json()).encode() + b"\n\n")
            await response.write_eof()
            return response
        done = True
        return await _reply(gw, job_id, final, response)
    finally:
        renew.cancel()
        if not done:  # the client went away, the wait timed out, or the breaker refused it
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(gw.store.cancel(job_id, tenant, "the synchronous request ended first"))
        with contextlib.suppress(RedisError, OSError):
            await asyncio.shield(gw.redis.delete(gw.store.keys.lease(job_id)))


def wants_events(accept: str | None) -> bool:
    """`Accept: text/event-stream` (not refused with q=0), as knsd serve reads it."""
    for part in (accept or "").split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        if media == "text/event-stream":
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


async def _keep_lease(gw: GatewayState, job_id: str) -> None:
    while True:
        with contextlib.suppress(RedisError, OSError):
            await gw.redis.set(gw.store.keys.lease(job_id), 1, px=int(LEASE * 1000))
        await asyncio.sleep(LEASE / 3)


async def _open_stream(request: web.Request, job_id: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", CACHE_HEADER: "miss",
                 JOB_HEADER: job_id, "X-Accel-Buffering": "no"}
    )  # fmt: skip
    await response.prepare(request)
    return response


async def _wait(
    gw: GatewayState, job_id: str, tenant: str, stream: web.StreamResponse | None
) -> dict[str, bytes]:
    deadline = time.monotonic() + gw.settings.sync_timeout
    last_progress: bytes | None = None
    last_write = time.monotonic()
    with gw.events.watch(job_id) as changed:
        while True:
            changed.clear()
            status, progress = await gw.store.fields(job_id, "status", "progress")
            if status is None or status.decode() in FINAL:
                return await gw.store.get(job_id)
            if status == b"queued":
                verdict = await gw.breaker.peek()
                if verdict.state == "open":
                    raise Unavailable(
                        "the upstream is failing (circuit breaker open)",
                        retry_after=max(1, math.ceil(verdict.wait)),
                    )
            if stream is not None:
                if progress and progress != last_progress:
                    await stream.write(b"event: progress\ndata: " + progress + b"\n\n")
                    last_progress, last_write = progress, time.monotonic()
                elif time.monotonic() - last_write > KEEPALIVE:
                    await stream.write(b": keep-alive\n\n")
                    last_write = time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                raise GatewayTimeout(f"no answer within --sync-timeout {gw.settings.sync_timeout:g}s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, left)):  # not wait_for: it can drop a cancellation
                    await changed.wait()


async def _reply(
    gw: GatewayState, job_id: str, job: dict[str, bytes], stream: web.StreamResponse | None
) -> web.StreamResponse:
    await gw.store.delete(job_id)  # a synchronous job is answered once; nothing keeps it
    status = job.get("status", b"").decode()
    code = int(job.get("http_status") or (200 if status == "succeeded" else 500))
    body = job.get("result") if status == "succeeded" else job.get("error")
    body = body or b"null"
    if status == "cancelled":
        code = 409  # cancelled by DELETE /jobs/ID (its id is in X-Knsd-Job) while this request waited
    headers = {
        CACHE_HEADER: "miss",
        JOB_HEADER: job_id,
        "X-Knsd-Attempts": job.get("attempts", b"0").decode(),
    }
    if job.get("pod"):
        headers["X-Knsd-Pod"] = job["pod"].decode()
    if stream is not None:
        kind = b"result" if status == "succeeded" else b"error"
        await stream.write(b"event: " + kind + b"\ndata: " + body + b"\n\n")
        await stream.write_eof()
        return stream
    return web.Response(status=code, body=body, content_type="application/json", headers=headers)
