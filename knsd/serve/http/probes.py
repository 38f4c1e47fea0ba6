"""Knative's probes and Prometheus: liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.schemas import obj, string
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of


@doc("Liveness: 200 once the process listens", response=obj({"status": string()}), tag="probes")
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


@doc(
    "Readiness: 200 once the model is loaded and warm; 503 while loading, draining or failed",
    response=obj({"status": string(), "error": string()}),
    errors=(503,),
    tag="probes",
)
async def readyz(request: Request) -> Response:
    state = state_of(request)
    status = state.readiness()
    if status == "ready":
        return JSONResponse({"status": "ready"})
    body: dict[str, Any] = {"status": status}
    if state.load_error:
        body["error"] = state.load_error
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@doc("Prometheus metrics", response=string(), media_type="text/plain", tag="probes")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
