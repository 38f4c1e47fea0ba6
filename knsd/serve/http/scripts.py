"""Requests with A1111's `script_name`: checked before they wait, then the script's generations run in one
turn of the pipeline (knsd.serve.generate.scripts)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from knsd.errors import InvalidField
from knsd.serve.api.images import decode_image, encode_png
from knsd.serve.api.infotext import info, infotext, parameters
from knsd.serve.api.request import GenerationRequest
from knsd.serve.api.scripts import ScriptCall, sd_upscale_args
from knsd.serve.generate.scripts import ScriptResult, sd_upscale, upscaled_size
from knsd.serve.http.state import ServerState


async def run_script(
    state: ServerState, body: dict[str, Any], req: GenerationRequest, call: ScriptCall, job: str
) -> JSONResponse:
    """Run `call` for the request; every argument is checked before the request waits."""
    engine = state.require_engine()
    engine.check(req)
    spec = sd_upscale_args(call, req.width, req.height)
    source = decode_image("init_images[0]", body["init_images"][0])
    w, h = upscaled_size(source, spec)
    if w * h > state.settings.max_pixels or w < req.width or h < req.height:
        raise InvalidField(
            "script_args[3]",
            f"a scale giving an image of at least the tile size {req.width}x{req.height} and at most "
            f"{state.settings.max_pixels} pixels",
            spec.scale,
            f"sd upscale would work on a {w}x{h} image: it must be at least one tile ({req.width}x{req.height}) "
            f"and at most {state.settings.max_pixels} pixels (the server's pixel budget)",
        )
    model = engine.model.info

    def work() -> tuple[ScriptResult, list[str]]:
        result = sd_upscale(engine, req, source, spec, job)
        state.metrics.images.inc(len(result.images))
        text = infotext(result.first, result.first.seed, model, extra=result.extra)
        return result, [encode_png(image, text) for image in result.images]

    async with state.admission.slot():
        result, images = await state.in_worker(work)
    described = info(result.first, model, extra=result.extra)
    described["infotexts"] = [described["infotexts"][0]] * len(images)
    return JSONResponse(
        {
            "images": images if req.send_images else [],
            "parameters": parameters(req),
            "info": json.dumps(described),
        }
    )
