"""A1111's settings: `GET /sdapi/v1/options` and `POST /sdapi/v1/options` (one model per pod)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.options import wire
from knsd.serve.api.policy import generation_options
from knsd.serve.api.preview import preview_plan
from knsd.serve.api.request import prompt_options
from knsd.serve.api.schemas import NULL, OPTIONS, obj
from knsd.serve.http.body import read_object
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import ServerState, state_of


def _options(state: ServerState) -> dict[str, Any]:
    """The options object: A1111's every key, with the loaded model's title and hash (set at load, as A1111
    does) and the settings posted since."""
    engine = state.engine
    return {
        **state.generation_options,
        "sd_model_checkpoint": engine.model.title if engine else None,
        "sd_checkpoint_hash": engine.model.sha256 if engine else "",
    }


@doc("Settings: every key of A1111 v1.10.1's options object", response=OPTIONS)
async def get_options(request: Request) -> Response:
    return JSONResponse(wire(_options(state_of(request))))


@doc(
    "Change settings: any key of the options object (sd_model_checkpoint must name the loaded model)",
    request=obj({}),
    response=NULL,
    errors=(503,),
)
async def set_options(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    engine = state.require_engine()
    state.check_checkpoint(body.get("sd_model_checkpoint"), "sd_model_checkpoint")
    # Settings persist for later requests, as in A1111; all are checked before any is set.
    merged = generation_options(_options(state), body, field="")
    prompt_options(merged, field="")
    engine.previewer.check(preview_plan(merged, field=""))  # a method without its weights is a 422 now
    state.generation_options = merged
    return JSONResponse(None)
