"""What the extension does to the decoded images of some units (its `postprocess_batch`), pure numpy.

- inpaint_only: paste the original back outside the mask, through the mask dilated and box-blurred by
  sigma pixels (the option `control_net_inpaint_blur_sigma`, 7), so the seam is soft;
- recolor_luminance / recolor_intensity: replace the result's Lab lightness / HSV value by the map's.
The maps are the units' final ones (the hires map in a hires run); an image of another size (an interrupted
hires run) is left as it is, as the extension does.
"""

from __future__ import annotations

from typing import Any

Array = Any
INPAINT_BLUR_SIGMA = 7


def paste_mask(alpha: Array, sigma: int = INPAINT_BLUR_SIGMA) -> Array:
    """The fitted map's mask (0/255) as float weights in [0, 1]: dilated, then box-blurred, sigma x sigma."""
    import cv2
    import numpy as np

    m = (alpha.astype(np.float32) / 255.0).astype(np.float32)
    m = cv2.dilate(m, np.ones((sigma, sigma), dtype=np.uint8))
    return cv2.blur(m, (sigma, sigma))


def paste_back(image: Array, original: Array, weights: Array) -> Array:
    """weights x image + (1 - weights) x original (the fitted map, 0-255 floats), in [0, 1], back to uint8
    (A1111's truncation)."""
    import numpy as np

    if image.shape[:2] != weights.shape:
        return image
    x = image.astype(np.float32) / 255.0
    r = original[:, :, :3].astype(np.float32) / 255.0
    m = weights[:, :, None]
    y = (m * x.clip(0, 1) + (1 - m) * r).clip(0, 1)
    return (y * 255.0).astype(np.uint8)


def recolor(image: Array, detected: Array, luminance: bool) -> Array:
    """The image with its lightness (Lab L) or value (HSV V) replaced by the map's first channel."""
    import cv2

    if image.shape[:2] != detected.shape[:2]:
        return image
    to, back = (cv2.COLOR_RGB2LAB, cv2.COLOR_LAB2RGB) if luminance else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
    converted = cv2.cvtColor(image, to)
    converted[:, :, 0 if luminance else 2] = detected[:, :, 0]
    return cv2.cvtColor(converted, back)
