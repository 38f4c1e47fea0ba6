"""OpenAI's images API (`POST /v1/images/generations`) mapped onto an A1111 request (pure)."""

from __future__ import annotations

import re
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.fields import flag, integer, require_object
from knsd.serve.api.preview import MAX_PARTIAL_IMAGES
from knsd.serve.api.request import GenerationRequest, parse_txt2img

_SIZE = re.compile(r"^(\d+)x(\d+)$")


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
    fmt = body.get("response_format") or "b64_json"
    if fmt != "b64_json":
        raise InvalidField("response_format", '"b64_json" (this server does not host image URLs)', fmt)
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
