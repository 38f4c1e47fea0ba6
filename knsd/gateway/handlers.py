"""The gateway's routes: generations (queued, sync or async, cached), jobs, probes and everything else
forwarded as it is. Errors are raised as knsd errors; `app` turns them into responses."""

from __future__ import annotations

import json
import math
import uuid

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from knsd.errors import Conflict, InvalidField, NotFound, PayloadTooLarge, TooManyRequests, Unavailable
from knsd.gateway.breaker import STATE_VALUES
from knsd.gateway.cachekey import CACHEABLE, deterministic, key_of, parse_off_loop
from knsd.gateway.record import job_json
from knsd.gateway.state import GatewayState, state_of
from knsd.gateway.upstream import forwarded_headers
from knsd.gateway.waiting import CACHE_HEADER, JOB_HEADER, LEASE, answer

TENANT: web.RequestKey[str] = web.RequestKey("tenant", str)
TAG_HEADER = "Knative-Serving-Tag"
QUEUE_FULL_RETRY = 5  # seconds suggested to a tenant at its queued-jobs limit
OPTIONS_ALLOWED = frozenset({"sd_model_checkpoint"})


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (before reading it all)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is {request.content_length} bytes, the limit is {limit}")
    out = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        out += chunk
        if len(out) > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    return bytes(out)


def prefers_async(prefer: str | None) -> bool:
    """RFC 7240: `Prefer: respond-async` (among other preferences, any case)."""
    tokens = (part.split(";")[0].split("=")[0].strip().lower() for part in (prefer or "").split(","))
    return "respond-async" in tokens


def cache_directives(value: str | None) -> set[str]:
    return {part.split("=")[0].strip().lower() for part in (value or "").split(",") if part.strip()}


async def generation(request: web.Request) -> web.StreamResponse:
    """A generation: from the cache, or queued as a job and answered when done (or 202 with
    `Prefer: respond-async`)."""
    gw = state_of(request)
    tenant = request[TENANT]
    route = request.path
    body = await read_body(request, gw.settings.max_body_bytes)
    policy = gw.settings.tenants.policy(tenant)
    wait = await gw.limiter.take(tenant, policy)  # before parsing: a tenant over its rate costs no CPU
    if wait is not None:
        gw.metrics.rejected.labels(tenant, "rate").inc()
        raise TooManyRequests(f"tenant {tenant!r} is over its rate of {policy.rate:g}/s", retry_after=wait)
    data = await parse_off_loop(route, body, request.headers.get("Content-Type", "application/json"))
    asynchronous = prefers_async(request.headers.get("Prefer"))
    if not asynchronous:
        verdict = await gw.breaker.peek()
        if verdict.state == "open":
            gw.metrics.rejected.labels(tenant, "breaker").inc()
            raise Unavailable(
                "the upstream is failing (circuit breaker open)", retry_after=max(1, math.ceil(verdict.wait))
            )
    directives = cache_directives(request.headers.get("Cache-Control"))
    tag = request.headers.get(TAG_HEADER, "")
    cacheable = route in CACHEABLE and deterministic(data)
    outcome = "uncacheable"
    if cacheable and directives & {"no-cache", "no-store"}:
        outcome = "bypass"
    elif cacheable:
        outcome = "miss"
        model = await gw.known_model()
        if model is not None:
            hit = await gw.cache.get(await key_of(route, data, model, tag, len(body)))
            if hit is not None:
                gw.metrics.cache.labels("hit").inc()
                return await _from_cache(gw, tenant, route, hit, asynchronous)
    gw.metrics.cache.labels(outcome).inc()
    job_id = uuid.uuid4().hex
    fields = {
        "route": route,
        "body": body,
        "headers": json.dumps(forwarded_headers(request.headers)),
        "sync": int(not asynchronous),
        "cacheable": int(cacheable and "no-store" not in directives),
        "tag": tag,
    }
    if not asynchronous:  # the job runs only while someone waits for it
        await gw.redis.set(gw.store.keys.lease(job_id), 1, px=int(LEASE * 1000))
    refused = await gw.store.submit(job_id, tenant, policy.max_queued, fields)
    if refused is not None:
        gw.metrics.rejected.labels(tenant, "queue").inc()
        raise TooManyRequests(
            f"tenant {tenant!r} has {refused} unfinished jobs, its limit (--max-queued)",
            retry_after=QUEUE_FULL_RETRY,
        )
    gw.metrics.submitted.labels(tenant, "async" if asynchronous else "sync").inc()
    if asynchronous:
        return web.json_response(
            {"id": job_id, "status": "queued"},
            status=202,
            headers={"Location": f"/jobs/{job_id}", "Preference-Applied": "respond-async", CACHE_HEADER: "miss",
                     JOB_HEADER: job_id},
        )  # fmt: skip
    return await answer(request, gw, job_id, tenant)


