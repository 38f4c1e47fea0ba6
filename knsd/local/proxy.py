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
from knsd.local.split import REVISION_HEADER, TAG_HEADER
from knsd.service.spec import ServiceSpec

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
POD_HEADER = "X-Knsd-Pod"


class Route(Protocol):
    """What the route needs of the runtime (`knsd.local.runtime.Runtime`), which imports this module."""

    spec: ServiceSpec
    session: aiohttp.ClientSession

    def pick(self, tag: str | None, pinned_pod: str | None) -> Revision | None: ...

    def count(self, status: int, started: float, revision: str | None = None) -> None: ...


def _error(status: int, error: str, detail: str) -> web.Response:
    body = {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}"}
    return web.json_response(body, status=status)


async def forward(request: web.Request, runtime: Route) -> web.StreamResponse:
    """Buffer at the activator until a pod has a free slot, then proxy the request to it."""
    started = time.monotonic()
    body = await request.read()
    affinity = runtime.spec.effective_affinity == "cookie"
    pinned = request.cookies.get(runtime.spec.cookie_name) if affinity else None
    # Chosen after the body is read, with no await until the activator has the request: a revision
    # being retired sees it as buffered or in flight, never loses it.
    revision = runtime.pick(request.headers.get(TAG_HEADER), pinned)
    if revision is None:
        return _error(503, "Unavailable", "no revision is serving")
    spec = revision.spec
    timeout = float(spec.timeout or 300)
    if revision.poke_needed():
        revision.poke()
        asyncio.create_task(revision.tick())
    try:
        pod = await revision.activator.acquire(pinned, timeout)
    except BufferFull:
        runtime.count(503, started, revision.name)
        return _error(503, "Unavailable", "pending request queue full")
    except BufferTimeout:
        runtime.count(504, started, revision.name)
        return _error(504, "GatewayTimeout", "activator request timeout")
    except ConnectionAbortedError:
        runtime.count(503, started, revision.name)
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
        runtime.count(504, started, revision.name)
        return _error(504, "GatewayTimeout", f"request timeout after {timeout:g}s (pod {pod.name})")
    except (aiohttp.ClientError, OSError) as exc:
        runtime.count(502, started, revision.name)
        detail = f"pod {pod.name} failed while handling the request: {type(exc).__name__}: {exc}"
        failed = _error(502, "BadGateway", detail)
        failed.headers[POD_HEADER], failed.headers[REVISION_HEADER] = pod.name, revision.name
        return failed
    finally:
        revision.activator.release(pod)
    response = web.Response(status=status, body=payload, headers=out_headers)
    response.headers[POD_HEADER] = pod.name
    response.headers[REVISION_HEADER] = revision.name
    if spec.effective_affinity == "cookie":
        response.set_cookie(spec.cookie_name, pod.name, max_age=spec.cookie_timeout, path="/", httponly=True)
    runtime.count(status, started, revision.name)
    return response


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2), status=status, content_type="application/json")
