"""A1111's image routes that do not generate: png-info and the extras upscalers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import InvalidField
from knsd.serve.api.extras import parse_extras
from knsd.serve.api.images import decode_image, encode_with_info
from knsd.serve.api.pnginfo import parse_generation_parameters, read_info
from knsd.serve.api.schemas import B64_IMAGE, arr, boolean, integer, number, obj, opt, string
from knsd.serve.generate.extras import check_sizes, run_extras
from knsd.serve.http.body import read_object
from knsd.serve.http.disconnect import cancelled_on_disconnect
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of

PNG_INFO_RESPONSE = obj(
    {
        "info": string('the `parameters` text, "" when the image has none'),
        "items": obj({}, description="the image's other metadata"),
        "parameters": obj({}, description="the infotext parsed as A1111 does (Prompt, Steps, Size-1, ...)"),
    },
    required=("info", "items", "parameters"),
)


@doc(
    "Read the generation parameters of an image",
    request=obj({"image": B64_IMAGE}, required=("image",)),
    response=PNG_INFO_RESPONSE,
)
async def png_info(request: Request) -> Response:
    body = await read_object(request)
    state = state_of(request)

    def read() -> dict[str, Any]:
        data = body.get("image")
        geninfo, items = read_info(decode_image("image", data.strip() if isinstance(data, str) else data))
        text = geninfo or ""
        return {"info": text, "items": items, "parameters": parse_generation_parameters(text, state.styles)}

    return JSONResponse(await state.offload.run(read))  # decoding and parsing: off the event loop


EXTRAS_FIELDS: dict[str, Any] = {
    "resize_mode": integer(
        "0: scale by upscaling_resize, 1: to upscaling_resize_w x _h", enum=[0, 1], default=0
    ),
    "show_extras_results": boolean(default=True),
    "gfpgan_visibility": number(minimum=0, maximum=1, default=0),
    "codeformer_visibility": number(minimum=0, maximum=1, default=0),
    "codeformer_weight": number(minimum=0, maximum=1, default=0),
    "upscaling_resize": number(exclusiveMinimum=0, maximum=16, default=2),
    "upscaling_resize_w": integer(minimum=1, maximum=8192, default=512),
    "upscaling_resize_h": integer(minimum=1, maximum=8192, default=512),
    "upscaling_crop": boolean(default=True),
    "upscaler_1": string("see /sdapi/v1/upscalers", default="None"),
    "upscaler_2": string("see /sdapi/v1/upscalers", default="None"),
    "extras_upscaler_2_visibility": number(minimum=0, maximum=1, default=0),
    "upscale_first": boolean(default=False),
}


async def _extras(
    request: Request, images: list[Any], body: dict[str, Any], fields: list[str]
) -> tuple[list[str], str]:
    state = state_of(request)
    req = parse_extras(body)
    check_sizes(images, req, state.settings.max_pixels, fields)  # before the request waits

    def work() -> tuple[list[str], str]:
        outputs, html_info = run_extras(images, req, state.settings.max_pixels, fields)
        return [encode_with_info(image) for image in outputs], html_info

    async with cancelled_on_disconnect(request), state.admission.slot():
        return await state.in_worker(work)


@doc(
    "Upscale one image (extras)",
    request=obj({**EXTRAS_FIELDS, "image": B64_IMAGE}, required=("image",)),
    response=obj({"html_info": string(), "image": opt(string())}, required=("html_info", "image")),
)
async def extra_single_image(request: Request) -> Response:
    body = await read_object(request)
    image = await state_of(request).offload.run(lambda: decode_image("image", body.get("image")))
    images, html_info = await _extras(request, [image], body, ["image"])
    return JSONResponse({"html_info": html_info, "image": images[0]})


@doc(
    "Upscale a list of images (extras)",
    request=obj(
        {
            **EXTRAS_FIELDS,
            "imageList": arr(obj({"data": B64_IMAGE, "name": string()}, required=("data", "name"))),
        },
        required=("imageList",),
    ),
    response=obj({"html_info": string(), "images": arr(string())}, required=("html_info", "images")),
)
async def extra_batch_images(request: Request) -> Response:
    body = await read_object(request)
    items = body.get("imageList")
    if not isinstance(items, list):
        raise InvalidField("imageList", "a list of {data, name} objects", items)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidField(f"imageList[{i}]", "an object {data: base64 image, name: string}", item)

    def decode() -> list[Any]:  # one at a time against the request's budget, refused before the next
        return [decode_image(f"imageList[{i}].data", item.get("data")) for i, item in enumerate(items)]

    images = await state_of(request).offload.run(decode)
    fields = [f"imageList[{i}].data" for i in range(len(images))]
    outputs, html_info = await _extras(request, images, body, fields) if images else ([], "<p></p>")
    return JSONResponse({"html_info": html_info, "images": outputs})
