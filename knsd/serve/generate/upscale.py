"""Image upscaling with A1111's built-in upscalers (None, Lanczos, Nearest): the extras' `Upscaler.upscale`
and hires fix's `resize_image`.

Follows AUTOMATIC1111/stable-diffusion-webui `modules/upscaler.py` and `modules/images.py`.
"""

from __future__ import annotations

from typing import Any


def upscale(image: Any, name: str, scale: float) -> Any:
    """A1111's `Upscaler.upscale`: up to three passes of the upscaler, then Lanczos to a multiple of 8."""
    from PIL import Image

    dest_w = int((image.width * scale) // 8 * 8)
    dest_h = int((image.height * scale) // 8 * 8)
    resample = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}.get(name)
    for _ in range(3):
        shape = (image.width, image.height)
        if resample is not None:
            image = image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
        if shape == (image.width, image.height) or (image.width >= dest_w and image.height >= dest_h):
            break
    if (image.width, image.height) != (dest_w, dest_h):
        image = image.resize((dest_w, dest_h), resample=Image.Resampling.LANCZOS)
    return image


def upscale_image(image: Any, name: str, width: int, height: int) -> Any:
    """A1111's resize_image (mode 0, stretch) with a built-in upscaler: None, Lanczos or Nearest."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    if name == "None" or image.mode == "L":
        return image.resize((width, height), resample=lanczos)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        # Upscaler.upscale: one call of the scaler reaches the destination, then LANCZOS to it.
        dest = (int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8))
        resample = Image.Resampling.NEAREST if name == "Nearest" else lanczos
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
        if image.size != dest:
            image = image.resize(dest, resample=lanczos)
    if image.size != (width, height):
        image = image.resize((width, height), resample=lanczos)
    return image
