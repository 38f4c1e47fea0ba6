"""A1111 and OpenAI request bodies, validated up front into one small request type (pure)."""

from __future__ import annotations

import base64
import binascii
import io
import math
import random
import re
from dataclasses import dataclass, replace
from typing import Any

from knsd.errors import BadRequest, InvalidField
from knsd.serve.samplers import SamplerChoice, resolve_sampler

MAX_SEED = 4294967294  # A1111 draws random seeds from randrange(4294967294)
MIN_SIDE, MAX_SIDE = 64, 2048


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One txt2img or img2img job, validated; `init_image` set for img2img."""

    prompt: str
    negative_prompt: str
    seed: int
    sampler: SamplerChoice
    batch_size: int
    n_iter: int
    steps: int
    cfg_scale: float
    width: int
    height: int
    denoising_strength: float | None = None
    init_image: Any = None  # a PIL image, RGB
    send_images: bool = True

    @property
    def seeds(self) -> list[int]:
        """Every image's seed: seed, seed+1, ... across all batches, like A1111."""
        return [self.seed + i for i in range(self.batch_size * self.n_iter)]


def _integer(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(key, f"an integer between {lo} and {hi}", value)
    if not lo <= value <= hi:
        raise InvalidField(key, f"an integer between {lo} and {hi}", value)
    return value


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidField(key, f"a number between {lo:g} and {hi:g}", value)
    if not lo <= value <= hi:
        raise InvalidField(key, f"a number between {lo:g} and {hi:g}", value)
    return float(value)


def _text(body: dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidField(key, "a string", value)
    return value


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidField(key, "a string", value)
    return value or None


def _side(body: dict[str, Any], key: str) -> int:
    allowed = f"a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}"
    value = body.get(key)
    if value is None:
        return 512
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value % 8
        or not MIN_SIDE <= value <= MAX_SIDE
    ):
        raise InvalidField(key, allowed, value)
    return value


def _seed(body: dict[str, Any]) -> int:
    seed = _integer(body, "seed", -1, -1, MAX_SEED)
    return random.randrange(MAX_SEED) if seed == -1 else seed


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidField(
            "width",
            f"such that width x height is at most {max_pixels} pixels",
            f"{width}x{height}",
            f"width x height must be at most {max_pixels} pixels (the server's pixel budget), got {width}x{height}",
        )


def require_object(body: Any) -> dict[str, Any]:
    """A request body must be a JSON object."""
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def parse_txt2img(body: dict[str, Any], max_pixels: int) -> GenerationRequest:
    """Validate an A1111 `/sdapi/v1/txt2img` body; unknown keys are ignored as A1111 does."""
    body = require_object(body)
    width, height = _side(body, "width"), _side(body, "height")
    _check_pixels(width, height, max_pixels)
    send_images = body.get("send_images", True)
    if not isinstance(send_images, bool):
        raise InvalidField("send_images", "true or false", send_images)
    return GenerationRequest(
        prompt=_text(body, "prompt"),
        negative_prompt=_text(body, "negative_prompt"),
        seed=_seed(body),
        sampler=resolve_sampler(
            _optional_text(body, "sampler_name") or _optional_text(body, "sampler_index"),
            _optional_text(body, "scheduler"),
        ),
        batch_size=_integer(body, "batch_size", 1, 1, 8),
        n_iter=_integer(body, "n_iter", 1, 1, 8),
        steps=_integer(body, "steps", 50, 1, 150),
        cfg_scale=_number(body, "cfg_scale", 7.0, 0.0, 30.0),
        width=width,
        height=height,
        send_images=send_images,
    )


_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")


def decode_image(field: str, data: Any) -> Any:
    """Decode a base64 image (optionally a `data:` URL) into an RGB PIL image."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, str) or not data:
        raise InvalidField(field, "a base64-encoded PNG, JPEG or WebP image", data)
    try:
        raw = base64.b64decode(_DATA_URL.sub("", data, count=1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField(field, "valid base64", data, f"{field} is not valid base64: {exc}") from exc
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidField(
            field, "a base64-encoded image", f"{len(raw)} bytes", f"{field} is not a readable image"
        ) from exc
    return image.convert("RGB")


def parse_img2img(body: dict[str, Any], max_pixels: int) -> GenerationRequest:
    """Validate an A1111 `/sdapi/v1/img2img` body (`init_images` required, `denoising_strength`)."""
    base = parse_txt2img(body, max_pixels)
    images = body.get("init_images")
    if not isinstance(images, list) or not images:
        raise InvalidField("init_images", "a non-empty list of base64 images", images)
    if len(images) > 1:
        raise InvalidField("init_images", "a list of exactly one base64 image", f"{len(images)} images")
    resize_mode = _integer(body, "resize_mode", 0, 0, 1)
    image = decode_image("init_images[0]", images[0])
    image = _fit(image, base.width, base.height, crop=resize_mode == 1)
    strength = _number(body, "denoising_strength", 0.75, 0.0, 1.0)
    if strength * base.steps < 1:
        # diffusers runs int(steps x strength) denoising steps; zero of them is not a generation.
        raise InvalidField(
            "denoising_strength",
            f"at least {1 / base.steps:g} with steps={base.steps} (denoising_strength x steps >= 1)",
            strength,
        )
    return replace(
        base,
        denoising_strength=strength,
        init_image=image,
    )


def _fit(image: Any, width: int, height: int, crop: bool) -> Any:
    """A1111's resize modes 0 (just resize) and 1 (crop and resize)."""
    from PIL import ImageOps

    if crop:
        return ImageOps.fit(image, (width, height))
    return image.resize((width, height))


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