async def _from_cache(
    gw: GatewayState, tenant: str, route: str, hit: bytes, asynchronous: bool
) -> web.Response:
    """The cached bytes as they were first answered; for an async request, a job born succeeded."""
    if not asynchronous:
        return web.Response(body=hit, content_type="application/json", headers={CACHE_HEADER: "hit"})
    job_id = uuid.uuid4().hex
    await gw.store.done_at_once(
        job_id, {"tenant": tenant, "route": route, "result": hit, "http_status": 200, "cache": "hit"}
    )
    gw.metrics.jobs.labels(tenant, "succeeded").inc()
    return web.json_response(
        {"id": job_id, "status": "succeeded"},
        status=202,
        headers={"Location": f"/jobs/{job_id}", "Preference-Applied": "respond-async", CACHE_HEADER: "hit",
                 JOB_HEADER: job_id},
    )  # fmt: skip


async def _own_job(gw: GatewayState, request: web.Request) -> dict[str, bytes]:
    job_id = request.match_info["job_id"]
    job = await gw.store.get(job_id) if len(job_id) <= 64 else {}
    if not job or job.get("tenant", b"").decode() != request[TENANT]:
        raise NotFound(f"no job {job_id!r}")  # another tenant's job is not even said to exist
    return job


async def get_job(request: web.Request) -> web.Response:
    """`GET /jobs/ID`: status, progress, result or error, attempts and times."""
    job = await _own_job(state_of(request), request)
    return web.Response(body=job_json(job), content_type="application/json")


async def cancel_job(request: web.Request) -> web.Response:
    """`DELETE /jobs/ID`: a queued job leaves the line; a running one is cut upstream (the pod stops)."""
    gw = state_of(request)
    job = await _own_job(gw, request)
    job_id = job.get("id", b"").decode() or request.match_info["job_id"]
    outcome, status = await gw.store.cancel(job_id, request[TENANT], "cancelled by DELETE /jobs/ID")
    if outcome == "missing":
        raise NotFound(f"no job {job_id!r}")
    if outcome == "final":
        raise Conflict(f"job {job_id} already {status}: only a queued or running job can be cancelled")
    gw.metrics.jobs.labels(request[TENANT], "cancelled").inc()
    return web.Response(body=job_json(await gw.store.get(job_id)), content_type="application/json")


async def set_options(request: web.Request) -> web.StreamResponse:
    """`POST /sdapi/v1/options`: settings are per pod, so only `sd_model_checkpoint` passes (checked there)."""
    gw = state_of(request)
    body = await read_body(request, gw.settings.max_body_bytes)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        others = sorted(set(data) - OPTIONS_ALLOWED)
        if others:
            raise InvalidField(
                others[0],
                "absent: settings are per pod, and the gateway spreads requests over pods; send them as "
                "override_settings in each request",
                data[others[0]],
            )
    return await _forwarded(gw, request, body)


async def forward(request: web.Request) -> web.StreamResponse:
    """Any other route, to the upstream as it is."""
    gw = state_of(request)
    return await _forwarded(gw, request, await read_body(request, gw.settings.max_body_bytes))


async def _forwarded(gw: GatewayState, request: web.Request, body: bytes) -> web.Response:
    tenant = request[TENANT]
    policy = gw.settings.tenants.policy(tenant)
    wait = await gw.limiter.take(tenant, policy)
    if wait is not None:
        gw.metrics.rejected.labels(tenant, "rate").inc()
        raise TooManyRequests(f"tenant {tenant!r} is over its rate of {policy.rate:g}/s", retry_after=wait)
    status, headers, payload = await gw.upstream.forward(
        request.method, request.path_qs, dict(request.headers), body
    )
    return web.Response(status=status, body=payload, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready while Redis answers (the gateway holds nothing itself)."""
    gw = state_of(request)
    try:
        await gw.redis.ping()
    except (RedisError, OSError) as exc:
        return web.json_response({"status": "redis unreachable", "detail": str(exc)}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    gw = state_of(request)
    m = gw.metrics
    try:
        stats = await gw.store.counts()
        m.queue_depth.set(stats.get("queued", 0))
        for tenant in gw.settings.tenants.names():
            m.queued.labels(tenant).set((await gw.store.counts(tenant)).get("queued", 0))
        m.inflight.set(await gw.slots.in_flight())
        m.breaker.set(STATE_VALUES.get((await gw.breaker.peek()).state, 0))
        entries, size = await gw.cache.size()
        m.cache_entries.set(entries)
        m.cache_bytes.set(size)
        m.redis_up.set(1)
    except (RedisError, OSError):
        m.redis_up.set(0)
    m.inflight_limit.set(gw.settings.max_inflight)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
