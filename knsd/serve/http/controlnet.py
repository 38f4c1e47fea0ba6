"""sd-webui-controlnet's API (v3): `/controlnet/*` — installed models, preprocessors, control types, detect."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet import detect as run_detect
from knsd.serve.addons.preprocess import PREPROCESSORS, find_preprocessor
from knsd.serve.addons.units import ControlUnit, parse_units
from knsd.serve.api.images import decode_image, encode_png
from knsd.serve.api.schemas import B64_IMAGE, arr, boolean, integer, number, obj, string
from knsd.serve.http.body import read_object
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of

CONTROLNET_API_VERSION = 3  # v3: pydantic-validated units (sd-webui-controlnet PR #2847)


@doc("ControlNet API version", response=obj({"version": integer()}), tag="controlnet")
async def version(request: Request) -> Response:
    return JSONResponse({"version": CONTROLNET_API_VERSION})


@doc(
    "Installed ControlNet models as 'name [hash]'",
    response=obj({"model_list": arr(string())}),
    query=(("update", boolean(default=True)),),
    tag="controlnet",
)
async def model_list(request: Request) -> Response:
    addons = state_of(request).require_addons()
    if request.query_params.get("update", "true").lower() != "false":
        addons.controlnets.refresh()
    return JSONResponse({"model_list": addons.controlnets.titles()})


@doc(
    "Preprocessors (modules) this server runs: those that need no model weights",
    response=obj({"module_list": arr(string()), "module_detail": obj({})}),
    query=(("alias_names", boolean(default=False)),),
    tag="controlnet",
)
async def module_list(request: Request) -> Response:
    aliases = request.query_params.get("alias_names", "false").lower() == "true"
    names = [p.label if aliases else p.name for p in PREPROCESSORS.values()]
    detail = {
        p.name: {"model_free": True, "sliders": [s.api() for s in p.sliders()]}
        for p in PREPROCESSORS.values()
    }
    return JSONResponse({"module_list": names, "module_detail": detail})


@doc(
    "Control types: the modules and models that go together",
    response=obj({"control_types": obj({})}),
    tag="controlnet",
)
async def control_types(request: Request) -> Response:
    addons = state_of(request).require_addons()
    models = ["None", *addons.controlnets.titles()]
    types = {
        "All": {
            "module_list": list(PREPROCESSORS),
            "model_list": models,
            "default_option": "none",
            "default_model": "None",
        }
    }
    for tag, modules in (("Canny", ["none", "canny", "invert"]), ("Lineart", ["none", "invert", "binary"])):
        matching = ["None", *(m for m in models[1:] if tag.lower() in m.lower())]
        types[tag] = {
            "module_list": modules,
            "model_list": matching,
            "default_option": modules[1],
            "default_model": matching[1] if len(matching) > 1 else "None",
        }
    return JSONResponse({"control_types": types})


@doc("ControlNet settings", response=obj({"control_net_unit_count": integer()}), tag="controlnet")
async def settings(request: Request) -> Response:
    # knsd runs every unit it is sent (A1111 silently drops units past this count); report its default.
    return JSONResponse({"control_net_unit_count": 3})


DETECT_REQUEST = obj(
    {
        "controlnet_module": string(default="none"),
        "controlnet_input_images": arr(B64_IMAGE),
        "controlnet_processor_res": integer(default=-1),
        "controlnet_threshold_a": number(default=-1),
        "controlnet_threshold_b": number(default=-1),
    },
    required=("controlnet_input_images",),
)


@doc(
    "Run a preprocessor on images",
    request=DETECT_REQUEST,
    response=obj({"info": string(), "images": arr(B64_IMAGE)}),
    tag="controlnet",
)
async def detect(request: Request) -> Response:
    body = await read_object(request)
    module = body.get("controlnet_module", "none")
    pre = find_preprocessor(module) if isinstance(module, str) else None
    if pre is None:
        raise InvalidField("controlnet_module", "one of " + ", ".join(PREPROCESSORS), module)
    images = body.get("controlnet_input_images")
    if not isinstance(images, list) or not images:
        raise InvalidField("controlnet_input_images", "a non-empty list of base64 images", images)
    decoded = [decode_image(f"controlnet_input_images[{i}]", im) for i, im in enumerate(images)]
    unit = _detect_unit(body, pre.name)
    out = []
    for image in decoded:
        w, h = image.size
        res = unit.processor_res
        one = dataclasses.replace(unit, processor_res=res)
        # /detect returns the map at the preprocessor's resolution: short side = processor_res.
        k = res / min(w, h) if pre.resolution is not None else 1.0
        out.append(encode_png(run_detect(one, image, round(w * k), round(h * k)), ""))
    return JSONResponse({"info": "Success", "images": out})


def _detect_unit(body: dict[str, Any], module: str) -> ControlUnit:
    raw = {
        "enabled": True,
        "module": module,
        "model": "detect",
        "processor_res": body.get("controlnet_processor_res", -1),
        "threshold_a": body.get("controlnet_threshold_a", -1),
        "threshold_b": body.get("controlnet_threshold_b", -1),
        "resize_mode": "Just Resize",
    }
    try:
        return parse_units({"alwayson_scripts": {"controlnet": {"args": [raw]}}})[0]
    except InvalidField as exc:
        field = "controlnet_" + exc.field.rsplit(".", 1)[-1]
        raise InvalidField(field, exc.allowed, exc.received) from exc
