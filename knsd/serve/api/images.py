"""Image codecs of the API: base64 images in (PNG, JPEG, WebP; `data:` URLs too) and PNGs out, carrying
A1111's `parameters` text chunk."""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from knsd.errors import InvalidField


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
    try:
        raw = base64.b64decode(_DATA_URL.sub("", data, count=1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField(field, "valid base64", data, f"{field} is not valid base64: {exc}") from exc
    return open_image(field, raw, mode)


def open_image(field: str, raw: bytes, mode: str | None = "RGB") -> Any:
    """An image file's bytes (PNG, JPEG, WebP, ...: sniffed, never trusted from a name) as a PIL image."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidField(
            field, "an image (PNG, JPEG or WebP)", f"{len(raw)} bytes", f"{field} is not a readable image"
        ) from exc
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
