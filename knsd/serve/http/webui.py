"""The generator page at `GET /`: static files from package data (`knsd/web/generator/`), nothing from outside.

The page calls the same A1111 routes as any client (`/sdapi/v1/*`) with relative URLs, so it works behind
a Knative route, the local runtime's activator and `--api-auth` (the browser's Basic prompt).
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from knsd.serve.api.schemas import string
from knsd.serve.http.openapi import doc
from knsd.web.assets import HEADERS, assets, not_found

PAGE = "generator"


def _file(name: str) -> Response:
    asset = assets(PAGE).get(name)
    if asset is None:
        return JSONResponse(not_found(name), status_code=404)
    return Response(asset.body, media_type=asset.media_type, headers=HEADERS)


def api_routes(request: Request) -> list[str]:
    """The app's GET API paths, so the page asks only for what this server has (no 404s in the console)."""
    return sorted(
        route.path
        for route in request.app.routes
        if isinstance(route, Route) and route.path.startswith("/sdapi/") and "GET" in (route.methods or ())
    )


@doc(
    "The generator page (txt2img and img2img in a browser)",
    response=string(),
    media_type="text/html",
    tag="ui",
)
async def index(request: Request) -> Response:
    """`GET /`: the txt2img / img2img page."""
    page = assets(PAGE)["index.html"].body.decode()
    page = page.replace("{{routes}}", escape(",".join(api_routes(request))))
    return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)


@doc(
    "The generator page's script, styles and icon",
    response=string(),
    media_type="text/plain",
    errors=(404,),
    tag="ui",
)
async def asset(request: Request) -> Response:
    """`GET /ui/{name}`: the page's script, styles and icon."""
    return _file(request.path_params["name"])
