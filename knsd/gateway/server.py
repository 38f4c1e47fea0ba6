"""Run the gateway: connect Redis and the upstream, serve HTTP, run the workers; on SIGTERM stop taking
requests and jobs, let running jobs finish for `--drain-timeout`, hand the rest back to the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from knsd.gateway.app import create_app
from knsd.gateway.breaker import Breaker
from knsd.gateway.dispatcher import Dispatcher
from knsd.gateway.events import Events
from knsd.gateway.keys import Keys
from knsd.gateway.metrics import GatewayMetrics
from knsd.gateway.ratelimit import RateLimiter
from knsd.gateway.resultcache import ResultCache
from knsd.gateway.settings import GatewaySettings
from knsd.gateway.slots import Slots
from knsd.gateway.state import GatewayState
from knsd.gateway.store import JobStore
from knsd.gateway.upstream import Upstream

log = logging.getLogger("knsd.gateway")


def connect(url: str) -> aioredis.Redis:
    """A Redis client that reconnects: a command on a connection Redis closed (a restart) is sent again."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
    )


def build_state(
    settings: GatewaySettings, client: aioredis.Redis, session: aiohttp.ClientSession
) -> GatewayState:
    """Every adapter over one Redis client and one HTTP session; this process's consumer name is unique."""
    consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    keys = Keys(settings.prefix)
    s = settings
    store = JobStore(client, keys, consumer, s.result_ttl)
    cache = ResultCache(client, keys, s.cache_ttl, s.cache_max_bytes, s.cache_item_max_bytes)
    breaker = Breaker(client, keys, s.breaker_failures, s.breaker_open, s.probe_timeout + 30)
    slots = Slots(client, keys, consumer, s.max_inflight, max(s.reclaim_after, 3 * s.heartbeat))
    upstream = Upstream(s.upstream, session, s.max_result_bytes, s.upstream_timeout, s.upstream_headers)
    events = Events(client, keys.events)
    metrics = GatewayMetrics()
    dispatcher = Dispatcher(s, store, slots, breaker, upstream, cache, events, metrics)
    return GatewayState(s, client, store, cache, RateLimiter(client, keys), breaker, slots, upstream, events,
                        metrics, dispatcher)  # fmt: skip


async def _work(state: GatewayState, stop: asyncio.Event) -> None:
    """The workers, once Redis answers (until then /readyz says 503 and requests get 503s)."""
    while not stop.is_set():
        try:
            await state.store.ensure_group()
            break
        except (RedisError, OSError) as exc:
            log.warning("waiting for redis at %s: %s", state.settings.redis_url, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
    if not stop.is_set():
        await state.dispatcher.run()


async def serve(settings: GatewaySettings, port_file: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code."""
    client = connect(settings.redis_url)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))
    state = build_state(settings, client, session)
    runner = web.AppRunner(create_app(state), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        await runner.cleanup()
        await session.close()
        await client.aclose()
        return 1
    port = _bound_port(runner) or settings.port
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deaf = asyncio.Event()  # pub/sub stays on while running jobs drain (cancels, waiters)
    tasks = [asyncio.create_task(state.events.run(deaf)), asyncio.create_task(_work(state, stop))]
    log.info("gateway on http://%s:%d -> %s (redis %s, %d in flight)", settings.host, port, settings.upstream,
             _redacted(settings.redis_url), settings.max_inflight)  # fmt: skip
    await stop.wait()
    log.info("shutting down: no new requests; running jobs get %gs", settings.drain_timeout)
    await site.stop()
    await state.dispatcher.drain(settings.drain_timeout)
    await runner.cleanup()
    deaf.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    await client.aclose()
    log.info("stopped")
    return 0


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def _redacted(url: str) -> str:
    """A Redis URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest
