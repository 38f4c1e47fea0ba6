"""`POST /controlnet/detect`: one preprocessor on a list of images, as the extension's API runs it (pure).

Its body fields are the extension's: `controlnet_module` (name or label, default "none"),
`controlnet_input_images`, `controlnet_processor_res`, `controlnet_threshold_a`, `controlnet_threshold_b`
(-1: the module's default; out of range: the default, logged), `controlnet_masks` (one per image: the inpaint
mask, required by the inpaint modules, ignored with a log line by modules that take none) and `low_vram`
(memory placement only: harmless here). Maps come back at the preprocessor's own size; inpaint modules
show their input as RGBA with alpha 255 - mask / 2. Nothing is seeded: shuffle differs from call to call.
"""

from __future__ import annotations

import logging
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.catalog import Catalog
from knsd.serve.addons.controlnet.fit import visualize
from knsd.serve.addons.controlnet.imageops import hwc3
from knsd.serve.addons.controlnet.inputs import decode_array
from knsd.serve.addons.controlnet.modules import DETECT_UNSUPPORTED, Module, find_module
from knsd.serve.addons.controlnet.units import parse_unit
from knsd.serve.api.fields import flag

log = logging.getLogger("knsd.serve")
MAX_IMAGES = 16


def _module(body: dict[str, Any], catalog: Catalog) -> Module:
    name = body.get("controlnet_module")
    name = "none" if name is None else name
    module = find_module(name) if isinstance(name, str) else None
    if module is None:
        raise InvalidField(
            "controlnet_module", "a module of GET /controlnet/module_list", name, "Module not available"
        )
    if module.name in DETECT_UNSUPPORTED and name == module.name:
        raise InvalidField(
            "controlnet_module", "a module that returns an image", name, "Module not supported"
        )
    catalog.require(module, "controlnet_module")
    return module


def _strings(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    value = [] if value is None else value
    if not isinstance(value, list) or len(value) > MAX_IMAGES:
        raise InvalidField(key, f"a list of at most {MAX_IMAGES} base64 images", value)
    return value


def _check_size(module: Module, image: Any, res: int, max_pixels: int, i: int) -> None:
    """A map within the server's pixel budget (`--max-pixels`): a module with a resolution slider scales
    the image so its short side is `res`, the others keep its size."""
    h, w = image.shape[:2]
    if module.res.visible and res > 0:
        k = res / min(h, w)
        out_w, out_h, field = round(w * k), round(h * k), "controlnet_processor_res"
    else:
        out_w, out_h, field = w, h, f"controlnet_input_images[{i}]"
    if out_w * out_h > max_pixels:
        raise InvalidField(
            field,
            f"a map of at most {max_pixels} pixels (--max-pixels)",
            f"{out_w}x{out_h}",
            f"{field}: the detected map would be {out_w}x{out_h}, over the server's {max_pixels} pixels "
            "(--max-pixels)",
        )


def detect(body: dict[str, Any], catalog: Catalog, max_pixels: int | None = None) -> dict[str, Any]:
    """The answer to a detect request: `{"info": "Success", "images": [base64 PNG, ...]}`; maps past
    `max_pixels` are 422s."""
    import numpy as np

    from knsd.serve.api.images import encode_png

    module = _module(body, catalog)
    images, masks = _strings(body, "controlnet_input_images"), _strings(body, "controlnet_masks")
    if not images:
        raise InvalidField(
            "controlnet_input_images", "a non-empty list of base64 images", [], "No image selected"
        )
    if module.mask == "requires" and len(masks) != len(images):
        raise InvalidField(
            "controlnet_masks",
            "one mask per input image",
            f"{len(masks)} masks for {len(images)} images",
            f"Preprocessor {module.name} requires `controlnet_masks` param.",
        )
    flag(body, "low_vram", False)
    log.info("Detecting %d images with the %s module.", len(images), body.get("controlnet_module") or "none")
    raw = {
        "module": module.alias,  # the extension validates /detect's sliders under the module's label
        "processor_res": body.get("controlnet_processor_res"),
        "threshold_a": body.get("controlnet_threshold_a"),
        "threshold_b": body.get("controlnet_threshold_b"),
        "model": "detect",
    }
    try:
        unit = parse_unit(raw, 0, "detect", catalog.require)
    except InvalidField as exc:
        raise InvalidField("controlnet_" + exc.field.rsplit(".", 1)[-1], exc.allowed, exc.received) from exc
    out = []
    for i, data in enumerate(images):
        image = hwc3(decode_array(f"controlnet_input_images[{i}]", data))
        if i < len(masks) and module.mask:
            mask = hwc3(decode_array(f"controlnet_masks[{i}]", masks[i]))[:, :, :1]
            if mask.shape[:2] != image.shape[:2]:
                raise InvalidField(
                    f"controlnet_masks[{i}]",
                    f"a mask the image's size ({image.shape[1]}x{image.shape[0]})",
                    f"{mask.shape[1]}x{mask.shape[0]}",
                )
            image = np.concatenate([image, mask], axis=2)
        elif i < len(masks):
            log.warning("Preprocessor %s does not accept mask. Mask ignored", module.name)
        res, a, b = int(unit.processor_res), float(unit.threshold_a), float(unit.threshold_b)
        if max_pixels is not None:
            _check_size(module, image, res, max_pixels, i)
        try:
            detected = catalog.run(module, image, res, a, b, np.random)
        except Exception as exc:
            import cv2

            if not isinstance(exc, cv2.error):
                raise
            raise InvalidField(
                f"controlnet_input_images[{i}]",
                f"an image {module.name} can process at processor_res {unit.processor_res}",
                f"{image.shape[1]}x{image.shape[0]}",
            ) from exc
        shown = visualize(detected) if module.is_inpaint else hwc3(np.ascontiguousarray(detected))
        from PIL import Image

        out.append(encode_png(Image.fromarray(shown), ""))
    return {"info": "Success", "images": out}
