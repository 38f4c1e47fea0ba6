"""Requests with A1111's `script_name`: checked before they wait, then the script's generations run in one
turn of the pipeline (knsd.serve.generate.scripts)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from PIL import Image
from starlette.responses import JSONResponse

from knsd.errors import InvalidField
from knsd.serve.api.annotations import Label, annotate, prompt_matrix_labels
from knsd.serve.api.grids import image_grid
from knsd.serve.api.images import decode_image, encode_png
from knsd.serve.api.infotext import info, infotext, parameters
from knsd.serve.api.request import GenerationRequest
from knsd.serve.api.script_plans import count_ok, prompt_matrix, prompts_from_file
from knsd.serve.api.scripts import ScriptCall, sd_upscale_args
from knsd.serve.api.xyz import plan_xyz
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
    if call.name == "x/y/z plot":
        return await _xyz(state, body, req, call, job, prepare)
    if call.name == "prompt matrix":
        plan = prompt_matrix(body, call, req.seed, req.subseed)
    else:
        plan = prompts_from_file(body, call, req.seed, len(req.seeds))
    engine = state.require_engine()
    model = engine.model

    def prepared() -> list[GenerationRequest]:
        reqs = []
        for i, sub in enumerate(plan.bodies):
            overrides = sub.get("override_settings") or {}
            state.check_checkpoint(overrides.get("sd_model_checkpoint"), f"script_args[3] line {i + 1}")
            reqs.append(prepare(sub))
        return reqs

    reqs = await state.offload.run(prepared)  # each decodes its images: off the event loop
    count_ok(sum(len(r.seeds) for r in reqs), f"{len(reqs)} generations")
    for r in reqs:
        engine.check(r)

    stop = threading.Event()  # set when the client goes away (knsd.serve.http.disconnect)

    def work() -> tuple[list[str], dict[str, Any]]:
        images: list[Any] = []
        texts: list[str] = []
        done: list[GenerationRequest] = []
        for r in reqs:
            if engine.progress.interrupted:
                break
            out = engine.generate(r, job, stop)
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
        images, described = await state.in_worker(work, on_cancel=stop.set)
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
    source = await state.offload.run(lambda: decode_image("init_images[0]", body["init_images"][0]))
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

    stop = threading.Event()  # set when the client goes away (knsd.serve.http.disconnect)

    def work() -> tuple[ScriptResult, list[str]]:
        result = sd_upscale(engine, req, source, spec, job, stop)
        state.metrics.images.inc(len(result.images))
        text = infotext(result.first, result.first.seed, model, extra=result.extra)
        return result, [encode_png(image, text) for image in result.images]

    async with state.admission.slot():
        result, images = await state.in_worker(work, on_cancel=stop.set)
    described = info(result.first, model, extra=result.extra)
    described["infotexts"] = [described["infotexts"][0]] * len(images)
    return JSONResponse(
        {
            "images": images if req.send_images else [],
            "parameters": parameters(req),
            "info": json.dumps(described),
        }
    )


def _prepared(
    state: ServerState, bodies: tuple[dict[str, Any], ...], prepare: Prepare
) -> list[GenerationRequest]:
    """Every generation of a script parsed and checked against the model, before the request waits."""
    engine = state.require_engine()
    reqs = [prepare(b) for b in bodies]
    for r in reqs:
        engine.check(r)
    return reqs


async def _xyz(
    state: ServerState,
    body: dict[str, Any],
    req: GenerationRequest,
    call: ScriptCall,
    job: str,
    prepare: Prepare,
) -> JSONResponse:
    plan = plan_xyz(body, call, req.init_image is not None, req.seed)
    reqs = await state.offload.run(lambda: _prepared(state, plan.bodies, prepare))
    engine = state.require_engine()
    model = engine.model.info
    x, y, z = plan.axes

    stop = threading.Event()  # set when the client goes away (knsd.serve.http.disconnect)

    def work() -> tuple[list[str], dict[str, Any]]:
        cells: list[Any] = []
        texts: list[str] = []
        for r in reqs:
            out = engine.generate(r, job, stop) if not engine.progress.interrupted else None
            if out is None or not out.images:  # A1111: a blank cell for a failed one
                cells.append(Image.new("RGB", (cells[0].size if cells else (r.width, r.height))))
                texts.append("")
                continue
            cells.append(out.images[0])  # only a cell's first image is plotted, as in A1111
            texts.append(infotext(r, r.seed, model, r.subseeds[0], out.extra))
        per_z = len(x.values) * len(y.values)
        grids, grid_texts = [], []
        for iz in range(len(z.values)):
            part = cells[iz * per_z : (iz + 1) * per_z]
            grid = image_grid(part, len(y.values))
            if plan.draw_legend:
                w, h = (max(sizes) for sizes in zip(*(im.size for im in part), strict=True))
                columns = [[Label(x.caption(v))] for v in x.values]
                grid = annotate(grid, w, h, columns, [[Label(y.caption(v))] for v in y.values], plan.margin)
            grids.append(grid)
            first = reqs[iz * per_z]
            grid_texts.append(infotext(first, first.seed, model, first.subseeds[0], dict(plan.extra)))
        z_grid = image_grid(grids, 1)
        if plan.draw_legend:
            w, h = (max(sizes) for sizes in zip(*(g.size for g in grids), strict=True))
            z_grid = annotate(z_grid, w, h, [[Label(z.caption(v))] for v in z.values], [[Label("")]])
        images = [
            z_grid,
            *(grids if plan.include_sub_grids else []),
            *(cells if plan.include_lone_images else []),
        ]
        all_texts = [
            grid_texts[0],
            *(grid_texts if plan.include_sub_grids else []),
            *(texts if plan.include_lone_images else []),
        ]
        state.metrics.images.inc(len(cells))
        described = info(reqs[0], model, extra=dict(plan.extra))
        described.update(
            all_prompts=[r.prompt for r in reqs],
            all_negative_prompts=[r.negative_prompt for r in reqs],
            all_seeds=[r.seed for r in reqs],
            all_subseeds=[r.subseeds[0] for r in reqs],
            infotexts=all_texts,
        )
        return [encode_png(im, t) for im, t in zip(images, all_texts, strict=True)], described

    async with state.admission.slot():
        images, described = await state.in_worker(work, on_cancel=stop.set)
    return JSONResponse(
        {
            "images": images if req.send_images else [],
            "parameters": parameters(req),
            "info": json.dumps(described),
        }
    )
