"""A1111's settings: `GET /sdapi/v1/options` and `POST /sdapi/v1/options` (one model per pod)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import InvalidField
from knsd.serve.api.policy import generation_options
from knsd.serve.api.request import prompt_options
from knsd.serve.api.schemas import NULL, OPTIONS, obj
from knsd.serve.http.body import read_object
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import ServerState, state_of


def _options(state: ServerState) -> dict[str, Any]:
    engine = state.engine
    title = engine.model.title if engine else None
    sha256 = engine.model.sha256 if engine else None
    return {
        "sd_model_checkpoint": title,
        "samples_format": "png",
        "sd_checkpoint_hash": sha256,
        **state.generation_options,  # CLIP_stop_at_last_layers, emphasis, ... (api.policy)
    }


@doc("Settings", response=OPTIONS)
async def get_options(request: Request) -> Response:
    return JSONResponse(_options(state_of(request)))


@doc(
    "Change settings (sd_model_checkpoint must name the loaded model)",
    request=obj({}),
    response=NULL,
    errors=(503,),
)
async def set_options(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    wanted = body.get("sd_model_checkpoint")
    current = _options(state)["sd_model_checkpoint"]
    engine = state.require_engine()
    if wanted is not None and wanted not in (current, engine.model.info.name):
        raise InvalidField("sd_model_checkpoint", f"the loaded model {current!r} (one model per pod)", wanted)
    # Generation settings persist for later requests, as in A1111; all are checked before any is set.
    merged = generation_options(state.generation_options, body, field="")
    prompt_options(merged, field="")
    state.generation_options = merged
    return JSONResponse(None)
