"""The handler's app factory: routes, middleware, lifespan, and errors to HTTP in one place."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import KnsdError
from knsd.serve.http.failure import describe
from knsd.serve.http.middleware import AuthMiddleware, MetricsMiddleware, SiteMiddleware
from knsd.serve.http.routes import ROUTES
from knsd.serve.http.startup import StartupLoad
from knsd.serve.http.state import ServerState
from knsd.serve.models.loader import LoadedModel
from knsd.serve.settings import ServeSettings


async def _error(request: Request, exc: Exception) -> Response:
    failure = describe(exc, request.method, request.url.path)
    return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers or None)


def create_app(
    settings: ServeSettings,
    model: LoadedModel | None = None,
    on_fatal: Callable[[str], None] | None = None,
    startup: StartupLoad | None = None,
) -> Starlette:
    """The ASGI app; the model loads in the background after startup unless one is given (`model`) or its
    load was started before the app was built (`startup`: the pipeline thread, the load, its timeline)."""
    state = ServerState(settings=settings, on_fatal=on_fatal)
    if startup is not None:
        state.executor, state.preload, state.timeline = startup.executor, startup.future, startup.timeline

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load(model))
        try:
            yield
        finally:
            loading.cancel()
            state.executor.shutdown(wait=False, cancel_futures=True)
            state.offload.shutdown()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={KnsdError: _error, HTTPException: _error, Exception: _error},
    )
    app.state.knsd = state
    app.add_middleware(AuthMiddleware, users=settings.api_auth, token=settings.api_token)
    app.add_middleware(SiteMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(
        MetricsMiddleware, metrics=state.metrics, routes=frozenset(route.path for route in ROUTES)
    )
    return app
