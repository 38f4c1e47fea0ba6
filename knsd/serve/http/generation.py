"""The generating routes: A1111's txt2img and img2img, OpenAI's images API.

Each request is parsed and checked against the loaded model first (a 422 names the field before the
request waits), then waits for the single pipeline slot and runs on the pipeline thread.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.images import encode_png
from knsd.serve.api.infotext import info, infotext, parameters
from knsd.serve.api.openai import parse_openai
from knsd.serve.api.request import GenerationRequest, parse_img2img, parse_txt2img
from knsd.serve.api.schemas import (
    GENERATION_RESPONSE,
    IMG2IMG_REQUEST,
    OPENAI_REQUEST,
    OPENAI_RESPONSE,
    TXT2IMG_REQUEST,
)
from knsd.serve.api.styles import apply_styles
from knsd.serve.http.body import read_object
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import ServerState, state_of


@dataclasses.dataclass(frozen=True, slots=True)
class Encoded:
    """A finished request: base64 PNGs (generated images, then ControlNet's detected maps) and the
    infotext keys the run added."""

    images: list[str]
    extra: dict[str, Any]


def with_addons(state: ServerState, body: dict[str, Any], req: GenerationRequest) -> GenerationRequest:
    """The request with its add-ons (LoRA tags, ControlNet units) parsed and checked; as-is while loading."""
    addons = state.addons
    if addons is None:
        return req
    return dataclasses.replace(req, addons=addons.prepare(body, req.extra_networks))


async def generate(state: ServerState, req: GenerationRequest, job: str) -> Encoded:
    """Check the request against the model, wait for the pipeline, generate and encode the PNGs."""
    engine = state.require_engine()
    engine.check(req)  # before waiting: a request the model cannot serve never takes a place in the queue
    model = engine.model.info

    def work() -> Encoded:
        result = engine.generate(req, job=job)
        state.metrics.images.inc(len(result.images))
        images = [
            encode_png(img, infotext(req, seed, model, sub, result.extra))
            for img, seed, sub in zip(result.images, req.seeds, req.subseeds, strict=False)
        ]
        # sd-webui-controlnet appends each unit's detected map to the images (save_detected_map, default true)
        images.extend(encode_png(m, "") for m in result.detected)
        return Encoded(images, result.extra)

    async with state.admission.slot():
        return await state.in_worker(work)


def _a1111_response(state: ServerState, req: GenerationRequest, out: Encoded) -> JSONResponse:
    model = state.require_engine().model.info
    return JSONResponse(
        {
            "images": out.images if req.send_images else [],
            "parameters": parameters(req),
            "info": json.dumps(info(req, model, extra=out.extra)),
        }
    )


@doc(
    "Generate images from a prompt (A1111)",
    request=TXT2IMG_REQUEST,
    response=GENERATION_RESPONSE,
    errors=(503,),
)
async def txt2img(request: Request) -> Response:
    state = state_of(request)
    body = apply_styles(await read_object(request), state.styles)
    req = parse_txt2img(body, state.settings.max_pixels, state.generation_options)
    req = with_addons(state, body, req)
    return _a1111_response(state, req, await generate(state, req, "txt2img"))


@doc(
    "Generate images from an image and a prompt (A1111)",
    request=IMG2IMG_REQUEST,
    response=GENERATION_RESPONSE,
    errors=(503,),
)
async def img2img(request: Request) -> Response:
    state = state_of(request)
    body = apply_styles(await read_object(request), state.styles)
    req = parse_img2img(body, state.settings.max_pixels, state.generation_options)
    req = with_addons(state, body, req)
    return _a1111_response(state, req, await generate(state, req, "img2img"))


@doc("Generate images (OpenAI images API)", request=OPENAI_REQUEST, response=OPENAI_RESPONSE, errors=(503,))
async def openai_images(request: Request) -> Response:
    state = state_of(request)
    req, _ = parse_openai(await read_object(request), state.settings.max_pixels)
    out = await generate(state, req, "txt2img")
    data = [
        {"b64_json": image, "seed": seed, "revised_prompt": None}
        for image, seed in zip(out.images, req.seeds, strict=False)
    ]
    return JSONResponse({"created": int(time.time()), "data": data})
