"""A1111's "extras" post-processing run on images: resize upscalers, the second upscaler's blend, and the
`postprocessing` infotext.

Follows AUTOMATIC1111/stable-diffusion-webui `modules/postprocessing.py` (`run_postprocessing`) and
`scripts/postprocessing_upscale.py` (`ScriptPostprocessingUpscale`).
"""

from __future__ import annotations

import html
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.extras import ExtrasRequest
from knsd.serve.api.pnginfo import read_info
from knsd.serve.generate.upscale import upscale


def _quote(value: Any) -> str:
    import json

    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",\n:") else text


def _upscale_scale(image: Any, req: ExtrasRequest, max_pixels: int) -> float:
    """The scale of an upscale, after checking its result's size against `max_pixels`."""
    if req.resize_mode == 1:
        scale = float(max(req.upscaling_resize_w / image.width, req.upscaling_resize_h / image.height))
    else:
        scale = req.upscaling_resize
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
    return scale


def _upscaled(image: Any, req: ExtrasRequest, name: str, info: dict[str, Any], max_pixels: int) -> Any:
    from PIL import Image

    scale = _upscale_scale(image, req, max_pixels)
    if req.resize_mode == 1:
        info["Postprocess upscale to"] = f"{req.upscaling_resize_w}x{req.upscaling_resize_h}"
    else:
        info["Postprocess upscale by"] = req.upscaling_resize
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


def run_extras(
    images: list[Any], req: ExtrasRequest, max_pixels: int, fields: list[str] | None = None
) -> tuple[list[Any], str]:
    """Post-process each image; returns the images (source metadata kept) and the last one's html_info.
    A result past `max_pixels` is a 422, with upscaler `None` too (the image comes back at its own size:
    `fields` name the images)."""
    if req.resize_mode == 1:
        w, h = req.upscaling_resize_w, req.upscaling_resize_h
        if w * h > max_pixels:
            raise InvalidField(
                "upscaling_resize_w", f"such that width x height is at most {max_pixels}", f"{w}x{h}"
            )
    check_sizes(images, req, max_pixels, fields)
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


def check_sizes(
    images: list[Any], req: ExtrasRequest, max_pixels: int, fields: list[str] | None = None
) -> None:
    """Every result within `max_pixels` (422s), decided before any work: with upscaler `None` the result is
    the image itself."""
    for i, source in enumerate(images):
        if req.upscaler_1 != "None":
            _upscale_scale(source, req, max_pixels)
        elif source.width * source.height > max_pixels:
            field = fields[i] if fields else f"image[{i}]"
            raise InvalidField(
                field,
                f"an image of at most {max_pixels} pixels with upscaler None (--max-pixels)",
                f"{source.width}x{source.height}",
                f"{field}: with upscaler None the result is the image itself, {source.width}x{source.height}, "
                f"over the server's {max_pixels} pixels (--max-pixels)",
            )


def _blend(first: Any, second: Any, alpha: float) -> Any:
    from PIL import Image

    if first.mode != second.mode:
        second = second.convert(first.mode)
    return Image.blend(first, second, alpha)
