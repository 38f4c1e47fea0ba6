"""A1111's "extras" post-processing: `extra-single-image` and `extra-batch-images` (resize upscalers).

Ported from AUTOMATIC1111/stable-diffusion-webui `modules/postprocessing.py` (`run_postprocessing`),
`scripts/postprocessing_upscale.py` (`ScriptPostprocessingUpscale`) and `modules/api/models.py`
(`ExtrasBaseRequest`). Face restoration (GFPGAN, CodeFormer) needs weights knsd does not ship: a
visibility above 0 is a 422.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.pnginfo import read_info
from knsd.serve.upscalers import require_upscaler, upscale


@dataclass(frozen=True, slots=True)
class ExtrasRequest:
    """ExtrasBaseRequest, validated."""

    resize_mode: int
    upscaling_resize: float | int
    upscaling_resize_w: int
    upscaling_resize_h: int
    upscaling_crop: bool
    upscaler_1: str
    upscaler_2: str
    upscaler_2_visibility: float


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise InvalidField(key, "true or false", value)
    return value


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidField(key, f"a number between {lo:g} and {hi:g}", value)
    if not lo <= value <= hi:
        raise InvalidField(key, f"a number between {lo:g} and {hi:g}", value)
    return value


def _int(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidField(key, f"an integer between {lo} and {hi}", value)
    return value


def parse_extras(body: dict[str, Any]) -> ExtrasRequest:
    """Validate ExtrasBaseRequest's fields (A1111's defaults; null is not accepted, as in pydantic)."""
    for key in ("gfpgan_visibility", "codeformer_visibility"):
        if _number(body, key, 0, 0, 1) > 0:
            raise InvalidField(
                key, "0 (no face restorer is installed, see /sdapi/v1/face-restorers)", body[key]
            )
    _number(body, "codeformer_weight", 0, 0, 1)
    _bool(body, "show_extras_results", True)
    _bool(body, "upscale_first", False)
    resize = body.get("upscaling_resize", 2)
    if isinstance(resize, bool) or not isinstance(resize, (int, float)) or not 0 < resize <= 16:
        raise InvalidField("upscaling_resize", "a number above 0 and at most 16", resize)
    # pydantic turns a given number into a float (2 -> 2.0) but leaves the int default: so does knsd,
    # because the value is written into the infotext ("Postprocess upscale by: 2.0").
    return ExtrasRequest(
        resize_mode=_int(body, "resize_mode", 0, 0, 1),
        upscaling_resize=float(resize) if "upscaling_resize" in body else resize,
        upscaling_resize_w=_int(body, "upscaling_resize_w", 512, 1, 8192),
        upscaling_resize_h=_int(body, "upscaling_resize_h", 512, 1, 8192),
        upscaling_crop=_bool(body, "upscaling_crop", True),
        upscaler_1=require_upscaler("upscaler_1", body.get("upscaler_1", "None")),
        upscaler_2=require_upscaler("upscaler_2", body.get("upscaler_2", "None")),
        upscaler_2_visibility=_number(body, "extras_upscaler_2_visibility", 0, 0, 1),
    )


def _quote(value: Any) -> str:
    import json

    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",\n:") else text


def _upscaled(image: Any, req: ExtrasRequest, name: str, info: dict[str, Any], max_pixels: int) -> Any:
    from PIL import Image

    if req.resize_mode == 1:
        scale = max(req.upscaling_resize_w / image.width, req.upscaling_resize_h / image.height)
        info["Postprocess upscale to"] = f"{req.upscaling_resize_w}x{req.upscaling_resize_h}"
    else:
        scale = req.upscaling_resize
        info["Postprocess upscale by"] = req.upscaling_resize
    width, height = int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8)
    field = "upscaling_resize" if req.resize_mode == 0 else "upscaling_resize_w"
    if width < 8 or height < 8 or width * height > max_pixels:
        raise InvalidField(
            field,
            f"a size whose result is at least 8x8 and at most {max_pixels} pixels",
            f"{width}x{height}",
            f"the upscaled image would be {width}x{height}: it must be at least 8x8 and at most "
            f"{max_pixels} pixels (the server's pixel budget)",
        )
    result = upscale(image, name, scale)
    if req.resize_mode == 1 and req.upscaling_crop:
        canvas = Image.new("RGB", (req.upscaling_resize_w, req.upscaling_resize_h))
        canvas.paste(
            result,
            box=(
                req.upscaling_resize_w // 2 - result.width // 2,
                req.upscaling_resize_h // 2 - result.height // 2,
            ),
        )
        result = canvas
        info["Postprocess crop to"] = f"{result.width}x{result.height}"
    return result


def run_extras(images: list[Any], req: ExtrasRequest, max_pixels: int) -> tuple[list[Any], str]:
    """Post-process each image; returns the images (source metadata kept) and the last one's html_info."""
    if req.resize_mode == 1:
        w, h = req.upscaling_resize_w, req.upscaling_resize_h
        if w * h > max_pixels:
            raise InvalidField(
                "upscaling_resize_w", f"such that width x height is at most {max_pixels}", f"{w}x{h}"
            )
    outputs, infotext = [], ""
    for source in images:
        geninfo, items = read_info(source)
        meta = {k: v for k, v in items.items() if isinstance(v, str)}
        if geninfo:
            meta["parameters"] = geninfo
        image = source.convert("RGB")
        info: dict[str, Any] = {}
        if req.upscaler_1 != "None":
            result = _upscaled(image, req, req.upscaler_1, info, max_pixels)
            info["Postprocess upscaler"] = req.upscaler_1
            if req.upscaler_2 != "None" and req.upscaler_2_visibility > 0:
                second = _upscaled(image, req, req.upscaler_2, info, max_pixels)
                result = _blend(result, second, req.upscaler_2_visibility)
                info["Postprocess upscaler 2"] = req.upscaler_2
            image = result
        infotext = ", ".join(k if k == v else f"{k}: {_quote(v)}" for k, v in info.items() if v is not None)
        image.info = {**meta, "postprocessing": infotext}
        outputs.append(image)
    return outputs, "<p>" + "<br>\n".join(html.escape(x) for x in infotext.split("\n")) + "</p>"


def _blend(first: Any, second: Any, alpha: float) -> Any:
    from PIL import Image

    if first.mode != second.mode:
        second = second.convert(first.mode)
    return Image.blend(first, second, alpha)


def _keyword(key: str) -> bool:
    return 0 < len(key) < 80 and key.isprintable() and all(ord(c) < 256 for c in key)


def encode_with_info(image: Any) -> str:
    """Base64 PNG carrying every text key of `image.info`, as A1111's `encode_pil_to_base64` does."""
    import base64
    import io

    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for key, value in image.info.items():
        # PNG text keywords are 1-79 Latin-1 bytes; anything else cannot be written back.
        if isinstance(key, str) and isinstance(value, str) and _keyword(key):
            meta.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
