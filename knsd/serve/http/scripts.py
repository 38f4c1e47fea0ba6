"""Requests with A1111's `script_name`: checked before they wait, then the script's generations run in one
turn of the pipeline (knsd.serve.generate.scripts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

from knsd.errors import InvalidField
from knsd.serve.api.annotations import annotate, prompt_matrix_labels
from knsd.serve.api.grids import image_grid
from knsd.serve.api.images import decode_image, encode_png
from knsd.serve.api.infotext import info, infotext, parameters
from knsd.serve.api.request import GenerationRequest
from knsd.serve.api.script_plans import count_ok, prompt_matrix, prompts_from_file
from knsd.serve.api.scripts import ScriptCall, sd_upscale_args
from knsd.serve.generate.scripts import ScriptResult, sd_upscale, upscaled_size
from knsd.serve.http.state import ServerState

Prepare = Callable[[dict[str, Any]], GenerationRequest]


async def run_script(
    state: ServerState,
    body: dict[str, Any],
    req: GenerationRequest,
    call: ScriptCall,
    job: str,
    prepare: Prepare,
) -> JSONResponse:
    """Run `call` for the request; every argument and every generation it makes is checked before the
    request waits. `prepare` parses a body of the route (with its add-ons)."""
    if call.name == "sd upscale":
        return await _sd_upscale(state, body, req, call, job)
    if call.name == "prompt matrix":
        plan = prompt_matrix(body, call, req.seed, req.subseed)
    else:
        plan = prompts_from_file(body, call, req.seed, len(req.seeds))
    engine = state.require_engine()
    model = engine.model
    reqs = []
    for i, sub in enumerate(plan.bodies):
        wanted = (sub.get("override_settings") or {}).get("sd_model_checkpoint")
        if wanted is not None and wanted not in (model.title, model.info.name):
            raise InvalidField(
                f"script_args[3] line {i + 1}", f"--sd_model {model.title!r} (one model per pod)", wanted
            )
        reqs.append(prepare(sub))
    count_ok(sum(len(r.seeds) for r in reqs), f"{len(reqs)} generations")
    for r in reqs:
        engine.check(r)

    def work() -> tuple[list[str], dict[str, Any]]:
        images: list[Any] = []
        texts: list[str] = []
        done: list[GenerationRequest] = []
        for r in reqs:
            if engine.progress.interrupted:
                break
            out = engine.generate(r, job)
            images += out.images
            texts += [
                infotext(r, seed, model.info, sub, out.extra)
                for seed, sub in zip(r.seeds, r.subseeds, strict=False)
            ]
            done += [r] * len(out.images)
        state.metrics.images.inc(len(images))
        described = info(reqs[0], model.info)
        described.update(
            all_prompts=[r.prompt for r in done],
            all_negative_prompts=[r.negative_prompt for r in done],
            all_seeds=[s for r in reqs for s in r.seeds][: len(done)],
            all_subseeds=[s for r in reqs for s in r.subseeds][: len(done)],
        )
        if plan.matrix_parts and images:
            columns, rows = prompt_matrix_labels(list(plan.matrix_parts))
            width, height = images[0].size
            grid = annotate(image_grid(images, plan.grid_rows), width, height, columns, rows, plan.margin)
            images.insert(0, grid)
            texts.insert(0, texts[0])
            described["index_of_first_image"] = 1
        described["infotexts"] = texts
        return [encode_png(image, text) for image, text in zip(images, texts, strict=True)], described

    async with state.admission.slot():
        images, described = await state.in_worker(work)
    return JSONResponse(
        {
            "images": images if req.send_images else [],
            "parameters": parameters(req),
            "info": json.dumps(described),
        }
    )


async def _sd_upscale(
    state: ServerState, body: dict[str, Any], req: GenerationRequest, call: ScriptCall, job: str
) -> JSONResponse:
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
