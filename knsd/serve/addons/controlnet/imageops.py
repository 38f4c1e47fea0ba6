"""The extension's preprocessors that need no weights, as pure functions over uint8 H x W x C arrays.

Written from the behaviour of sd-webui-controlnet v1.1.455 (`scripts/preprocessor/`, `annotator/`):
every function takes the unit's input (RGB; RGBA with the mask as alpha for the inpaint modules), the
effective `processor_res` and the two thresholds, and returns the detected map. Model-side modules
(reference, tile_colorfix, inpaint) return their input: their work happens during sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any  # numpy.ndarray
Run = Callable[[Array, int, float, float, Any], Array]  # (image, res, a, b, numpy RandomState) -> map


def hwc3(x: Array) -> Array:
    """Three channels: gray is repeated, RGBA is composited over white (the extension's HWC3)."""
    import numpy as np

    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] == 1:
        return np.concatenate([x, x, x], axis=2)
    if x.shape[2] == 4:
        alpha = x[:, :, 3:4].astype(np.float32) / 255.0
        over = x[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return over.clip(0, 255).astype(np.uint8)
    return x


def resize_with_pad(img: Array, res: int) -> tuple[Array, Callable[[Array], Array]]:
    """Scale so the short side is `res` (cubic up, area down; sizes rounded half to even), edge-pad the
    bottom/right to multiples of 64; returns the padded image and the function that crops a result back."""
    import cv2
    import numpy as np

    img = hwc3(img)
    h, w = img.shape[:2]
    k = float(res) / float(min(h, w))
    nh, nw = int(np.round(h * k)), int(np.round(w * k))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    ph, pw = -(-nh // 64) * 64 - nh, -(-nw // 64) * 64 - nw
    padded = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return np.ascontiguousarray(padded), lambda x: np.ascontiguousarray(x[:nh, :nw])


def identity(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    return img


def invert(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """255 - image, at the input's size."""
    return 255 - hwc3(img)


def canny(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """OpenCV's Canny on the RGB image (gradient = the strongest channel's), thresholds int(a), int(b)."""
    import cv2

    padded, unpad = resize_with_pad(img, res)
    return unpad(cv2.cvtColor(cv2.Canny(padded, int(a), int(b)), cv2.COLOR_GRAY2RGB))


def blur_gaussian(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """A Gaussian blur of sigma `a` (OpenCV's kernel size for that sigma) at short side `res`."""
    import cv2

    padded, unpad = resize_with_pad(img, res)
    return cv2.GaussianBlur(unpad(padded), (0, 0), float(a))


def scribble_xdog(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """Difference of Gaussians (sigma 5 minus sigma 0.5, the darkest channel); an edge where twice the
    difference exceeds `a`, computed in uint8 as the extension does (so it wraps past 127)."""
    import cv2
    import numpy as np

    padded, unpad = resize_with_pad(img, res)
    f = padded.astype(np.float32)
    darkest = np.min(cv2.GaussianBlur(f, (0, 0), 5.0) - cv2.GaussianBlur(f, (0, 0), 0.5), axis=2)
    dog = (255 - darkest).clip(0, 255).astype(np.uint8)
    doubled = (np.uint8(255) - dog).astype(np.uint16) * 2 % 256  # uint8 arithmetic: wraps at 256
    out = np.zeros_like(padded)
    out[doubled > a] = 255
    return unpad(out)


def _noise_disk(h: int, w: int, f: int, rng: Any) -> Array:
    """Smooth noise in [0, 1]: uniform cells every `f` pixels, cubic-upsampled, cropped, min-max scaled."""
    import cv2

    cells = rng.uniform(0, 1, size=(h // f + 2, w // f + 2, 1))
    noise = cv2.resize(cells, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)[f : f + h, f : f + w]
    noise = noise - noise.min()
    return (noise / noise.max())[:, :, None]


def shuffle(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """Content shuffle: remap every pixel to a source position taken from two smooth noise fields
    (x first, then y, drawn from `rng`)."""
    import cv2
    import numpy as np

    padded, unpad = resize_with_pad(img, res)
    image = unpad(padded)
    h, w = image.shape[:2]
    x = _noise_disk(h, w, 256, rng) * float(w - 1)
    y = _noise_disk(h, w, 256, rng) * float(h - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(image, flow, None, cv2.INTER_LINEAR)


def tile_resample(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """Downsample by `a` (area); below 1.1 the input as it is."""
    import cv2

    img = hwc3(img)
    if a < 1.1:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (int(w / float(a)), int(h / float(a))), interpolation=cv2.INTER_AREA)


def threshold(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """White where every channel is above `a`."""
    import numpy as np

    padded, unpad = resize_with_pad(img, res)
    out = np.zeros_like(padded)
    out[np.min(padded, axis=2) > a] = 255
    return unpad(out)


def color(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """A colour grid of 64-pixel cells: short side to `res` (area), down to 1/64 (cubic), back (nearest)."""
    import cv2

    img = hwc3(img)
    h, w = img.shape[:2]
    nh, nw = (res, int(round(w / h * res))) if h < w else (int(round(h / w * res)), res)
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    small = cv2.resize(img, (nw // 64, nh // 64), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (nw, nh), interpolation=cv2.INTER_NEAREST)


def lineart_standard(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """How much darker each pixel is than its sigma-6 surroundings, normalised by the median of the
    clear lines (at least 16), times 127."""
    import cv2
    import numpy as np

    padded, unpad = resize_with_pad(img, res)
    x = padded.astype(np.float32)
    darker = np.min(cv2.GaussianBlur(x, (0, 0), 6.0) - x, axis=2).clip(0, 255)
    lines = darker[darker > 8]
    scale = max(16.0, float(np.median(lines))) if lines.size else 16.0
    out = (darker / scale * 127).clip(0, 255).astype(np.uint8)
    return hwc3(unpad(out))


def _gamma(channel: Array, a: float) -> Array:
    import cv2
    import numpy as np

    out = ((channel.astype(np.float32) / 255.0) ** a * 255.0).clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)


def recolor_luminance(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """Lab lightness to the power `a`; the extension converts its RGB as if it were BGR, and so does this."""
    import cv2

    return _gamma(cv2.cvtColor(hwc3(img), cv2.COLOR_BGR2LAB)[:, :, 0], a)


def recolor_intensity(img: Array, res: int, a: float, b: float, rng: Any) -> Array:
    """HSV value (the brightest channel) to the power `a`."""
    import cv2

    return _gamma(cv2.cvtColor(hwc3(img), cv2.COLOR_BGR2HSV)[:, :, 2], a)


# The modules knsd runs, by name. A module with weights is added here once knsd implements it.
PREPROCESSORS: dict[str, Run] = {
    "none": identity,
    "invert": invert,
    "canny": canny,
    "blur_gaussian": blur_gaussian,
    "scribble_xdog": scribble_xdog,
    "shuffle": shuffle,
    "tile_resample": tile_resample,
    "tile_colorfix": identity,
    "tile_colorfix+sharp": identity,
    "threshold": threshold,
    "color": color,
    "lineart_standard": lineart_standard,
    "recolor_luminance": recolor_luminance,
    "recolor_intensity": recolor_intensity,
    "reference_only": identity,
    "reference_adain": identity,
    "reference_adain+attn": identity,
    "inpaint": identity,
    "inpaint_only": identity,
}
