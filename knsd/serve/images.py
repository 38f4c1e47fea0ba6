"""PNG encoding with A1111's `parameters` text chunk."""

from __future__ import annotations

import base64
import io
from typing import Any


def encode_png(image: Any, parameters: str) -> str:
    """Base64 PNG (no `data:` prefix, as A1111 returns) carrying the infotext in a `parameters` chunk."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
