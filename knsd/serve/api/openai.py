"""OpenAI's images API (`POST /v1/images/generations`, `POST /v1/images/edits`) mapped onto A1111 requests
(pure)."""

from __future__ import annotations

import re
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.fields import flag, integer, require_object
from knsd.serve.api.images import open_image
from knsd.serve.api.inpaint import InpaintSpec
from knsd.serve.api.preview import MAX_PARTIAL_IMAGES
from knsd.serve.api.request import GenerationRequest, img2img_request, parse_txt2img

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def response_format(value: Any) -> str:
    """OpenAI's `response_format`: only `b64_json` (absent means it too)."""
    fmt = value or "b64_json"
    if fmt != "b64_json":
        raise InvalidField("response_format", '"b64_json" (this server does not host image URLs)', fmt)
    return str(fmt)


def parse_openai(body: dict[str, Any], max_pixels: int) -> tuple[GenerationRequest, str]:
    """Validate an OpenAI `/v1/images/generations` body; returns the request and response_format."""
    body = require_object(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidField("prompt", "a non-empty string", prompt)
    size = body.get("size") or "512x512"
    match = _SIZE.match(size) if isinstance(size, str) else None
    if not match:
        raise InvalidField("size", 'a string "WIDTHxHEIGHT", for example "512x512"', size)
    fmt = response_format(body.get("response_format"))
    a1111 = {
        "prompt": prompt,
        "negative_prompt": body.get("negative_prompt"),
        "batch_size": body.get("n", 1),
        "width": int(match.group(1)),
        "height": int(match.group(2)),
        "seed": body.get("seed"),
        "steps": body.get("steps"),
        "cfg_scale": body.get("cfg_scale"),
        "sampler_name": body.get("sampler_name"),
    }
    try:
        request = parse_txt2img(a1111, max_pixels)
    except InvalidField as exc:
        if exc.field in ("batch_size", "width", "height"):
            field = {"batch_size": "n"}.get(exc.field, "size")
            raise InvalidField(field, exc.allowed, size if field == "size" else exc.received) from exc
        raise
    return request, fmt


def parse_openai_stream(body: dict[str, Any]) -> int | None:
    """`stream` and `partial_images`: the number of partial images of a streamed request, None when the
    answer is not streamed (`partial_images` then has nothing to change: a plain answer has no partials)."""
    partial = integer(body, "partial_images", 0, 0, MAX_PARTIAL_IMAGES)
    return partial if flag(body, "stream", False) else None


# `images.edit` form fields: what OpenAI's client sends that knsd honours, or takes as harmless.
EDIT_FIELDS = {
    "prompt", "n", "size", "response_format", "stream", "partial_images",
    "model", "user", "safety_identifier",  # harmless: one model per pod; nobody is tracked
    "output_format", "background", "quality",  # only the values knsd produces (png, opaque, auto)
    "negative_prompt", "seed", "steps", "cfg_scale", "sampler_name", "denoising_strength",  # knsd's
}  # fmt: skip
_EDIT_VALUES = {
    "output_format": (("png",), "png"),
    "background": (("auto", "opaque"), "auto or opaque"),
    "quality": (("auto", "standard"), "auto or standard"),
    "stream": (("true", "false"), "true or false"),
}


def _form_number(fields: dict[str, str], key: str, kind: type) -> Any:
    """A number form field (multipart sends "2", "7.5"); absent or empty is None (the A1111 default)."""
    text = fields.get(key)
    if text is None or text == "":
        return None
    try:
        return kind(text)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise InvalidField(key, what, text) from exc


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _edit_mask(image: Any, mask: Any) -> Any:
    """OpenAI's mask (fully transparent = edit) as an A1111 mask (white = regenerate), mode L."""
    import numpy as np
    from PIL import Image

    source, field = (image, "image") if mask is None else (mask, "mask")
    has_alpha = source.mode in ("RGBA", "LA", "PA") or "transparency" in source.info
    if not has_alpha:
        allowed = "a PNG with an alpha channel (fully transparent where to edit)"
        raise InvalidField("mask", allowed, f"a {source.mode} image without transparency")
    if mask is not None and mask.size != image.size:
        size = f"{image.width}x{image.height} (the image's size)"
        raise InvalidField("mask", size, f"{mask.width}x{mask.height}")
    alpha = np.asarray(source.convert("RGBA").getchannel("A"))
    edit = alpha == 0
    if not edit.any():
        raise InvalidField(
            field, "an image with fully transparent pixels where to edit", "no transparent pixel"
        )
    return Image.fromarray(np.where(edit, 255, 0).astype(np.uint8))


def parse_openai_edit(
    fields: dict[str, str], images: list[bytes], mask: bytes | None, max_pixels: int
) -> tuple[GenerationRequest, str]:
    """OpenAI's `POST /v1/images/edits` (multipart: `image` or `image[]`, `mask`, form fields) as an A1111
    inpainting request: the mask's fully transparent pixels are regenerated (or, with no mask, the image's
    own), the rest is kept. knsd's fields come as form fields too (the client's `extra_body`)."""
    for key, value in fields.items():
        if key not in EDIT_FIELDS:
            raise InvalidField(
                key, "a field of images.edit that knsd serves: " + ", ".join(sorted(EDIT_FIELDS)), value
            )
        if key in _EDIT_VALUES and value.lower() not in _EDIT_VALUES[key][0]:
            raise InvalidField(key, _EDIT_VALUES[key][1], value)
    prompt = fields.get("prompt")
    if not prompt:
        raise InvalidField("prompt", "a non-empty string", prompt)
    if len(images) != 1:
        raise InvalidField("image", "exactly one image file (knsd edits one image)", f"{len(images)} files")
    image = open_image("image", images[0], mode=None)
    regen = _edit_mask(image, None if mask is None else open_image("mask", mask, mode=None))
    size = fields.get("size") or "auto"
    match = _SIZE.match(size)
    if size != "auto" and not match:
        raise InvalidField(
            "size", '"auto" (the image\'s size) or "WIDTHxHEIGHT", for example "512x512"', size
        )
    width, height = (int(match.group(1)), int(match.group(2))) if match else image.size
    fmt = response_format(fields.get("response_format"))
    a1111 = {
        "prompt": prompt,
        "negative_prompt": fields.get("negative_prompt"),
        "batch_size": _form_number(fields, "n", int),
        "width": width,
        "height": height,
        "seed": _form_number(fields, "seed", int),
        "steps": _form_number(fields, "steps", int),
        "cfg_scale": _form_number(fields, "cfg_scale", float),
        "sampler_name": fields.get("sampler_name") or None,
        # the masked area is drawn anew; the blending and the overlay keep the rest
        "denoising_strength": _or(_form_number(fields, "denoising_strength", float), 1.0),
    }
    try:
        base = parse_txt2img(a1111, max_pixels, img2img=True)
    except InvalidField as exc:
        if exc.field in ("batch_size", "width", "height"):
            field = {"batch_size": "n"}.get(exc.field, "size")
            raise InvalidField(field, exc.allowed, size if field == "size" else exc.received) from exc
        raise
    # whole picture, drawn from the original at full strength; A1111's default blur of 4 softens the seam
    inpaint = InpaintSpec(regen, fill=1, full_res=False)
    return img2img_request(base, a1111, image, inpaint), fmt


def parse_edit_stream(fields: dict[str, str]) -> int | None:
    """`stream` and `partial_images` of an edit's form (sent as "true" and "2"), as `parse_openai_stream`."""
    stream = (fields.get("stream") or "false").lower() == "true"
    return parse_openai_stream(
        {"stream": stream, "partial_images": _form_number(fields, "partial_images", int)}
    )
