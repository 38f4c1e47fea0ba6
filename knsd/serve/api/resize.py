"""A1111's image resize modes and transparency flattening (pure, PIL).

The modes of img2img's `resize_mode` (A1111 `images.resize_image`): 0 just resize, 1 crop and resize (fill
the frame, centre, cut the excess), 2 resize and fill (fit inside, centre, stretch the edge rows or columns
into the empty bands). Every resize is Lanczos, as A1111 does with no img2img upscaler set.
"""

from __future__ import annotations

from typing import Any

RESIZE_MODES = (0, 1, 2)
BACKGROUND = "#ffffff"  # A1111's img2img_background_color


def flatten(image: Any, color: str = BACKGROUND) -> Any:
    """An RGB image with any transparency composited onto `color` (A1111 flattens init images this way)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, color)
        canvas.paste(rgba, mask=rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def _lanczos(image: Any, width: int, height: int, box: tuple[int, int, int, int] | None = None) -> Any:
    from PIL import Image

    return image.resize((width, height), resample=Image.Resampling.LANCZOS, box=box)


def resize_image(mode: int, image: Any, width: int, height: int) -> Any:
    """`image` at width x height by A1111 resize mode 0, 1 or 2 (modes 1 and 2 give RGB, as A1111's do)."""
    from PIL import Image

    if mode == 0:
        return _lanczos(image, width, height)
    ratio, src_ratio = width / height, image.width / image.height
    wider = ratio > src_ratio  # the frame is wider than the image
    if mode == 1:  # scale until the frame is covered
        w = width if wider else image.width * height // image.height
        h = height if not wider else image.height * width // image.width
    else:  # scale until the image fits inside
        w = width if ratio < src_ratio else image.width * height // image.height
        h = height if ratio >= src_ratio else image.height * width // image.width
    resized = _lanczos(image, w, h)
    out = Image.new("RGB", (width, height))
    left, top = width // 2 - w // 2, height // 2 - h // 2
    out.paste(resized, (left, top))
    if mode == 2 and ratio < src_ratio and top > 0:  # bands above and below: stretch the edge rows
        out.paste(_lanczos(resized, width, top, (0, 0, width, 0)), (0, 0))
        out.paste(_lanczos(resized, width, top, (0, h, width, h)), (0, top + h))
    elif mode == 2 and ratio > src_ratio and left > 0:  # bands left and right: the edge columns
        out.paste(_lanczos(resized, left, height, (0, 0, 0, height)), (0, 0))
        out.paste(_lanczos(resized, left, height, (w, 0, w, height)), (left + w, 0))
    return out
