"""The OpenAPI 3.1 document, built from the app's own routes, and `/docs` (Swagger UI, served offline).

A route is described where its handler is defined, with `@doc(...)`:

    @doc("List the LoRAs", response=arr(LORA_ITEM))
    async def loras(request: Request) -> Response: ...

`build_openapi` walks the registered routes, so a new route appears in `/openapi.json` by itself; one
without `@doc` is marked `x-knsd-undocumented` (a test fails on it). Swagger UI comes from npm's
`swagger-ui-dist` (Apache-2.0), vendored in `knsd/data/swagger-ui/` with its licence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from knsd import __version__
from knsd.serve.api.schemas import ERROR, Schema, obj, string

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__knsd_openapi__"


@dataclass(frozen=True, slots=True)
class Operation:
    """What the document says about one handler."""

    summary: str
    request: Schema | None = None
    response: Schema | None = None
    media_type: str = "application/json"
    query: tuple[tuple[str, Schema], ...] = ()
    errors: tuple[int, ...] = ()
    tag: str = ""
    description: str = ""
    events: str = ""  # how to ask for the answer as server-sent events, when the route can stream it
    request_media_type: str = "application/json"


def doc(
    summary: str,
    *,
    request: Schema | None = None,
    response: Schema | None = None,
    media_type: str = "application/json",
    query: tuple[tuple[str, Schema], ...] = (),
    errors: tuple[int, ...] = (),
    tag: str = "",
    description: str = "",
    events: str = "",
    request_media_type: str = "application/json",
) -> Callable[[F], F]:
    """Describe a handler for the OpenAPI document (request body and 200 response schemas); `events` says
    how a request asks for the answer as a stream of server-sent events."""
    operation = Operation(
        summary, request, response, media_type, query, errors, tag, description, events, request_media_type
    )

    def attach(fn: F) -> F:
        setattr(fn, _ATTR, operation)
        return fn

    return attach


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    for route in routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield prefix + route.path, method, route.endpoint
        elif isinstance(route, Mount):
            yield from _walk(list(route.routes), prefix + route.path)


def _tag(path: str) -> str:
    if path.startswith("/sdapi/"):
        return "A1111"
    if path.startswith("/v1/"):
        return "OpenAI"
    if path in ("/healthz", "/readyz", "/metrics"):
        return "probes"
    return "knsd"


def _operation(path: str, method: str, endpoint: Any) -> dict[str, Any]:
    op: Operation | None = getattr(endpoint, _ATTR, None)
    slug = re.sub(r"[^a-zA-Z0-9]+", "_", path).strip("_")
    out: dict[str, Any] = {"operationId": f"{method.lower()}_{slug}", "tags": [_tag(path)]}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if op is None:
        out["summary"] = path
        out["x-knsd-undocumented"] = True
        out["responses"] = {"default": {"description": "undocumented"}}
        return out
    out["summary"] = op.summary
    if op.tag:
        out["tags"] = [op.tag]
    if op.description:
        out["description"] = op.description
    if op.query:
        out["parameters"] = [
            {"name": name, "in": "query", "required": False, "schema": schema} for name, schema in op.query
        ]
    responses: dict[str, Any] = {"200": {"description": "OK"}}
    if op.response is not None:
        responses["200"]["content"] = {op.media_type: {"schema": op.response}}
    if op.events:
        stream = {"schema": {"type": "string", "description": f"server-sent events ({op.events})"}}
        responses["200"].setdefault("content", {})["text/event-stream"] = stream
    codes = set(op.errors)
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {op.request_media_type: {"schema": op.request}}}
        codes |= {400, 413, 422}
    for code in sorted(codes):
        responses[str(code)] = {"description": _REASONS.get(code, "error"), **error}
    out["responses"] = responses
    return out


_REASONS = {
    400: "malformed body (JSON: not an object)",
    401: "missing or wrong credentials",
    413: "body too large",
    422: "a field out of range or of the wrong type (names the field)",
    503: "loading, draining or queue full (Retry-After)",
}


def build_openapi(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`."""
    paths: dict[str, dict[str, Any]] = {}
    for path, method, endpoint in _walk(routes):
        template = re.sub(r"\{([^}:]+)(:[^}]+)?\}", r"{\1}", path)
        op = _operation(template, method, endpoint)
        names = re.findall(r"\{([^}]+)\}", template)
        if names:
            op.setdefault("parameters", []).extend(
                {"name": n, "in": "path", "required": True, "schema": string()} for n in names
            )
        paths.setdefault(template, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "knsd serve",
            "version": __version__,
            "description": "AUTOMATIC1111-compatible (`/sdapi/v1/*`) and OpenAI-compatible image API of "
            "`knsd serve`: one request per pod, Knative-ready probes.",
        },
        "paths": paths,
        "components": {"schemas": {"Error": ERROR}},
    }


@doc("This OpenAPI 3.1 document", response=obj({}, description="OpenAPI 3.1"), tag="docs")
async def openapi_json(request: Request) -> Response:
    return JSONResponse(build_openapi(list(request.app.routes)))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>knsd serve - API docs</title>
<link rel="stylesheet" href="docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""
_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript", "LICENSE": "text/plain"}


@doc("Interactive API docs (Swagger UI, no network needed)", response=string(), media_type="text/html")
async def docs(request: Request) -> Response:
    return HTMLResponse(_PAGE)


@doc("Swagger UI's files", response=string(), media_type="text/plain", errors=(404,))
async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSETS:
        return JSONResponse(
            {"error": "HTTPException", "detail": "Not Found", "body": "", "errors": "404: Not Found"},
            status_code=404,
        )
    data = resources.files("knsd").joinpath("data", "swagger-ui", name).read_bytes()
    headers = {"Cache-Control": "public, max-age=86400"}
    return Response(data, media_type=_ASSETS[name], headers=headers)
