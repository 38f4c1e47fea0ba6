"""Inpainting masks as A1111 v1.10 prepares them (pure: PIL, numpy, OpenCV).

White (255) marks the area to regenerate, black (0) the area to keep. The steps, in A1111's order:
`binary_mask` (an RGBA mask speaks through its alpha), `invert_mask`, `blur_mask` (Gaussian, horizontal then
vertical), `crop_region` + `expand_region` for "only masked" inpainting, `fill_masked` for
`inpainting_fill` 0, and `overlay_of` / `apply_overlay` to lay the original pixels back over the result.
ControlNet's inpaint units share these helpers.
"""

from __future__ import annotations

from typing import Any

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL's crop box)


def binary_mask(image: Any, round_alpha: bool = True) -> Any:
    """The mask in mode L: an RGBA image whose alpha is not all opaque gives its alpha (thresholded at
    >128 with `round_alpha`); anything else its luminance, unthresholded (A1111's create_binary_mask)."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.getchannel("A")
        return alpha.point(lambda v: 255 if v > 128 else 0) if round_alpha else alpha
    return image.convert("L")


def invert_mask(mask: Any) -> Any:
    """Regenerate what was kept and keep what was masked ("Inpaint not masked")."""
    from PIL import ImageOps

    return ImageOps.invert(mask.convert("L"))


def kernel_width(sigma: float) -> int:
    """A1111's Gaussian kernel width for a blur of `sigma` pixels: 2 * int(2.5 * sigma + 0.5) + 1."""
    return 2 * int(2.5 * sigma + 0.5) + 1


def blur_mask(mask: Any, sigma_x: float, sigma_y: float) -> Any:
    """Separable Gaussian blur, horizontal pass first; a sigma of 0 skips its pass (OpenCV, reflect-101
    borders, as A1111)."""
    import cv2
    import numpy as np
    from PIL import Image

    pixels = np.array(mask.convert("L"))
    if sigma_x > 0:
        pixels = cv2.GaussianBlur(pixels, (kernel_width(sigma_x), 1), sigma_x)
    if sigma_y > 0:
        pixels = cv2.GaussianBlur(pixels, (1, kernel_width(sigma_y)), sigma_y)
    return Image.fromarray(pixels)


def crop_region(mask: Any, padding: int) -> Box | None:
    """The box around every non-black pixel, grown by `padding` on each side inside the image; None for an
    all-black mask."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    left, top, right, bottom = (int(v) for v in box)
    return (
        max(left - padding, 0),
        max(top - padding, 0),
        min(right + padding, mask.width),
        min(bottom + padding, mask.height),
    )


def _grow(low: int, high: int, extra: int, limit: int) -> tuple[int, int]:
    """Widen [low, high) by `extra` (the odd pixel on the high side), slid back inside [0, limit)."""
    low, high = low - extra // 2, high + extra - extra // 2
    if high > limit:
        low, high = low - (high - limit), limit
    if low < 0:
        low, high = 0, high - low
    return low, min(high, limit)


def expand_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """Grow the box's shorter side until it has the processing size's aspect ratio (A1111's
    expand_crop_region: a 128x32 box processed at 512x512 becomes 128x128), kept inside the image."""
    left, top, right, bottom = box
    ratio = width / height
    if (right - left) / (bottom - top) > ratio:
        top, bottom = _grow(top, bottom, int((right - left) / ratio - (bottom - top)), image_height)
    else:
        left, right = _grow(left, right, int((bottom - top) * ratio - (right - left)), image_width)
    return left, top, right, bottom


def _masked_out(image: Any, mask: Any) -> Any:
    """`image` (premultiplied RGBa) where the mask is black, transparent where it is white."""
    from PIL import Image

    out = Image.new("RGBa", image.size)
    out.paste(image.convert("RGBA").convert("RGBa"), mask=invert_mask(mask))
    return out


def fill_masked(image: Any, mask: Any) -> Any:
    """Paint the masked area with the surrounding colours, blurred in from the edge (A1111's masking.fill:
    the kept pixels blurred at radii 256, 64, 16, 4, 2 and 0, stacked from widest to sharpest)."""
    from PIL import Image, ImageFilter

    kept = _masked_out(image, mask)
    canvas = Image.new("RGBA", image.size)
    for radius, times in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(times):
            canvas.alpha_composite(layer)
    return canvas.convert("RGB")


def overlay_of(image: Any, mask: Any) -> Any:
    """The original pixels to lay over a result: opaque where `mask` is black, transparent where white."""
    return _masked_out(image, mask).convert("RGBA")


def apply_overlay(result: Any, overlay: Any, paste_to: Box | None = None) -> Any:
    """`result` under `overlay`; with `paste_to` (x, y, w, h), the result is first resized (crop and resize)
    into that box of a transparent canvas the overlay's size, as "only masked" inpainting pastes back."""
    from PIL import Image

    from knsd.serve.api.resize import resize_image

    if paste_to is not None:
        x, y, w, h = paste_to
        canvas = Image.new("RGBA", overlay.size)
        canvas.paste(resize_image(1, result, w, h), (x, y))
        result = canvas
    out = result.convert("RGBA")
    out.alpha_composite(overlay)
    return out.convert("RGB")
