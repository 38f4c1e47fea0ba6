"""The route: every request goes through the activator to a pod, and comes back with the pod's answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web

from knsd.local.activator import BufferFull, BufferTimeout
from knsd.local.pods import Pod
from knsd.local.revision import Revision
from knsd.local.split import REVISION_HEADER, TAG_HEADER
from knsd.service.limits import MAX_BODY_BYTES
from knsd.service.spec import ServiceSpec

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
POD_HEADER = "X-Knsd-Pod"
log = logging.getLogger("knsd.local")


class Route(Protocol):
    """What the route needs of the runtime (`knsd.local.runtime.Runtime`), which imports this module."""

    spec: ServiceSpec
    session: aiohttp.ClientSession

    def pick(self, tag: str | None, pinned_pod: str | None) -> Revision | None: ...

    def count(self, status: int, started: float, revision: str | None = None) -> None: ...


def _error(status: int, error: str, detail: str) -> web.Response:
    body = {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}"}
    return web.json_response(body, status=status)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Knative's three request timers (queue-proxy's and the activator's timeout handler), from arrival:
    the whole request, the first byte of the answer, and the longest silence (before the first byte too)."""

    started: float
    total: float
    response_start: float
    idle: float

    @classmethod
    def of(cls, spec: ServiceSpec, started: float) -> Deadlines:
        return cls(
            started, spec.request_timeout, spec.effective_response_start_timeout, spec.effective_idle_timeout
        )

    def left(self, now: float, last_byte: float | None) -> float:
        """Seconds until the next timer fires; `last_byte` None while nothing has been sent to the client."""
        ends = [self.started + self.total, (self.started if last_byte is None else last_byte) + self.idle]
        if last_byte is None:
            ends.append(self.started + self.response_start)
        return min(ends) - now


async def forward(request: web.Request, runtime: Route) -> web.StreamResponse:
    """Buffer at the activator until a pod has a free slot, then proxy the request to it; the answer is
    passed on chunk by chunk as the pod sends it (a stream of events arrives as it happens)."""
    started = time.monotonic()
    body = await read_body(request, MAX_BODY_BYTES)
    if body is None:
        runtime.count(413, started)
        # Refused before the rest is read; the connection closes rather than drain the remainder.
        too_large = _error(
            413, "PayloadTooLarge", f"request body is over the pods' limit of {MAX_BODY_BYTES} bytes"
        )
        too_large.force_close()
        return too_large
    affinity = runtime.spec.effective_affinity == "cookie"
    pinned = request.cookies.get(runtime.spec.cookie_name) if affinity else None
    # Chosen after the body is read, with no await until the activator has the request: a revision
    # being retired sees it as buffered or in flight, never loses it.
    revision = runtime.pick(request.headers.get(TAG_HEADER), pinned)
    if revision is None:
        return _error(503, "Unavailable", "no revision is serving")
    spec = revision.spec
    deadlines = Deadlines.of(spec, started)
    if revision.poke_needed():
        revision.poke()
        asyncio.create_task(revision.tick())
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    if "Host" in request.headers:  # as Knative's activator and queue-proxy: the pod sees the route's Host
        headers["Host"] = request.headers["Host"]
    response: web.StreamResponse | None = None
    status = 502
    for attempt in range(2):  # a second time only when the first pod was gone before it was reached
        try:
            pod = await revision.activator.acquire(pinned, deadlines.left(time.monotonic(), None))
        except BufferFull:
            runtime.count(503, started, revision.name)
            return _error(503, "Unavailable", "pending request queue full")
        except BufferTimeout:
            runtime.count(504, started, revision.name)
            return _error(504, "GatewayTimeout", "activator request timeout")
        except ConnectionAbortedError:
            runtime.count(503, started, revision.name)
            return _error(503, "Unavailable", "the service is being deleted")
        response, status, again = None, 502, False
        try:
            # A client that leaves cancels this handler (handler_cancellation): leaving the block closes the
            # connection to the pod, which gives up the request's work there as well.
            async with contextlib.AsyncExitStack() as stack:
                async with asyncio.timeout(deadlines.left(time.monotonic(), None)):
                    upstream = await stack.enter_async_context(
                        runtime.session.request(
                            request.method,
                            pod.url + request.path_qs,
                            headers=headers,
                            data=body,
                            timeout=aiohttp.ClientTimeout(total=None),
                            allow_redirects=False,
                        )
                    )
                status = upstream.status
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                response = web.StreamResponse(status=status, headers=out_headers)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                response.headers[POD_HEADER] = pod.name
                response.headers[REVISION_HEADER] = revision.name
                if spec.effective_affinity == "cookie":
                    response.set_cookie(
                        spec.cookie_name, pod.name, max_age=spec.cookie_timeout, path="/", httponly=True
                    )
                await response.prepare(request)
                last_byte = time.monotonic()
                while True:
                    wait = deadlines.left(time.monotonic(), last_byte)
                    async with asyncio.timeout(max(wait, 0.001)):  # not wait_for: it can drop a cancellation
                        chunk = await upstream.content.readany()
                    if not chunk:
                        break
                    await response.write(chunk)
                    last_byte = time.monotonic()
                await response.write_eof()
        except TimeoutError:
            status = 504
            if response is None:
                runtime.count(504, started, revision.name)
                return _error(504, "GatewayTimeout", f"request timeout (pod {pod.name})")
            # The answer had started: as queue-proxy, the timer ends the response where it is.
            log.warning("request to pod %s timed out after its answer started; cut", pod.name)
        except (aiohttp.ClientError, OSError) as exc:
            if response is None and attempt == 0 and await _gone_before_it_connected(pod, exc):
                # Nothing reached the pod (it died before the runtime noticed): send the request elsewhere.
                log.warning("pod %s is gone; its request goes to another pod", pod.name)
                revision.activator.remove_pod(pod)
                again = True
            elif response is None:
                runtime.count(502, started, revision.name)
                detail = f"pod {pod.name} failed while handling the request: {type(exc).__name__}: {exc}"
                failed = _error(502, "BadGateway", detail)
                failed.headers[POD_HEADER], failed.headers[REVISION_HEADER] = pod.name, revision.name
                return failed
            else:
                log.warning("request to pod %s ended early: %s: %s", pod.name, type(exc).__name__, exc)
        finally:
            revision.activator.release(pod)
        if not again:
            break
    assert response is not None  # every way out of the loop without an answer returned one
    runtime.count(status, started, revision.name)
    return response


async def _gone_before_it_connected(pod: Pod, exc: BaseException) -> bool:
    """Whether a connection to `pod` was refused because its process has exited (waited for a moment:
    the runtime reaps it), so the request never reached it."""
    if not isinstance(exc, aiohttp.ClientConnectorError):
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await pod.process.wait()
    return pod.process.returncode is not None


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` bytes: from Content-Length before
    anything is read, else counted while reading (a chunked body), so an oversized one is never held."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2), status=status, content_type="application/json")
