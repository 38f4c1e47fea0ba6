"""One enabled unit made ready for sampling: its preprocessed map fitted to each pass, its model and the
rules that switch it on and off (guidance window, hr_option), all as the extension decides them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.fit import fit_map, pixel_perfect_res, visualize
from knsd.serve.addons.controlnet.inputs import module_input
from knsd.serve.addons.controlnet.residuals import Scaling
from knsd.serve.addons.controlnet.units import ControlUnit

Array = Any
Tensor = Any
Run = Callable[[Any, Array, int, float, float], Array]  # (module, image, res, a, b) -> detected map


@dataclass(frozen=True, slots=True)
class Geometry:
    """The request's sizes: the generation size and, in a txt2img hires run, the hires map size."""

    width: int
    height: int
    hires: tuple[int, int] | None = None

    def size(self, hires: bool) -> tuple[int, int]:
        return self.hires if hires and self.hires is not None else (self.width, self.height)


@dataclass
class Fitted:
    """A map at one pass's size: the array the response shows and the ControlNet's input tensor."""

    array: Array  # uint8 RGB, or float32 RGBA for inpaint modules
    control: Tensor  # 1 x 3 x H x W: RGB / 255, or the inpaint hint rgb * (1 - m) - m
    alpha: Tensor | None = None  # 1 x 1 x H x W in {0, 1} (inpaint modules)

    def rgb01(self) -> Tensor:
        import torch

        rgb = self.array[:, :, :3].astype("float32") / 255.0
        return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def _fitted(array: Array, inpaint: bool) -> Fitted:
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    if not inpaint:
        return Fitted(array, x)
    mask = (x[:, 3:4] > 0.5).float()
    return Fitted(array, x[:, :3] * (1 - mask) - mask, mask)


def detect(unit: ControlUnit, image: Array, width: int, height: int, run: Run) -> Array:
    """The unit's preprocessor run on its input (RGBA), with pixel perfect's resolution when asked."""
    module = unit.module
    source = module_input(image, module.is_inpaint)
    res = (
        pixel_perfect_res(source, width, height, unit.resize_mode)
        if unit.pixel_perfect
        else int(unit.processor_res)
    )
    try:
        return run(module, source, res, float(unit.threshold_a), float(unit.threshold_b))
    except Exception as exc:  # OpenCV refuses sizes its filters cannot handle (e.g. color below 64 px)
        import cv2

        if not isinstance(exc, cv2.error):
            raise
        raise InvalidField(
            f"{unit.field}.image",
            f"an image {module.name} can process at processor_res {res}",
            f"{image.shape[1]}x{image.shape[0]}",
        ) from exc


@dataclass
class Plan:
    """One unit ready to run."""

    unit: ControlUnit
    title: str  # the model's "name [hash]", or the model as sent for model-free modules
    net: Any  # the loaded ControlNetModel; None for reference units
    shuffle: bool  # the model file is a shuffle one: residuals pooled and kept off the unconditional rows
    low: Fitted
    high: Fitted | None
    latents: dict[bool, Tensor] = field(default_factory=dict)

    @classmethod
    def build(
        cls, unit: ControlUnit, image: Array, geometry: Geometry, run: Run, title: str, net: Any
    ) -> Plan:
        detected = detect(unit, image, geometry.width, geometry.height, run)
        inpaint = unit.module.is_inpaint
        low = _fitted(fit_map(detected, geometry.width, geometry.height, unit.resize_mode, inpaint), inpaint)
        high = None
        if geometry.hires is not None:
            w, h = geometry.hires
            high = _fitted(fit_map(detected, w, h, unit.resize_mode, inpaint), inpaint)
        return cls(unit, title, net, "shuffle" in title.lower(), low, high)

    def fitted(self, hires: bool) -> Fitted:
        return self.high if hires and self.high is not None else self.low

    def maps(self) -> list[Array]:
        """The detected maps the response shows: the hires one first in a hires run."""
        if not self.unit.save_detected_map:
            return []
        return [visualize(f.array) for f in (self.high, self.low) if f is not None]

    def allowed(self, hires: bool, hires_run: bool) -> bool:
        """hr_option: "Low res only" skips the hires pass, "High res only" the first (hires runs only)."""
        option = self.unit.hr_option if hires_run else "Both"
        return not (option == "Low res only" and hires or option == "High res only" and not hires)

    def in_window(self, fraction: float) -> bool:
        return self.unit.guidance_start <= fraction <= self.unit.guidance_end

    def scaling(self, hires: bool, region: Tensor) -> Scaling:
        u = self.unit
        forced = hires and any(k in u.module.name for k in ("canny", "mlsd"))
        return Scaling(
            weight=u.weight,
            soft=u.control_mode != "Balanced" or forced,
            cond_only=u.control_mode == "ControlNet is more important",
            advanced=u.advanced_weighting,
            region=region,
            pool=self.shuffle,
        )

    def fidelity(self, hires: bool, xl: bool) -> float:
        """Style fidelity of a reference unit in this pass."""
        s = max(0.0, min(1.0, float(self.unit.threshold_a)))
        if xl:
            s = s**3.0
        if self.unit.control_mode == "ControlNet is more important":
            return 1.0
        if self.unit.control_mode != "Balanced" or hires:
            return 0.0
        return s
