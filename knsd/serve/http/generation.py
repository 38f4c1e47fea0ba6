"""The generating routes: A1111's txt2img and img2img, OpenAI's images API.

Each request is parsed and checked against the loaded model first (a 422 names the field before the
request waits), then waits for the single pipeline slot and runs on the pipeline thread. A request may ask
for its answer as a stream of events (`Accept: text/event-stream` on A1111's routes, `"stream": true` on
OpenAI's): the same checks come first, so their errors stay plain JSON responses (knsd.serve.http.stream).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.serve.api.images import encode_png
from knsd.serve.api.infotext import info, infotext, parameters
from knsd.serve.api.openai import parse_openai, parse_openai_stream
from knsd.serve.api.preview import partial_images_plan
from knsd.serve.api.request import GenerationRequest, parse_img2img, parse_txt2img
from knsd.serve.api.schemas import (
    GENERATION_RESPONSE,
    IMG2IMG_REQUEST,
    OPENAI_REQUEST,
    OPENAI_RESPONSE,
    TXT2IMG_REQUEST,
)
from knsd.serve.api.scripts import ScriptCall, parse_script
from knsd.serve.api.styles import apply_styles
from knsd.serve.generate.engine import Engine
from knsd.serve.generate.progress import Progress
from knsd.serve.http import events
from knsd.serve.http.body import read_object
from knsd.serve.http.disconnect import cancelled_on_disconnect
from knsd.serve.http.failure import Failure
from knsd.serve.http.jobs import progress_body
from knsd.serve.http.openapi import doc
from knsd.serve.http.scripts import run_script
from knsd.serve.http.state import ServerState, state_of
from knsd.serve.http.stream import EventStream, Feed


@dataclasses.dataclass(frozen=True, slots=True)
class Encoded:
    """A finished request: base64 PNGs (generated images, then ControlNet's detected maps) and the
    infotext keys the run added."""

    images: list[str]
    extra: dict[str, Any]


def with_addons(state: ServerState, body: dict[str, Any], req: GenerationRequest) -> GenerationRequest:
    """The request within the server's limits, naming the loaded model if it names one, with its add-ons
    (LoRA tags, ControlNet units) parsed and checked; without add-ons while loading."""
    state.check_limits(req)  # before the add-ons look any name up
    overrides = body.get("override_settings")
    if isinstance(overrides, dict) and state.engine is not None:
        state.check_checkpoint(overrides.get("sd_model_checkpoint"), "override_settings.sd_model_checkpoint")
    addons = state.addons
    if addons is None:
        return req
    prepared = addons.prepare(body, req.extra_networks, img2img=req.init_image is not None, seed=req.seed)
    return dataclasses.replace(req, addons=prepared)


async def generate(
    state: ServerState, req: GenerationRequest, job: str, listener: Callable[[], None] | None = None
) -> Encoded:
    """Check the request against the model, wait for the pipeline, generate and encode the PNGs.

    `listener` is called on the pipeline thread after each step of this request (a stream's `Feed`).
    Cancelling it gives its place up: while waiting it leaves the queue; while running the generation
    stops after its current step (the request's own stop, not `/interrupt`) and the pipeline goes to the
    next request. Routes cancel it when their client disconnects (knsd.serve.http.disconnect)."""
    engine = state.require_engine()
    state.check_limits(req)
    engine.check(req)  # before waiting: a request the model cannot serve never takes a place in the queue
    model = engine.model.info
    stop = threading.Event()

    def work() -> Encoded:
        if stop.is_set():  # given up between taking the slot and starting
            return Encoded([], {})
        engine.progress.listener = listener
        try:
            result = engine.generate(req, job=job, stop=stop)
        finally:
            engine.progress.listener = None
        if stop.is_set():  # nobody to send them to: neither counted nor encoded
            return Encoded([], {})
        state.metrics.images.inc(len(result.images))
        images = [
            encode_png(img, infotext(req, seed, model, sub, result.extra))
            for img, seed, sub in zip(result.images, req.seeds, req.subseeds, strict=False)
        ]
        # sd-webui-controlnet appends each unit's detected map to the images (save_detected_map, default true)
        images.extend(encode_png(m, "") for m in result.detected)
        return Encoded(images, result.extra)

    async with state.admission.slot():
        return await state.in_worker(work, on_cancel=stop.set)


def admit(state: ServerState, req: GenerationRequest) -> Engine:
    """The checks a request passes before its stream starts: loaded model, the model's 422s, a place."""
    engine = state.require_engine()
    state.check_limits(req)
    engine.check(req)
    state.admission.check()
    return engine


def _a1111_body(state: ServerState, req: GenerationRequest, out: Encoded) -> dict[str, Any]:
    model = state.require_engine().model.info
    return {
        "images": out.images if req.send_images else [],
        "parameters": parameters(req),
        "info": json.dumps(info(req, model, extra=out.extra)),
    }


def _a1111_stream(state: ServerState, req: GenerationRequest, job: str) -> EventStream:
    """`event: progress` (the JSON of GET /sdapi/v1/progress, `current_image` when a preview was drawn),
    then `event: result` (the usual body) or `event: error` (the usual error body and its `status`)."""
    engine = admit(state, req)

    async def run(feed: Feed) -> list[bytes]:
        out = await generate(state, req, job, feed.notify)
        return [events.event("result", _a1111_body(state, req, out))]

    def on_progress(p: Progress, previews: list[str]) -> list[bytes]:
        if not p.job_count:
            return []
        return [events.event("progress", progress_body(p, previews[-1] if previews else None))]

    def on_error(failure: Failure) -> bytes:
        return events.event("error", {**failure.body, "status": failure.status})

    return EventStream(engine.progress, run, on_progress, on_error, state.settings.stream_keepalive)


async def _a1111_answer(request: Request, state: ServerState, req: GenerationRequest, job: str) -> Response:
    if events.wants_event_stream(request.headers.get("accept")):
        return _a1111_stream(state, req, job)
    async with cancelled_on_disconnect(request):
        out = await generate(state, req, job)
    return JSONResponse(_a1111_body(state, req, out))


_A1111_EVENTS = (
    "Accept: text/event-stream; events progress (the JSON of GET /sdapi/v1/progress), then result or error"
)
_OPENAI_EVENTS = (
    '"stream": true; events image_generation.partial_image (partial_images 0-3), image_generation.completed'
)


@doc(
    "Generate images from a prompt (A1111)",
    request=TXT2IMG_REQUEST,
    response=GENERATION_RESPONSE,
    errors=(503,),
    events=_A1111_EVENTS,
)
async def txt2img(request: Request) -> Response:
    state = state_of(request)
    body = apply_styles(await read_object(request), state.styles)

    def parse() -> tuple[GenerationRequest, ScriptCall | None]:
        req = parse_txt2img(body, state.settings.max_pixels, state.generation_options)
        return with_addons(state, body, req), parse_script(body, img2img=False)

    req, call = await state.offload.run(parse)  # images decoded, add-ons looked up: off the event loop
    if call is not None:  # a script's answer is one JSON object (no event stream)

        def prepare(sub: dict[str, Any]) -> GenerationRequest:
            return with_addons(
                state, sub, parse_txt2img(sub, state.settings.max_pixels, state.generation_options)
            )

        async with cancelled_on_disconnect(request):
            return await run_script(state, body, req, call, "txt2img", prepare)
    return await _a1111_answer(request, state, req, "txt2img")


@doc(
    "Generate images from an image and a prompt (A1111)",
    request=IMG2IMG_REQUEST,
    response=GENERATION_RESPONSE,
    errors=(503,),
    events=_A1111_EVENTS,
)
async def img2img(request: Request) -> Response:
    state = state_of(request)
    body = apply_styles(await read_object(request), state.styles)

    def parse() -> tuple[GenerationRequest, ScriptCall | None]:
        req = parse_img2img(body, state.settings.max_pixels, state.generation_options)
        return with_addons(state, body, req), parse_script(body, img2img=True)

    req, call = await state.offload.run(parse)  # images decoded, add-ons looked up: off the event loop
    if call is not None:  # a script's answer is one JSON object (no event stream)

        def prepare_img2img(sub: dict[str, Any]) -> GenerationRequest:
            return with_addons(
                state, sub, parse_img2img(sub, state.settings.max_pixels, state.generation_options)
            )

        async with cancelled_on_disconnect(request):
            return await run_script(state, body, req, call, "img2img", prepare_img2img)
    return await _a1111_answer(request, state, req, "img2img")


def openai_stream(
    state: ServerState,
    req: GenerationRequest,
    partial_images: int,
    kind: str = "image_generation",
    job: str = "txt2img",
) -> EventStream:
    """OpenAI's image stream: `KIND.partial_image` events (full VAE decodes of the first image, spread over
    the steps), then one `KIND.completed` per image; an `error` event on failure. KIND is
    `image_generation` for generations (`image_edit` is the same stream for edits)."""
    req = dataclasses.replace(req, preview=partial_images_plan(partial_images, req.steps))
    engine = admit(state, req)
    size = f"{req.width}x{req.height}"
    shared = {"background": "opaque", "output_format": "png", "quality": "auto", "size": size}
    sent = [0]

    async def run(feed: Feed) -> list[bytes]:
        out = await generate(state, req, job, feed.notify)
        tokens = _prompt_tokens(engine, req.cond_prompt)
        usage = {
            "input_tokens": tokens,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": tokens},
            "output_tokens": 0,
            "total_tokens": tokens,
        }
        completed = f"{kind}.completed"
        return [
            events.event(
                completed,
                {
                    "type": completed,
                    "b64_json": image,
                    "created_at": int(time.time()),
                    **shared,
                    "usage": usage,
                },
            )
            for image in out.images[: len(req.seeds)]
        ]

    def on_progress(p: Progress, previews: list[str]) -> list[bytes]:
        chunks = []
        partial = f"{kind}.partial_image"
        for image in previews:
            data = {"type": partial, "b64_json": image, "created_at": int(time.time()), **shared}
            chunks.append(events.event(partial, {**data, "partial_image_index": sent[0]}))
            sent[0] += 1
        return chunks

    def on_error(failure: Failure) -> bytes:
        body = failure.body
        error = {
            "type": body.get("error"),
            "code": failure.status,
            "message": body.get("detail") or body.get("errors"),
        }
        return events.event(
            "error",
            {"type": "error", "error": {**error, "param": body.get("field")}, "status": failure.status},
        )

    return EventStream(engine.progress, run, on_progress, on_error, state.settings.stream_keepalive)


def _prompt_tokens(engine: Engine, prompt: str) -> int:
    """The prompt's length in the first tokenizer's tokens (OpenAI's `usage` counts text tokens)."""
    tokenizers = engine.model.tokenizers
    if not tokenizers:
        return 0
    return len(tokenizers[0](prompt, add_special_tokens=False).input_ids)


@doc(
    "Generate images (OpenAI images API)",
    request=OPENAI_REQUEST,
    response=OPENAI_RESPONSE,
    errors=(503,),
    events=_OPENAI_EVENTS,
)
async def openai_images(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    req, _ = parse_openai(body, state.settings.max_pixels)
    partial_images = parse_openai_stream(body)
    if partial_images is not None:
        return openai_stream(state, req, partial_images)
    async with cancelled_on_disconnect(request):
        out = await generate(state, req, "txt2img")
    return JSONResponse(openai_body(req, out))


def openai_body(req: GenerationRequest, out: Encoded) -> dict[str, Any]:
    """OpenAI's `ImagesResponse` (with each image's seed, knsd's addition)."""
    data = [
        {"b64_json": image, "seed": seed, "revised_prompt": None}
        for image, seed in zip(out.images, req.seeds, strict=False)
    ]
    return {"created": int(time.time()), "data": data}
