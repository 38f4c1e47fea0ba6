"""ASGI middleware: optional API auth, and per-route request metrics."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from knsd.errors import Unauthorized
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
        body = json.dumps(error.to_json()).encode()
        challenge = b'Basic realm="knsd"' if self.users else b'Bearer realm="knsd"'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge),
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
