"""What a unit takes from A1111's img2img (the extension's `choose_input_image` and
`try_crop_image_with_a1111_mask`), with the inpainting helpers of `knsd.serve.api.mask`/`resize`.

- A unit without an image takes the init image, fitted by img2img's `resize_mode` (0 and 3 Just Resize,
  1 Crop and Resize, 2 Resize and Fill); an inpaint unit takes img2img's `mask` as its mask, prepared as the
  extension does: gray, inverted with `inpainting_mask_invert`, blurred by `mask_blur_x/y` (not rounded).
- With "only masked" inpainting (`inpaint_full_res`) every unit's input except the reference ones is cut
  to the same crop as the inpainting (unless `inpaint_crop_input_image` is false): resized onto the mask
  by the unit's resize mode, cropped, and resized-and-filled to the generation size.
- `inpaint_only` beside A1111's own inpainting falls back to `inpaint` (the extension: "A1111 inpaint and
  ControlNet inpaint duplicated").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from knsd.serve.addons.controlnet.imageops import hwc3

log = logging.getLogger("knsd.serve")
Array = Any
_RESIZE = {0: "Just Resize", 1: "Crop and Resize", 2: "Resize and Fill", 3: "Just Resize"}
_MODE = {"Just Resize": 0, "Crop and Resize": 1, "Resize and Fill": 2}


@dataclass(frozen=True, slots=True)
class Img2ImgInput:
    """The img2img request's image, mask and "only masked" crop, as units see them."""

    image: Any  # PIL RGB: the init image as sent (flattened onto white), or already fitted
    resize_mode: str
    mask: Any = None  # PIL L, prepared; None without inpainting
    only_masked: bool = False
    padding: int = 0


def img2img_input(req: Any) -> Img2ImgInput | None:
    """The img2img input of a GenerationRequest; None for txt2img."""
    if req.init_image is None:
        return None
    spec = req.inpaint
    if spec is None or spec.mask is None or req.source_image is None:
        # the init image is already fitted to the generation size: every resize mode keeps it as it is
        return Img2ImgInput(req.init_image, "Just Resize")
    from knsd.serve.api.mask import blur_mask, invert_mask
    from knsd.serve.api.resize import resize_image

    mask = spec.mask.convert("L")
    if spec.invert:
        mask = invert_mask(mask)
    mask = blur_mask(mask, spec.blur_x, spec.blur_y)
    if mask.size != req.source_image.size:
        mask = resize_image(0, mask, *req.source_image.size)
    return Img2ImgInput(req.source_image, _RESIZE[req.resize_mode], mask, spec.full_res, spec.padding)


def unit_input(source: Img2ImgInput, inpaint: bool) -> tuple[Array, str]:
    """The RGBA input of a unit without an image, and the resize mode it is fitted with."""
    import numpy as np

    rgb = hwc3(np.asarray(source.image.convert("RGB"), dtype=np.uint8))
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    if inpaint and source.mask is not None:
        alpha = np.asarray(source.mask, dtype=np.uint8)
    return np.concatenate([rgb, alpha[:, :, None]], axis=2), source.resize_mode


def crop_to_mask(rgba: Array, source: Img2ImgInput, resize_mode: str, width: int, height: int) -> Array:
    """ "Only masked": the unit's input cut to the inpainting's crop of the mask, at width x height."""
    import numpy as np
    from PIL import Image

    from knsd.serve.api.mask import crop_region, expand_region
    from knsd.serve.api.resize import resize_image

    mask = source.mask
    box = crop_region(mask, source.padding) or (0, 0, mask.width, mask.height)
    box = expand_region(box, width, height, mask.width, mask.height)
    channels = []
    for c in range(rgba.shape[2]):
        layer = resize_image(_MODE[resize_mode], Image.fromarray(rgba[:, :, c]), mask.width, mask.height)
        layer = resize_image(2, layer.crop(box), width, height)
        channels.append(np.asarray(layer.convert("RGB"))[:, :, 0])
    return np.stack(channels, axis=2)


def downgraded(module: Any, source: Img2ImgInput | None) -> bool:
    """inpaint_only beside A1111's inpainting runs as inpaint (global harmonious)."""
    if module.name == "inpaint_only" and source is not None and source.mask is not None:
        log.warning(
            "A1111 inpaint and ControlNet inpaint duplicated. Falls back to inpaint_global_harmonious."
        )
        return True
    return False
