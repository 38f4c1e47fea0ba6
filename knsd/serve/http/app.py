"""The handler's app factory: routes, middleware, lifespan, and errors to HTTP in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import KnsdError, Unavailable
from knsd.serve.http.middleware import AuthMiddleware, MetricsMiddleware
from knsd.serve.http.routes import ROUTES
from knsd.serve.http.state import ServerState
from knsd.serve.models.loader import LoadedModel
from knsd.serve.settings import ServeSettings

log = logging.getLogger("knsd.serve")


async def _knsd_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KnsdError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
    if exc.status >= 500 and not isinstance(exc, Unavailable):
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = {
        "error": "HTTPException",
        "detail": exc.detail,
        "body": "",
        "errors": f"{exc.status_code}: {exc.detail}",
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s crashed", request.method, request.url.path)
    body = {"error": type(exc).__name__, "detail": "", "body": "", "errors": str(exc)}
    return JSONResponse(body, status_code=500)


def create_app(
    settings: ServeSettings,
    model: LoadedModel | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> Starlette:
    """The ASGI app; the model loads in the background after startup unless one is given."""
    state = ServerState(settings=settings, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load(model))
        try:
            yield
        finally:
            loading.cancel()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={KnsdError: _knsd_error, HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.knsd = state
    app.add_middleware(AuthMiddleware, users=settings.api_auth, token=settings.api_token)
    app.add_middleware(
        MetricsMiddleware, metrics=state.metrics, routes=frozenset(route.path for route in ROUTES)
    )
    return app
