"""ControlNet preprocessors that need no model weights, and A1111's resize of the detected map.

Ported from sd-webui-controlnet v1.1.455 (`scripts/utils.py resize_image_with_pad`,
`preprocessor/legacy`, `controlnet.py detectmap_proc`); the maps are uint8 H x W x 3 RGB arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Envelope (Outer Fit)": "Resize and Fill",
}


@dataclass(frozen=True, slots=True)
class Slider:
    name: str
    value: float
    min: float
    max: float
    step: float = 1

    def api(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "min": self.min, "max": self.max, "step": self.step}


@dataclass(frozen=True, slots=True)
class Preprocessor:
    """A model-free module: `run(image, res, a, b)`; `resolution` None when it ignores processor_res."""

    name: str
    label: str
    run: Callable[[Any, int, float, float], Any]
    resolution: Slider | None = None
    a: Slider | None = None
    b: Slider | None = None

    def sliders(self) -> list[Slider]:
        return [s for s in (self.resolution, self.a, self.b) if s is not None]


def _res() -> Slider:
    return Slider("Resolution", 512, 64, 2048, 8)


def resize_with_pad(img: Any, res: int) -> tuple[Any, Callable[[Any], Any]]:
    """Scale so the short side is `res`, edge-pad to a multiple of 64; returns the image and an unpadder."""
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    k = res / min(h, w)
    nh, nw = int(round(h * k)), int(round(w * k))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    ph, pw = -(-nh // 64) * 64, -(-nw // 64) * 64
    padded = np.pad(img, ((0, ph - nh), (0, pw - nw), (0, 0)), mode="edge")
    return padded, lambda x: x[:nh, :nw].copy()


def _canny(img: Any, res: int, a: float, b: float) -> Any:
    import cv2
    import numpy as np

    padded, unpad = resize_with_pad(img, res)
    edges = cv2.Canny(padded, int(a), int(b))
    return np.stack([unpad(edges)] * 3, axis=-1)


def _invert(img: Any, res: int, a: float, b: float) -> Any:
    padded, unpad = resize_with_pad(img, res)
    return unpad(255 - padded)


def _none(img: Any, res: int, a: float, b: float) -> Any:
    return img


def _binary(img: Any, res: int, a: float, b: float) -> Any:
    """A1111's `binary`: grayscale threshold at `a` (0: Otsu), white background inverted to black."""
    import cv2
    import numpy as np

    padded, unpad = resize_with_pad(img, res)
    gray = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY)
    flags = cv2.THRESH_BINARY_INV + (cv2.THRESH_OTSU if int(a) == 0 else 0)
    _, out = cv2.threshold(gray, int(a), 255, flags)
    return np.stack([unpad(out)] * 3, axis=-1)


PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor("none", "None", _none),
        Preprocessor("invert", "invert (from white bg & black line)", _invert, _res()),
        Preprocessor(
            "canny",
            "canny",
            _canny,
            _res(),
            Slider("Low Threshold", 100, 1, 255),
            Slider("High Threshold", 200, 1, 255),
        ),
        Preprocessor("binary", "binary", _binary, _res(), Slider("Binary threshold", 0, 0, 255)),
    )
}
_BY_LABEL = {p.label.lower(): p for p in PREPROCESSORS.values()}


def find_preprocessor(name: str) -> Preprocessor | None:
    """A module by internal name or UI label (A1111 accepts both)."""
    return PREPROCESSORS.get(name) or PREPROCESSORS.get(name.lower()) or _BY_LABEL.get(name.lower())


def fit_map(img: Any, width: int, height: int, mode: str) -> Any:
    """Resize a detected map to the generation size by A1111's resize mode."""
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    # A binary map (canny, binary) is re-binarised after resizing with Otsu's threshold, as the extension's
    # high-quality resize does (its edge NMS and thinning are left out): thin edges survive shrinking.
    binary = bool(np.isin(img, (0, 255)).all())

    def resize(src: Any, size: tuple[int, int], grow: bool) -> Any:
        out = cv2.resize(src, size, interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)
        if binary and out.max() > 0:
            gray = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2GRAY)
            _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            out = np.stack([gray] * 3, axis=-1)
        return out

    def scaled(k: float) -> Any:
        return resize(img, (max(1, int(round(w * k))), max(1, int(round(h * k)))), k > 1)

    if mode == "Just Resize":
        return resize(img, (width, height), width * height > w * h)
    if mode == "Crop and Resize":
        out = scaled(max(width / w, height / h))
        oh, ow = out.shape[:2]
        top, left = (oh - height) // 2, (ow - width) // 2
        return out[top : top + height, left : left + width].copy()
    out = scaled(min(width / w, height / h))
    oh, ow = out.shape[:2]
    border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]], axis=0)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = np.median(border, axis=0).astype(np.uint8)
    top, left = (height - oh) // 2, (width - ow) // 2
    canvas[top : top + oh, left : left + ow] = out
    return canvas


def pixel_perfect_res(image: Any, width: int, height: int, mode: str) -> int:
    """processor_res under pixel perfect: the scale that maps the input onto the output, times its short side."""
    h, w = image.shape[:2]
    ks = (height / h, width / w)
    k = min(ks) if mode == "Resize and Fill" else max(ks)
    return int(round(k * min(h, w)))
