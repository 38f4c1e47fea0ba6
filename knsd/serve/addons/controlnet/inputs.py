"""A unit's input image as the extension builds it (pure): every form of `image`/`mask` becomes one RGBA
array whose alpha is the mask, and each module sees the part it takes.

- `image`: a base64 string, `{"image": b64, "mask": b64}`, `[b64, b64_mask]` or a one-element list of
  such objects; `mask` (alias `mask_image`) beside a string image.
- RGB = the image with any alpha composited over white; A = the first channel of the mask (zeros without).
- Inpaint modules take the RGBA (the mask marks what to inpaint). Every other module takes the RGB, unless
  the mask is neither empty (all <= 5) nor full (all >= 250): then the mask itself is the input ("canvas
  scribble mode"), so `mask_image` with canny detects the mask's edges.
"""

from __future__ import annotations

import logging
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.imageops import hwc3

log = logging.getLogger("knsd.serve")
Array = Any


def decode_array(field: str, data: Any) -> Array:
    """A base64 image as a uint8 array in its stored mode (gray, RGB or RGBA; palettes expanded)."""
    import numpy as np

    from knsd.serve.api.images import decode_image

    image = decode_image(field, data, mode=None)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image, dtype=np.uint8)


def _pair(value: Any, mask: Any, field: str) -> tuple[Any, Any, str]:
    """(image, mask, field of the image) from the accepted forms of `image`."""
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict):
            value = value[0]
            field += "[0]"
        elif len(value) == 2 and all(isinstance(v, str) for v in value):
            return value[0], value[1], field + "[0]"
        else:
            raise InvalidField(
                field,
                "a base64 image, {image, mask}, [image, mask] or one {image, mask} "
                "(several inputs are for IP-Adapter models, which knsd does not load)",
                f"a list of {len(value)}",
            )
    if isinstance(value, dict):
        if mask is not None:
            raise InvalidField(field, "the mask inside image or beside it, not both", "both")
        return value.get("image"), value.get("mask"), field + ".image"
    return value, mask, field


def unit_rgba(raw: dict[str, Any], prefix: str) -> Array | None:
    """The unit's image and mask as one RGBA array, None without an image."""
    import numpy as np

    mask = raw.get("mask")
    if raw.get("mask_image") is not None:
        if mask is not None:
            raise InvalidField(f"{prefix}.mask_image", "mask or mask_image, not both", "both")
        mask = raw["mask_image"]
    image, mask, field = _pair(raw.get("image"), mask, f"{prefix}.image")
    if image in (None, ""):
        if mask is not None:
            raise InvalidField(f"{prefix}.image", "an image for the mask to apply to", None)
        return None
    rgb = hwc3(decode_array(field, image))
    if mask is None:
        alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)
    else:
        mask_field = field.replace(".image", ".mask") if field.endswith(".image") else f"{prefix}.mask"
        alpha = hwc3(decode_array(mask_field, mask))[:, :, 0]
        if alpha.shape != rgb.shape[:2]:
            raise InvalidField(
                mask_field,
                f"a mask the image's size ({rgb.shape[1]}x{rgb.shape[0]})",
                f"{alpha.shape[1]}x{alpha.shape[0]}",
            )
    return np.concatenate([rgb, alpha[:, :, None]], axis=2)


def module_input(rgba: Array, inpaint: bool) -> Array:
    """What the preprocessor sees: the RGBA for inpaint modules; else the RGB, or the mask as the image."""
    if inpaint:
        return rgba
    alpha = rgba[:, :, 3]
    if (alpha <= 5).all() or (alpha >= 250).all():
        return rgba[:, :, :3]
    log.info("Canvas scribble mode. Using mask scribble as input.")
    return hwc3(alpha)


def region_mask(field: str, data: Any) -> Array:
    """`effective_region_mask`: its first channel (as stored, alpha not composited) scaled to [0, 1]."""
    import numpy as np

    pixels = decode_array(field, data)
    first = pixels if pixels.ndim == 2 else pixels[:, :, 0]
    return first.astype(np.float32) / 255.0
