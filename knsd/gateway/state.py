"""What the gateway's handlers share: its settings and its adapters to Redis and the upstream."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp import web

from knsd.gateway.breaker import Breaker
from knsd.gateway.dispatcher import Dispatcher
from knsd.gateway.events import Events
from knsd.gateway.metrics import GatewayMetrics
from knsd.gateway.ratelimit import RateLimiter
from knsd.gateway.resultcache import ResultCache
from knsd.gateway.settings import GatewaySettings
from knsd.gateway.slots import Slots
from knsd.gateway.store import JobStore
from knsd.gateway.upstream import Upstream


@dataclass
class GatewayState:
    settings: GatewaySettings
    redis: aioredis.Redis
    store: JobStore
    cache: ResultCache
    limiter: RateLimiter
    breaker: Breaker
    slots: Slots
    upstream: Upstream
    events: Events
    metrics: GatewayMetrics
    dispatcher: Dispatcher
    _model_fetch: asyncio.Task[None] | None = field(default=None, repr=False)

    async def known_model(self) -> str | None:
        """The upstream's model for cache keys, as last seen; when unknown, learn it in the background
        (never making a request wait for a route that may be scaled to zero)."""
        model = await self.cache.model()
        if model is None and (self._model_fetch is None or self._model_fetch.done()):
            self._model_fetch = asyncio.create_task(self._learn_model())
        return model

    async def _learn_model(self) -> None:
        from knsd.gateway.cachekey import model_id

        title = await self.upstream.checkpoint()
        if title is not None:
            with contextlib.suppress(Exception):
                await self.cache.set_model(model_id(title), self.settings.model_ttl)


STATE: web.AppKey[GatewayState] = web.AppKey("gateway", GatewayState)


def state_of(request: web.Request) -> GatewayState:
    return request.app[STATE]
