"""The gateway's aiohttp application: the route table, tenants' keys, and errors turned into responses in one
place (knsd's error shape, `Retry-After` on 429 and 503, `WWW-Authenticate` on 401)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from knsd.errors import KnsdError, TooManyRequests, Unauthorized, Unavailable
from knsd.gateway import handlers
from knsd.gateway.cachekey import JOB_ROUTES
from knsd.gateway.handlers import TENANT
from knsd.gateway.state import STATE, GatewayState

log = logging.getLogger("knsd.gateway")
OPEN = frozenset({"/healthz", "/readyz", "/metrics"})  # no key needed: probes and the scrape
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: KnsdError) -> web.Response:
    headers = {}
    if isinstance(exc, (TooManyRequests, Unavailable)):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="knsd gateway"'
    body = json.dumps(exc.to_json()).encode()
    return web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)


def _route_label(request: web.Request) -> str:
    """A bounded label: the matched route's template, or `forwarded` for everything passed on."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    return canonical if canonical and "{tail" not in canonical else "forwarded"


@web.middleware
async def _gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    gw = request.app[STATE]
    tenant = "-"
    try:
        if request.path not in OPEN:
            found = gw.settings.tenants.authenticate(request.headers.get("Authorization"))
            if found is None:
                gw.metrics.rejected.labels("-", "auth").inc()
                raise Unauthorized("a valid API key is needed: Authorization: Bearer KEY")
            tenant = found
            request[TENANT] = tenant
        response = await handler(request)
    except KnsdError as exc:
        response = error_response(exc)
    except RedisError as exc:
        log.warning("redis: %s", exc)
        response = error_response(Unavailable(f"Redis is unavailable: {exc}", retry_after=1))
    if request.path != "/metrics":
        gw.metrics.requests.labels(tenant, _route_label(request), str(response.status)).inc()
    return response


def create_app(state: GatewayState) -> web.Application:
    """The application over a ready state (Redis client, upstream session, dispatcher)."""
    # Bodies are read by the handlers against --max-body-mb; aiohttp's own cap is set above it.
    app = web.Application(middlewares=[_gateway], client_max_size=state.settings.max_body_bytes + 1)
    app[STATE] = state
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/jobs/{job_id}", handlers.get_job)
    app.router.add_delete("/jobs/{job_id}", handlers.cancel_job)
    for route in sorted(JOB_ROUTES):
        app.router.add_post(route, handlers.generation)
    app.router.add_post("/sdapi/v1/options", handlers.set_options)
    app.router.add_route("*", "/{tail:.*}", handlers.forward)
    return app
