"""The handler's routes: A1111's `/sdapi/v1/*`, OpenAI's images API, probes and metrics."""

from __future__ import annotations

import json
import time
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import BadRequest, InvalidField, PayloadTooLarge
from knsd.serve.addons.routes import with_addons
from knsd.serve.engine import Generated
from knsd.serve.images import encode_png
from knsd.serve.infotext import info, infotext, parameters
from knsd.serve.openapi import doc
from knsd.serve.params import GenerationRequest, parse_img2img, parse_openai, parse_txt2img, prompt_options
from knsd.serve.request_policy import generation_options
from knsd.serve.samplers import SAMPLERS, SCHEDULES
from knsd.serve.schemas import (
    EMPTY_OBJECT,
    GENERATION_RESPONSE,
    IMG2IMG_REQUEST,
    NULL,
    OPENAI_REQUEST,
    OPENAI_RESPONSE,
    OPTIONS,
    PROGRESS_RESPONSE,
    SAMPLER_ITEM,
    SCHEDULER_ITEM,
    SD_MODEL_ITEM,
    TXT2IMG_REQUEST,
    arr,
    boolean,
    obj,
    string,
)
from knsd.serve.state import ServerState
from knsd.serve.styles import apply_styles


def _state(request: Request) -> ServerState:
    return cast(ServerState, request.app.state.knsd)


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, 413 past `limit` bytes (checked before and while reading), 400 when malformed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"invalid Content-Length header: {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes, the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if b"\\ud" in body.lower():
        # JSON may escape a lone UTF-16 surrogate (\udc00): Python decodes it into a str that no tokenizer,
        # PNG chunk or JSON response can encode, so refuse it here rather than fail later with a 500.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            try:
                where = _surrogate_path(value)
            except RecursionError:  # nesting json.loads accepted but too deep to walk again: say less
                where = None
            raise BadRequest(
                "request body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff)"
                + (f" in {where}" if where else "")
            ) from exc
    return value


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where the first lone surrogate sits ("prompt", "styles[1]", "override_settings.<key>"), ASCII-safe."""
    if isinstance(value, str):
        return (path or "body") if _has_surrogate(value) else None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            name = ascii(key)[1:-1] if isinstance(key, str) else str(key)
            here = f"{path}.{name}" if path else name
            if isinstance(key, str) and _has_surrogate(key):
                return f"the key {here}"
            found = _surrogate_path(item, here)
            if found:
                return found
    return None


async def _generate(request: Request, req: GenerationRequest, job: str) -> list[str]:
    """Queue for the pipeline, generate, and return the base64 PNGs with their infotexts."""
    state = _state(request)
    engine = state.require_engine()
    model = engine.model.info

    def work() -> list[str]:
        images = engine.generate(req, job=job)
        state.metrics.images.inc(len(images))
        extra = getattr(images, "extra", {})  # infotext keys the run added (e.g. LoRA hashes)
        encoded = Generated(
            encode_png(img, infotext(req, seed, model, sub, extra))
            for img, seed, sub in zip(images, req.seeds, req.subseeds, strict=False)
        )
        encoded.extra = extra
        # sd-webui-controlnet appends each unit's detected map to the images (save_detected_map, default true)
        encoded.extend(encode_png(m, "") for m in getattr(images, "detected", []))
        return encoded

    async with state.admission.slot():
        return await state.in_worker(work)


def _a1111_response(request: Request, req: GenerationRequest, images: list[str]) -> JSONResponse:
    model = _state(request).require_engine().model.info
    return JSONResponse(
        {
            "images": images if req.send_images else [],
            "parameters": parameters(req),
            "info": json.dumps(info(req, model, extra=getattr(images, "extra", None))),
        }
    )


@doc(
    "Generate images from a prompt (A1111)",
    request=TXT2IMG_REQUEST,
    response=GENERATION_RESPONSE,
    errors=(503,),
)
async def txt2img(request: Request) -> Response:
    state = _state(request)
    body = apply_styles(await read_json(request, state.settings.max_body_bytes), state.styles)
    req = parse_txt2img(body, state.settings.max_pixels, state.generation_options)
    req = with_addons(state, body, req)
    return _a1111_response(request, req, await _generate(request, req, "txt2img"))


@doc(
    "Generate images from an image and a prompt (A1111)",
    request=IMG2IMG_REQUEST,
    response=GENERATION_RESPONSE,
    errors=(503,),
)
async def img2img(request: Request) -> Response:
    state = _state(request)
    body = apply_styles(await read_json(request, state.settings.max_body_bytes), state.styles)
    req = parse_img2img(body, state.settings.max_pixels, state.generation_options)
    req = with_addons(state, body, req)
    return _a1111_response(request, req, await _generate(request, req, "img2img"))


@doc("Generate images (OpenAI images API)", request=OPENAI_REQUEST, response=OPENAI_RESPONSE, errors=(503,))
async def openai_images(request: Request) -> Response:
    state = _state(request)
    body = await read_json(request, state.settings.max_body_bytes)
    req, _ = parse_openai(body, state.settings.max_pixels)
    images = await _generate(request, req, "txt2img")
    data = [
        {"b64_json": image, "seed": seed, "revised_prompt": None}
        for image, seed in zip(images, req.seeds, strict=False)
    ]
    return JSONResponse({"created": int(time.time()), "data": data})


@doc(
    "Progress of the running job",
    response=PROGRESS_RESPONSE,
    query=(("skip_current_image", boolean(default=False)),),
)
async def progress(request: Request) -> Response:
    engine = _state(request).engine
    p = engine.progress if engine is not None else None
    fraction = p.fraction() if p else 0.0
    elapsed = time.time() - p.started if p and p.job_count else 0.0
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    return JSONResponse(
        {
            "progress": fraction,
            "eta_relative": eta,
            "state": {
                "skipped": False,
                "interrupted": bool(p and p.interrupted),
                "stopping_generation": False,
                "job": p.job if p else "",
                "job_count": p.job_count if p else 0,
                "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(p.started if p else None)),
                "job_no": p.job_no if p else 0,
                "sampling_step": p.sampling_step if p else 0,
                "sampling_steps": p.sampling_steps if p else 0,
            },
            "current_image": None,
            "textinfo": None,
            "current_task": None,
        }
    )


@doc("Stop the running job after its current step", response=EMPTY_OBJECT)
async def interrupt(request: Request) -> Response:
    engine = _state(request).engine
    if engine is not None:
        engine.interrupt()
    return JSONResponse({})


@doc("The loaded checkpoint (one model per pod)", response=arr(SD_MODEL_ITEM), errors=(503,))
async def sd_models(request: Request) -> Response:
    engine = _state(request).require_engine()
    m = engine.model
    return JSONResponse(
        [
            {
                "title": m.title,
                "model_name": m.info.name,
                "hash": m.info.hash,
                "sha256": m.sha256,
                "filename": str(m.source.path),
                "config": None,
            }
        ]
    )


@doc("Samplers", response=arr(SAMPLER_ITEM))
async def samplers(request: Request) -> Response:
    return JSONResponse([{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS])


@doc("Schedule types", response=arr(SCHEDULER_ITEM))
async def schedulers(request: Request) -> Response:
    return JSONResponse(
        [
            {
                "name": label.lower().replace(" ", "_"),
                "label": label,
                "aliases": None,
                "default_rho": -1,
                "need_inner_model": False,
            }
            for label in SCHEDULES
        ]
    )


def _options(state: ServerState) -> dict[str, Any]:
    engine = state.engine
    title = engine.model.title if engine else None
    sha256 = engine.model.sha256 if engine else None
    return {
        "sd_model_checkpoint": title,
        "samples_format": "png",
        "sd_checkpoint_hash": sha256,
        **state.generation_options,  # CLIP_stop_at_last_layers, emphasis, ... (request_policy)
    }


@doc("Settings", response=OPTIONS)
async def get_options(request: Request) -> Response:
    return JSONResponse(_options(_state(request)))


@doc(
    "Change settings (sd_model_checkpoint must name the loaded model)",
    request=obj({}),
    response=NULL,
    errors=(503,),
)
async def set_options(request: Request) -> Response:
    state = _state(request)
    body = await read_json(request, state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
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
    state = _state(request)
    status = state.readiness()
    if status == "ready":
        return JSONResponse({"status": "ready"})
    body: dict[str, Any] = {"status": status}
    if state.load_error:
        body["error"] = state.load_error
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@doc("Prometheus metrics", response=string(), media_type="text/plain", tag="probes")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
