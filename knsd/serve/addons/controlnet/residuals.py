"""How a ControlNet unit's residuals reach the UNet (the extension's `hook.py`, per UNet call).

Residual i of n (diffusers' order: the `conv_in`-level one first, the middle one last) is scaled by
- Balanced: the weight;
- "My prompt is more important" / "ControlNet is more important" (and canny/mlsd units in the hires pass):
  weight x 0.825^(12 - i);
- `advanced_weighting`: its i-th value instead (the weight is not applied; values past its end drop
  their residual);
then multiplied by the `effective_region_mask` resized (bilinear) to the residual. "ControlNet is more
important" (and models named "shuffle", which also average residuals over the image) keep the control off
the CFG batch's unconditional rows. A unit outside its guidance window adds nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Tensor = Any
SOFT = 0.825  # the extension's soft-injection base


@dataclass(frozen=True, slots=True)
class Scaling:
    """One unit's residual scaling in one pass."""

    weight: float
    soft: bool
    cond_only: bool
    advanced: tuple[float, ...] | None = None
    region: Tensor = None  # 1 x 1 x H x W in [0, 1]
    pool: bool = False  # global average pooling (shuffle models)

    def scales(self, n: int) -> list[float]:
        if self.advanced is not None:
            return [self.advanced[i] if i < len(self.advanced) else 0.0 for i in range(n)]
        if self.soft:
            return [self.weight * SOFT ** float(12 - i) for i in range(n)]
        return [self.weight] * n

    def apply(self, residuals: list[Tensor], uncond_rows: int) -> list[Tensor]:
        import torch.nn.functional as F

        out = []
        for r, scale in zip(residuals, self.scales(len(residuals)), strict=True):
            if self.cond_only or self.pool:
                r = r.clone()
                r[:uncond_rows] = 0
            r = r * scale
            if self.region is not None:
                r = r * F.interpolate(self.region.to(r), size=tuple(r.shape[-2:]), mode="bilinear")
            if self.pool:
                r = r.mean(dim=(2, 3), keepdim=True)
            out.append(r)
        return out


def unit_view(net: Any, scaling: Callable[[], Scaling | None], uncond_rows: Callable[[Any], int]) -> Any:
    """The loaded ControlNet as one unit sees it: the same weights, its forward followed by the unit's
    scaling (`scaling()` is None while the unit is off; its residuals are then zeros). A view, so two
    units may share one model file."""
    view = copy.copy(net)  # shares parameters and submodules; its own __dict__ takes the forward below
    shapes: dict[tuple[int, ...], list[tuple[int, ...]]] = {}

    def forward(*args: Any, **kwargs: Any) -> Any:
        import torch

        sample: Any = kwargs["sample"] if "sample" in kwargs else args[0]
        now = scaling()
        key = tuple(sample.shape)
        if now is None and key in shapes:
            zeros = [torch.zeros(s, dtype=sample.dtype, device=sample.device) for s in shapes[key]]
            return _pack(zeros, kwargs)
        down, mid = type(net).forward(view, *args, **{**kwargs, "return_dict": False})
        residuals = [*down, mid]
        shapes[key] = [tuple(r.shape) for r in residuals]
        if now is None:
            return _pack([torch.zeros_like(r) for r in residuals], kwargs)
        return _pack(now.apply(residuals, uncond_rows(sample)), kwargs)

    view.forward = forward
    return view


def _pack(residuals: list[Tensor], kwargs: dict[str, Any]) -> Any:
    down, mid = residuals[:-1], residuals[-1]
    if kwargs.get("return_dict", True):
        from diffusers.models.controlnets.controlnet import ControlNetOutput

        return ControlNetOutput(down_block_res_samples=tuple(down), mid_block_res_sample=mid)
    return (down, mid)
