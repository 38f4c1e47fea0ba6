"""The route: every request goes through the activator to a pod, and comes back with the pod's answer."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Protocol

import aiohttp
from aiohttp import web

from knsd.local.activator import BufferFull, BufferTimeout
from knsd.local.revision import Revision

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
POD_HEADER = "X-Knsd-Pod"


class Route(Protocol):
    """What the route needs of the runtime (`knsd.local.runtime.Runtime`), which imports this module."""

    session: aiohttp.ClientSession

    def serving_revision(self) -> Revision | None: ...

    def count(self, status: int, started: float) -> None: ...


def _error(status: int, error: str, detail: str) -> web.Response:
    body = {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}"}
    return web.json_response(body, status=status)


async def forward(request: web.Request, runtime: Route) -> web.StreamResponse:
    """Buffer at the activator until a pod has a free slot, then proxy the request to it."""
    started = time.monotonic()
    revision = runtime.serving_revision()
    if revision is None:
        return _error(503, "Unavailable", "no revision is serving")
    spec = revision.spec
    timeout = float(spec.timeout or 300)
    body = await request.read()
    pinned = request.cookies.get(spec.cookie_name) if spec.effective_affinity == "cookie" else None
    if revision.poke_needed():
        revision.poke()
        asyncio.create_task(revision.tick())
    try:
        pod = await revision.activator.acquire(pinned, timeout)
    except BufferFull:
        runtime.count(503, started)
        return _error(503, "Unavailable", "pending request queue full")
    except BufferTimeout:
        runtime.count(504, started)
        return _error(504, "GatewayTimeout", "activator request timeout")
    except ConnectionAbortedError:
        runtime.count(503, started)
        return _error(503, "Unavailable", "the service is being deleted")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    remaining = max(0.001, timeout - (time.monotonic() - started))
    try:
        async with runtime.session.request(
            request.method,
            pod.url + request.path_qs,
            headers=headers,
            data=body,
            timeout=aiohttp.ClientTimeout(total=remaining),
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    except TimeoutError:
        runtime.count(504, started)
        return _error(504, "GatewayTimeout", f"request timeout after {timeout:g}s (pod {pod.name})")
    except (aiohttp.ClientError, OSError) as exc:
        runtime.count(502, started)
        detail = f"pod {pod.name} failed while handling the request: {type(exc).__name__}: {exc}"
        return _error(502, "BadGateway", detail)
    finally:
        revision.activator.release(pod)
    response = web.Response(status=status, body=payload, headers=out_headers)
    response.headers[POD_HEADER] = pod.name
    if spec.effective_affinity == "cookie":
        response.set_cookie(spec.cookie_name, pod.name, max_age=spec.cookie_timeout, path="/", httponly=True)
    runtime.count(status, started)
    return response


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2), status=status, content_type="application/json")
