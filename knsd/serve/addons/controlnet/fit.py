"""Fitting a detected map to the generation size as sd-webui-controlnet does (`detectmap_proc`), pure.

The resize is the extension's "high quality" one: palettes (3 to 199 colours) resize with nearest
neighbour, two-colour black/white maps are re-binarised (Otsu) and, when they are one-pixel edges, thinned
back to one pixel (`thin.py`); otherwise area when shrinking and cubic when growing. An inpaint map keeps
its mask as a fourth channel, resized alongside and re-binarised at 127.
"""

from __future__ import annotations

from typing import Any

from knsd.serve.addons.controlnet.imageops import hwc3
from knsd.serve.addons.controlnet.thin import naked_nms, thin

Array = Any
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Envelope (Outer Fit)": "Resize and Fill",
}


def _hq_resize(x: Array, width: int, height: int) -> Array:
    import cv2
    import numpy as np

    mask = None
    if x.ndim == 3 and x.shape[2] == 4:
        mask, x = x[:, :, 3], x[:, :, :3]
    if x.shape[:2] != (height, width):
        area, old = width * height, x.shape[0] * x.shape[1]
        colours = len(np.unique(x.reshape(-1, x.shape[2]), axis=0))
        binary = colours == 2 and x.min() < 16 and x.max() > 240
        one_pixel = False
        if binary:
            kernel = np.ones((3, 3), np.uint8)
            opened = cv2.dilate(cv2.erode(x, kernel), kernel)
            one_pixel = 2 * int((opened < x).sum()) > int((x > 127).sum())
        if 2 < colours < 200:
            interpolation = cv2.INTER_NEAREST
        elif area < old:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_CUBIC
        y = cv2.resize(x, (width, height), interpolation=interpolation)
        if mask is not None:
            mask = cv2.resize(mask, (width, height), interpolation=interpolation)
        if binary:
            gray = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
            if one_pixel:
                gray = naked_nms(gray)
                _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
                gray = thin(gray, prune=area > old)
            else:
                _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            y = np.stack([gray] * 3, axis=2)
    else:
        y = x
    if mask is not None:
        binary_mask = ((mask > 127).astype(np.float32) * 255.0)[:, :, None].clip(0, 255).astype(np.uint8)
        y = np.concatenate([y, binary_mask], axis=2)
    return y


def fit_map(detected: Array, width: int, height: int, mode: str, inpaint: bool = False) -> Array:
    """The map at width x height by resize mode; inpaint maps (RGBA) come back as float32 RGBA, others as
    uint8 RGB."""
    import numpy as np

    m = detected.astype(np.float32) if inpaint else hwc3(detected)
    if mode == "Just Resize":
        return np.ascontiguousarray(_hq_resize(m, width, height))
    old_h, old_w = float(m.shape[0]), float(m.shape[1])
    k0, k1 = height / old_h, width / old_w
    if mode == "Resize and Fill":
        k = min(k0, k1)
        border = np.concatenate([m[0, :, :], m[-1, :, :], m[:, 0, :], m[:, -1, :]], axis=0)
        colour = np.median(border, axis=0).astype(m.dtype)
        if len(colour) == 4:
            colour[3] = 255  # the filled margin is masked: inpainted
        canvas = np.tile(colour[None, None], [height, width, 1])
        inner = _hq_resize(m, int(np.round(old_w * k)), int(np.round(old_h * k)))
        nh, nw = inner.shape[:2]
        top, left = max(0, (height - nh) // 2), max(0, (width - nw) // 2)
        canvas[top : top + nh, left : left + nw] = inner[: height - top, : width - left]
        return np.ascontiguousarray(canvas)
    k = max(k0, k1)
    outer = _hq_resize(m, int(np.round(old_w * k)), int(np.round(old_h * k)))
    nh, nw = outer.shape[:2]
    top, left = max(0, (nh - height) // 2), max(0, (nw - width) // 2)
    return np.ascontiguousarray(outer[top : top + height, left : left + width])


def pixel_perfect_res(image: Array, width: int, height: int, mode: str) -> int:
    """processor_res under pixel perfect: the scale mapping the input onto the target, times its short side
    (the smaller scale for Resize and Fill, the larger otherwise)."""
    import numpy as np

    h, w = float(image.shape[0]), float(image.shape[1])
    k0, k1 = height / h, width / w
    k = min(k0, k1) if mode == "Resize and Fill" else max(k0, k1)
    return int(np.round(k * min(h, w)))


def visualize(detected: Array) -> Array:
    """The map as the response shows it: uint8; an RGBA inpaint map with alpha 255 - mask // 2."""
    import numpy as np

    out = np.array(detected, copy=True)
    if out.ndim == 3 and out.shape[2] == 4:
        out[:, :, 3] = 255 - out[:, :, 3] // 2
    return np.ascontiguousarray(out.clip(0, 255).astype(np.uint8))
