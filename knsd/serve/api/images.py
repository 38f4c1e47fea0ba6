"""Image codecs of the API: base64 images in (PNG, JPEG, WebP; `data:` URLs too) and PNGs out, carrying
A1111's `parameters` text chunk.

Every image a request carries is held to its server's `ImageLimits` before it is decoded: the format is
sniffed (PNG, JPEG and WebP only), its size read from the header, and the pixels counted against the
image's and the request's budget, so a small compressed file never becomes gigabytes of pixels. A request's
budget lives in a context variable (`decoding`), set around the request's parse by the HTTP layer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from knsd.errors import InvalidField

FORMATS = ("PNG", "JPEG", "WEBP")  # what the API documents; GIF, TIFF, BMP, ICO, ... are refused


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Decoded pixels of one input image (`--max-image-pixels`), of all a request's input images
    (`--max-request-pixels`) and how many images one request may carry (`--max-images`)."""

    image_pixels: int = 4096 * 4096
    request_pixels: int = 3 * 4096 * 4096
    images: int = 16


@dataclass(slots=True)
class _Spent:
    limits: ImageLimits
    images: int = 0
    pixels: int = 0
    # The same base64 string decoded again (a script's generations share the request's init image) is
    # neither decoded nor counted twice: keyed by the string's identity, which the entry keeps alive.
    decoded: dict[tuple[int, str | None], tuple[str, Any]] = field(default_factory=dict)


_BUDGET: contextvars.ContextVar[_Spent | None] = contextvars.ContextVar("knsd_image_budget", default=None)


@contextlib.contextmanager
def decoding(limits: ImageLimits) -> Iterator[None]:
    """Count the images decoded inside against one request's `limits`."""
    token = _BUDGET.set(_Spent(limits))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _charge(field: str, width: int, height: int) -> None:
    """Count one image of `width` x `height` against the request's budget (the defaults outside one)."""
    spent = _BUDGET.get() or _Spent(ImageLimits())
    limits, pixels = spent.limits, width * height
    if spent.images + 1 > limits.images:
        raise InvalidField(
            field, f"at most {limits.images} images per request (--max-images)", f"image {spent.images + 1}"
        )
    if pixels > limits.image_pixels:
        raise InvalidField(
            field,
            f"an image of at most {limits.image_pixels} pixels (--max-image-pixels)",
            f"{width}x{height}",
        )
    if spent.pixels + pixels > limits.request_pixels:
        raise InvalidField(
            field,
            f"images of at most {limits.request_pixels} pixels in all (--max-request-pixels)",
            f"{spent.pixels + pixels} pixels",
        )
    spent.images += 1
    spent.pixels += pixels


def encode_png(image: Any, parameters: str) -> str:
    """Base64 PNG (no `data:` prefix, as A1111 returns) carrying the infotext in a `parameters` chunk."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")


def decode_image(field: str, data: Any, mode: str | None = "RGB") -> Any:
    """Decode a base64 image (optionally a `data:` URL) into a PIL image in `mode` (None: as stored)."""
    if not isinstance(data, str) or not data:
        raise InvalidField(field, "a base64-encoded PNG, JPEG or WebP image", data)
    spent = _BUDGET.get()
    seen = None if spent is None else spent.decoded.get((id(data), mode))
    if seen is not None and seen[0] is data:
        return seen[1]
    try:
        raw = base64.b64decode(_DATA_URL.sub("", data, count=1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField(field, "valid base64", data, f"{field} is not valid base64: {exc}") from exc
    image = open_image(field, raw, mode)
    if spent is not None:
        spent.decoded[(id(data), mode)] = (data, image)
    return image


def open_image(field: str, raw: bytes, mode: str | None = "RGB") -> Any:
    """An image file's bytes (PNG, JPEG or WebP: sniffed, never trusted from a name) as a PIL image, its
    header checked against the request's budget before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    unreadable = f"{field} is not a readable PNG, JPEG or WebP image"
    try:
        image = Image.open(io.BytesIO(raw), formats=FORMATS)  # the header only
        _charge(field, *image.size)
        image.load()
    except InvalidField:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidField(field, "an image (PNG, JPEG or WebP)", f"{len(raw)} bytes", unreadable) from exc
    except Image.DecompressionBombError as exc:  # past twice Pillow's own limit, before our budget is read
        raise InvalidField(field, "an image (PNG, JPEG or WebP)", f"{len(raw)} bytes", str(exc)) from exc
    return image if mode is None else image.convert(mode)


def _keyword(key: str) -> bool:
    return 0 < len(key) < 80 and key.isprintable() and all(ord(c) < 256 for c in key)


def encode_with_info(image: Any) -> str:
    """Base64 PNG carrying every text key of `image.info`, as A1111's `encode_pil_to_base64` does."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for key, value in image.info.items():
        # PNG text keywords are 1-79 Latin-1 bytes; anything else cannot be written back.
        if isinstance(key, str) and isinstance(value, str) and _keyword(key):
            meta.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
