"""HTTP to the upstream route: one job attempt (streamed or plain JSON), the breaker's probe, the model's
title, and plain forwarding of the other routes. Outcomes are classified here, once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp

from knsd.gateway.cachekey import STREAMED
from knsd.gateway.record import error_body
from knsd.gateway.sse import EventParser, EventStreamTooLarge

Kind = Literal["ok", "final", "retry"]
RETRYABLE = frozenset({502, 503})  # a pod that died (502) or refused (503): Knative never retries these
BREAKER_FAILURES = frozenset({502, 503, 504})
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
# Not sent upstream: the tenant's key, the gateway's own preferences, what the gateway sets itself, and the
# browser's Origin (the gateway is the pods' client: its tenants' keys, not cookies, authorize a request).
NOT_FORWARDED = HOP_BY_HOP | {
    "origin",
    "authorization",
    "cookie",
    "prefer",
    "cache-control",
    "accept",
    "accept-encoding",
}
POD_HEADER, REVISION_HEADER = "X-Knsd-Pod", "X-Knsd-Revision"
_STATUS = re.compile(r"^\s*(\d{3})\b")
ProgressSink = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: `ok` (a 2xx body), `final` (an answer not to retry), `retry`."""

    kind: Kind
    status: int
    body: bytes
    pod: str = ""

    @property
    def upstream_failed(self) -> bool:
        """Counts against the breaker: no answer, or the route's 502/503/504."""
        return self.status in BREAKER_FAILURES


def forwarded_headers(headers: dict[str, str] | object) -> dict[str, str]:
    """The client's headers worth sending on (Content-Type, Knative-Serving-Tag, ...)."""
    items = headers.items() if hasattr(headers, "items") else []
    return {k: v for k, v in items if k.lower() not in NOT_FORWARDED}


def _classify(status: int, body: bytes, pod: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome("ok", status, body, pod)
    return Outcome("retry" if status in RETRYABLE else "final", status, body, pod)


def _event_status(data: bytes) -> int:
    """The HTTP status an `event: error` stands for: its `status`, else the one in A1111's `errors: "422: ..."`;
    500 if it names none."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return 500
    if not isinstance(parsed, dict):
        return 500
    status = parsed.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return status
    match = _STATUS.match(str(parsed.get("errors", "")))
    return int(match.group(1)) if match else 500


class Upstream:
    def __init__(
        self,
        base: str,
        session: aiohttp.ClientSession,
        max_result_bytes: int,
        timeout: float,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.base = base.rstrip("/")
        self.session = session
        self.max_result_bytes = max_result_bytes
        self.timeout = timeout
        self.extra_headers = dict(extra_headers)

    async def attempt(
        self, route: str, body: bytes, headers: dict[str, str], on_progress: ProgressSink
    ) -> Outcome:
        """POST one job; progress events go to `on_progress` as they come."""
        sent = {
            **headers,
            **self.extra_headers,
            "Content-Type": headers.get("Content-Type", "application/json"),
        }
        sent["Accept"] = "text/event-stream, application/json" if route in STREAMED else "application/json"
        pod = ""
        try:
            async with self.session.post(
                self.base + route,
                data=body,
                headers=sent,
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=30),
                allow_redirects=False,
            ) as response:
                pod = response.headers.get(POD_HEADER, "")
                if response.content_type == "text/event-stream" and response.status == 200:
                    return await self._events(response, pod, on_progress)
                payload = await self._read(response)
                return _classify(response.status, payload, pod)
        except TimeoutError:
            detail = f"no answer from the upstream within {self.timeout:g}s"
            return Outcome("final", 504, error_body("GatewayTimeout", detail, 504), pod)
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"upstream connection failed: {type(exc).__name__}: {exc}"
            return Outcome("retry", 502, error_body("BadGateway", detail, 502), pod)
        except _TooLarge as exc:
            return Outcome("final", 502, error_body("BadGateway", str(exc), 502), pod)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        out = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            out += chunk
            if len(out) > self.max_result_bytes:
                raise _TooLarge(f"the upstream's answer is larger than {self.max_result_bytes} bytes")
        return bytes(out)

    async def _events(self, response: aiohttp.ClientResponse, pod: str, on_progress: ProgressSink) -> Outcome:
        parser = EventParser(self.max_result_bytes)
        try:
            async for chunk in response.content.iter_chunked(1 << 16):
                for event, data in parser.feed(chunk):
                    if event == "progress":
                        await on_progress(data)
                    elif event in ("result", "error"):
                        await _drain(response)
                        if event == "result":
                            return Outcome("ok", 200, data, pod)
                        return _classify(_event_status(data), data, pod)
        except EventStreamTooLarge as exc:
            raise _TooLarge(str(exc)) from None
        detail = "the upstream's event stream ended without a result (the pod went away?)"
        return Outcome("retry", 502, error_body("BadGateway", detail, 502), pod)

    async def probe(self, path: str, timeout: float) -> bool:
        """Is the upstream back? Any answer below 500 (knsd serve's /readyz: 200 once a model is loaded)."""
        try:
            async with self.session.get(
                self.base + path, headers=self.extra_headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                await response.read()
                return response.status < 500
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def checkpoint(self, timeout: float = 10.0) -> str | None:
        """The loaded model's title (A1111's `sd_model_checkpoint`), None when the upstream cannot say."""
        try:
            async with self.session.get(
                self.base + "/sdapi/v1/options",
                headers=self.extra_headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                if response.status != 200:
                    return None
                data = json.loads(await response.read())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None
        title = data.get("sd_model_checkpoint") if isinstance(data, dict) else None
        return title if isinstance(title, str) and title else None

    async def forward(
        self, method: str, path_qs: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Any other route, as it is: (status, headers, body); a broken connection is a 502."""
        try:
            async with self.session.request(
                method,
                self.base + path_qs,
                headers={**forwarded_headers(headers), **self.extra_headers},
                data=body or None,
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=30),
                allow_redirects=False,
            ) as response:
                payload = await self._read(response)
                out = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
                return response.status, out, payload
        except TimeoutError:
            detail = f"no answer from the upstream within {self.timeout:g}s"
            return 504, {"Content-Type": "application/json"}, error_body("GatewayTimeout", detail, 504)
        except (aiohttp.ClientError, OSError, _TooLarge) as exc:
            detail = f"upstream request failed: {type(exc).__name__}: {exc}"
            return 502, {"Content-Type": "application/json"}, error_body("BadGateway", detail, 502)


async def _drain(response: aiohttp.ClientResponse, limit: float = 5.0) -> None:
    """Read a stream to its end after its last event, so it ends cleanly (not as a client that went away)."""
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with asyncio.timeout(limit):
            while await response.content.readany():
                pass


class _TooLarge(Exception):
    pass


async def json_off_loop(data: bytes) -> object:
    """Parse JSON, in a worker thread when it is large (a response of images is megabytes)."""
    if len(data) < 65536:
        return json.loads(data)
    return await asyncio.to_thread(json.loads, data)
