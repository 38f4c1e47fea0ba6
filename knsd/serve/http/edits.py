"""OpenAI's image edits, `POST /v1/images/edits`: a multipart upload (image, mask, form fields) answered
like `/v1/images/generations`, through A1111's inpainting (knsd.serve.api.openai.parse_openai_edit).

OpenAI's own client sends it as `client.images.edit(image=..., mask=..., prompt=...)`; knsd's fields
(`seed`, `steps`, `negative_prompt`, ...) arrive as form fields from its `extra_body`. With `stream=true`
the answer is OpenAI's event stream with the `image_edit` prefix (knsd.serve.http.generation).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from knsd.errors import InvalidField
from knsd.serve.api.openai import parse_edit_stream, parse_openai_edit
from knsd.serve.api.schemas import OPENAI_EDIT_REQUEST, OPENAI_RESPONSE
from knsd.serve.http.body import read_form
from knsd.serve.http.disconnect import cancelled_on_disconnect
from knsd.serve.http.generation import generate, openai_body, openai_stream
from knsd.serve.http.openapi import doc
from knsd.serve.http.state import state_of


@doc(
    "Edit an image where its mask is transparent (OpenAI images API)",
    request=OPENAI_EDIT_REQUEST,
    request_media_type="multipart/form-data",
    response=OPENAI_RESPONSE,
    errors=(503,),
    events="stream=true; events image_edit.partial_image (partial_images 0-3), image_edit.completed",
)
async def openai_edits(request: Request) -> Response:
    state = state_of(request)
    form = await read_form(request)
    images = form.files.get("image", []) + form.files.get("image[]", [])
    masks = form.files.get("mask", [])
    if len(masks) > 1:
        raise InvalidField("mask", "one mask image", f"{len(masks)} files")
    for name in sorted(set(form.files) - {"image", "image[]", "mask"}):
        raise InvalidField(name, "a text field (image, image[] and mask are the files)", "a file")
    mask = masks[0] if masks else None
    req, _ = await state.offload.run(  # the images decoded off the event loop
        lambda: parse_openai_edit(form.fields, images, mask, state.settings.max_pixels)
    )
    partial_images = parse_edit_stream(form.fields)
    if partial_images is not None:  # `image_edit.partial_image` ... `image_edit.completed`
        return openai_stream(state, req, partial_images, "image_edit", "img2img")
    async with cancelled_on_disconnect(request):
        out = await generate(state, req, "img2img")
    return JSONResponse(openai_body(req, out))
