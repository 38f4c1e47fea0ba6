"""A1111's inpainting fields of `/sdapi/v1/img2img`, validated into one spec (pure).

A request inpaints when it has a `mask` (base64 image; white = regenerate, or an RGBA mask's opaque area);
the other fields then say how (A1111 v1.10 API defaults in brackets): `mask_blur_x`/`mask_blur_y` [4] or
`mask_blur` for both, `mask_round` [true], `inpainting_fill` [0: fill, 1: original, 2: latent noise,
3: latent nothing], `inpaint_full_res` [true: only masked] with `inpaint_full_res_padding` [0],
`inpainting_mask_invert` [0]. Without a mask they change nothing, as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.fields import integer
from knsd.serve.api.images import decode_image
from knsd.serve.api.mask import (
    binary_mask,
    blur_mask,
    crop_region,
    expand_region,
    fill_masked,
    invert_mask,
    overlay_of,
)
from knsd.serve.api.resize import resize_image

FILL_MODES = ("fill", "original", "latent noise", "latent nothing")  # inpainting_fill 0..3
MAX_BLUR = 64  # A1111's mask blur slider
MAX_PADDING = 2048


@dataclass(frozen=True, slots=True)
class InpaintSpec:
    """How to inpaint: the mask as sent (any PIL mode) and A1111's mask options."""

    mask: Any
    blur_x: int = 4
    blur_y: int = 4
    round: bool = True
    fill: int = 0
    full_res: bool = True
    padding: int = 0
    invert: bool = False

    @property
    def blur(self) -> int | None:
        """A1111's `mask_blur`: the blur when both axes agree, else None."""
        return self.blur_x if self.blur_x == self.blur_y else None


def _switch(body: dict[str, Any], key: str, default: bool) -> bool:
    """true/false, or the 0/1 integers A1111's UI sends for these switches."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    raise InvalidField(key, "true or false (or 0 or 1)", value)


def parse_inpaint(body: dict[str, Any]) -> InpaintSpec | None:
    """The inpainting spec of an img2img body, None without a mask; bad values are 422s naming the field."""
    data = body.get("mask")
    blur_x = integer(body, "mask_blur_x", 4, 0, MAX_BLUR)
    blur_y = integer(body, "mask_blur_y", 4, 0, MAX_BLUR)
    if body.get("mask_blur") is not None:  # A1111 assigns mask_blur after the axes: it wins
        blur_x = blur_y = integer(body, "mask_blur", 4, 0, MAX_BLUR)
    spec = InpaintSpec(
        mask=None,
        blur_x=blur_x,
        blur_y=blur_y,
        round=_switch(body, "mask_round", True),
        fill=integer(body, "inpainting_fill", 0, 0, len(FILL_MODES) - 1),
        full_res=_switch(body, "inpaint_full_res", True),
        padding=integer(body, "inpaint_full_res_padding", 0, 0, MAX_PADDING),
        invert=_switch(body, "inpainting_mask_invert", False),
    )
    if data is None or data == "":
        return None
    return replace(spec, mask=decode_image("mask", data, mode=None))


@dataclass(frozen=True, slots=True)
class PreparedInpaint:
    """A1111's img2img init in pixels: the image the sampler starts from, the mask it blends with, and the
    original pixels laid back over the result."""

    image: Any  # RGB at width x height: the (cropped,) resized, filled init image
    mask: Any  # L at width x height: blurred, inverted, cropped; None after the blank-mask fallback
    overlay: Any  # RGBA: the original outside the mask (the init image's size when only masked)
    paste_to: tuple[int, int, int, int] | None  # (x, y, w, h) of the crop in the original, only masked
    extra: dict[str, Any]  # infotext keys, in A1111's order


def prepare(spec: InpaintSpec, image: Any, width: int, height: int, resize_mode: int) -> PreparedInpaint:
    """Mask, crop, resize and fill as A1111 v1.10 does before encoding (`image` is the flattened init image).

    "Only masked" with a blank mask falls back to plain img2img, as A1111 does; a mask of another size than
    the image is first resized to it there (A1111 leaves that case undefined).
    """
    import numpy as np
    from PIL import Image

    extra: dict[str, Any] = {}
    mask = binary_mask(spec.mask, spec.round)
    if spec.invert:
        mask = invert_mask(mask)
        extra["Mask mode"] = "Inpaint not masked"
    if spec.blur_x or spec.blur_y:
        mask = blur_mask(mask, spec.blur_x, spec.blur_y)
        extra["Mask blur"] = spec.blur
    paste_to = None
    if spec.full_res:
        if mask.size != image.size:
            mask = resize_image(0, mask, *image.size)
        box = crop_region(mask, spec.padding)
        if box is None:
            return PreparedInpaint(resize_image(resize_mode, image, width, height), None, None, None, extra)
        left, top, right, bottom = box = expand_region(box, width, height, *mask.size)
        overlay = overlay_of(image, mask)
        mask = resize_image(2, mask.crop(box), width, height).convert("L")
        image = resize_image(2, image.crop(box), width, height)
        paste_to = (left, top, right - left, bottom - top)
        extra["Inpaint area"] = "Only masked"
        extra["Masked area padding"] = spec.padding
    else:
        mask = resize_image(resize_mode, mask, width, height).convert("L")
        image = resize_image(resize_mode, image, width, height)
        # the overlay is opaque wherever the blurred mask is below half: its soft edge lies inside the mask
        doubled = np.clip(np.asarray(mask, np.float32) * 2, 0, 255).astype(np.uint8)
        overlay = overlay_of(image, Image.fromarray(doubled))
    if spec.fill != 1:
        image = fill_masked(image, mask)  # latent noise and latent nothing start from this too
        extra["Masked content"] = FILL_MODES[spec.fill]
    return PreparedInpaint(image, mask, overlay, paste_to, extra)
