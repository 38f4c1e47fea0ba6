"""sd-webui-controlnet's API (v3): `/controlnet/*` — installed models, preprocessors, control types, detect."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.detect import detect as run_detect
from knsd.serve.api.schemas import B64_IMAGE, arr, boolean, integer, number, obj, string
from knsd.serve.http.body import read_object
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of

CONTROLNET_API_VERSION = 3  # v3: pydantic-validated units (sd-webui-controlnet PR #2847)
_TRUE, _FALSE = ("true", "t", "1", "yes", "y", "on"), ("false", "f", "0", "no", "n", "off")  # pydantic's


def _query_flag(request: Request, key: str, default: bool) -> bool:
    """A FastAPI-style boolean query parameter."""
    value = request.query_params.get(key)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidField(key, "true or false", value)


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
    if _query_flag(request, "update", True):
        await state_of(request).offload.run(addons.controlnets.refresh)  # hashes new files
    return JSONResponse({"model_list": addons.controlnets.titles()})


@doc(
    "Preprocessors (modules) this server runs, in the extension's order, with their sliders; "
    "model_free: runs without a ControlNet model",
    response=obj({"module_list": arr(string()), "module_detail": obj({})}),
    query=(("alias_names", boolean(default=False)),),
    tag="controlnet",
)
async def module_list(request: Request) -> Response:
    catalog = state_of(request).require_addons().catalog
    return JSONResponse(catalog.module_list(_query_flag(request, "alias_names", False)))


@doc(
    "Control types: for each tag, the modules (labels) and models that go together",
    response=obj({"control_types": obj({})}),
    tag="controlnet",
)
async def control_types(request: Request) -> Response:
    addons = state_of(request).require_addons()
    return JSONResponse(addons.catalog.control_types(addons.controlnets.titles()))


@doc("ControlNet settings", response=obj({"control_net_unit_count": integer()}), tag="controlnet")
async def settings(request: Request) -> Response:
    # knsd runs every unit it is sent (A1111 silently drops units past this count); report its default.
    return JSONResponse({"control_net_unit_count": 3})


DETECT_REQUEST = obj(
    {
        "controlnet_module": string("a module name or label", default="none"),
        "controlnet_input_images": arr(B64_IMAGE),
        "controlnet_processor_res": integer("-1: the module's default", default=-1),
        "controlnet_threshold_a": number("-1: the module's default", default=-1),
        "controlnet_threshold_b": number("-1: the module's default", default=-1),
        "controlnet_masks": arr(B64_IMAGE, description="one mask per image (inpaint modules need them)"),
        "low_vram": boolean("memory placement only: accepted, changes nothing here", default=False),
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
    state = state_of(request)
    catalog = state.require_addons().catalog
    # Decoding, preprocessing and encoding are CPU work: a worker thread, not the event loop.
    return JSONResponse(await state.offload.run(lambda: run_detect(body, catalog, state.settings.max_pixels)))
