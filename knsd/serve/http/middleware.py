"""ASGI middleware: optional API auth, cross-site and Host checks, and per-route request metrics."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from knsd.errors import BadRequest, Forbidden, KnsdError, Unauthorized
from knsd.serve.metrics import ServeMetrics

REVISION = os.environ.get("K_REVISION", "").encode("latin-1", "replace")
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AuthMiddleware:
    """HTTP Basic (`--api-auth user:pass,...`, like A1111) and/or a bearer token; probes stay open."""

    def __init__(self, app: ASGIApp, users: tuple[tuple[str, str], ...], token: str | None) -> None:
        self.app = app
        self.users = users
        self.token = token

    def _allowed(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.token is not None:
            return secrets.compare_digest(value.strip().encode(), self.token.encode())
        if scheme.lower() == "basic" and self.users:
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return any(
                secrets.compare_digest(user.encode(), u.encode())
                & secrets.compare_digest(password.encode(), p.encode())
                for u, p in self.users
            )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or not (self.users or self.token):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        header = headers.get("authorization")
        if header is not None and self._allowed(header):
            await self.app(scope, receive, send)
            return
        error = Unauthorized("Incorrect username or password" if header else "Not authenticated")
        challenge = b'Basic realm="knsd"' if self.users else b'Bearer realm="knsd"'
        await _send_error(send, error, [(b"www-authenticate", challenge)])


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _host(value: str) -> str:
    """host[:port] lower-cased, without the scheme's default port (80 for http, 443 for https)."""
    value = value.strip().lower()
    for default in (":80", ":443"):
        if value.endswith(default):
            return value[: -len(default)]
    return value


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header (its name, without the port) matches `--allowed-hosts` (`*.example.com`
    for subdomains, `*` for any)."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host  # [::1] keeps its colons
    name = name.strip().lower()
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class SiteMiddleware:
    """Requests from other sites are refused: a state-changing request (any method but GET, HEAD,
    OPTIONS) whose `Origin` is not this server's own (its Host, or the X-Forwarded-Host a proxy set) is a
    403, so a page elsewhere cannot drive the API through a visitor's browser (browsers always send Origin
    on such requests, and cannot add X-Forwarded-Host without asking first). With `--allowed-hosts`, a Host
    outside the list is a 400 (DNS rebinding); the probes stay open."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        error: KnsdError | None = None
        if self.allowed_hosts and not host_allowed(host, self.allowed_hosts):
            error = BadRequest(f"Host {host[:100]!r} is not one of this server's --allowed-hosts")
        elif scope["method"] not in SAFE_METHODS and "origin" in headers:
            origin = headers["origin"]
            own = {_host(host)} | {_host(h) for h in headers.get("x-forwarded-host", "").split(",")[:1]}
            if _host(origin.partition("://")[2]) not in own - {""}:
                error = Forbidden(f"cross-site request refused: Origin {origin[:100]!r} is not this server")
        if error is None:
            await self.app(scope, receive, send)
            return
        await _send_error(send, error)


async def _send_error(send: Send, error: KnsdError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error.to_json()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Counts requests by route and status and times them; unknown paths are grouped as "other"."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        status: dict[str, Any] = {"code": 500}
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                # A1111 sends the processing time on every response; clients and knsd simulate read it.
                elapsed = f"{time.perf_counter() - started:.4f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"x-process-time", elapsed)]}
                if REVISION:  # Knative sets K_REVISION in the pod; knsd loadtest splits its report by it
                    message["headers"].append((b"x-knsd-revision", REVISION))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
