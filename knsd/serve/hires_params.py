"""Validating A1111's hires-fix fields of a txt2img request into a HiresSpec (pure)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from knsd.errors import InvalidField
from knsd.serve.hires import IMAGE_UPSCALERS, OPT_F, HiresSpec, target_size
from knsd.serve.samplers import resolve_sampler
from knsd.serve.upscalers import LATENT_UPSCALE_MODES

if TYPE_CHECKING:
    from knsd.serve.params import GenerationRequest

MAX_SIDE = 2048
SUPPORTED_UPSCALERS = (*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS)


def _int(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidField(key, f"an integer between {lo} and {hi}", value)
    return value


def _float(
    body: dict[str, Any], key: str, default: float, lo: float, hi: float, open_lo: bool = False
) -> float:
    value = body.get(key)
    if value is None:
        return default
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or not lo <= value <= hi or (open_lo and value == lo):
        above = f"above {lo:g}" if open_lo else f"{lo:g}"
        raise InvalidField(key, f"a number between {above} and {hi:g}", value)
    return float(value)


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidField(key, "a string", value)
    return value or None


def parse_hires(body: dict[str, Any], req: GenerationRequest, max_pixels: int) -> HiresSpec:
    """The hires pass of a txt2img request with `enable_hr: true` (A1111's field defaults)."""
    upscaler_name = _str(body, "hr_upscaler")
    upscaler = upscaler_name or "Latent"
    if upscaler not in SUPPORTED_UPSCALERS:
        raise InvalidField(
            "hr_upscaler",
            "one of "
            + ", ".join(SUPPORTED_UPSCALERS)
            + " (model upscalers such as ESRGAN are not installed)",
            upscaler_name,
        )
    scale = _float(body, "hr_scale", 2.0, 1.0, 8.0)
    resize_x = _int(body, "hr_resize_x", 0, 0, MAX_SIDE)
    resize_y = _int(body, "hr_resize_y", 0, 0, MAX_SIDE)
    to_x, to_y, tx, ty = target_size(req.width, req.height, scale, resize_x, resize_y)
    where = "hr_scale" if resize_x == 0 and resize_y == 0 else "hr_resize_x"
    if not (OPT_F * 8 <= to_x <= MAX_SIDE and OPT_F * 8 <= to_y <= MAX_SIDE) or to_x * to_y > max_pixels:
        raise InvalidField(
            where,
            f"a value giving a hires size with sides 64..{MAX_SIDE} and at most {max_pixels} pixels",
            body.get(where),
            f"hires fix would upscale {req.width}x{req.height} to {to_x}x{to_y}: each side must be 64..{MAX_SIDE} "
            f"and width x height at most {max_pixels} pixels (the server's pixel budget)",
        )
    hr_sampler = _str(body, "hr_sampler_name")
    if hr_sampler == "Use same sampler":
        hr_sampler = None
    hr_scheduler = _str(body, "hr_scheduler")
    if hr_scheduler == "Use same scheduler":
        hr_scheduler = None
    try:
        sampler = resolve_sampler(hr_sampler or req.sampler.sampler, hr_scheduler or req.sampler.schedule)
    except InvalidField as exc:
        field = "hr_sampler_name" if exc.field == "sampler_name" else "hr_scheduler"
        raise InvalidField(field, exc.allowed, exc.received) from exc
    strength = _float(body, "denoising_strength", 0.75, 0.0, 1.0, open_lo=True)
    return HiresSpec(
        upscaler=upscaler,
        upscaler_given=upscaler_name is not None,
        scale=scale,
        resize_x=resize_x,
        resize_y=resize_y,
        second_pass_steps=_int(body, "hr_second_pass_steps", 0, 0, 150),
        denoising_strength=strength,
        sampler=sampler,
        sampler_given=hr_sampler if hr_sampler and sampler.sampler != req.sampler.sampler else None,
        prompt=_str(body, "hr_prompt") or req.prompt,
        negative_prompt=_str(body, "hr_negative_prompt") or req.negative_prompt,
        target_w=to_x,
        target_h=to_y,
        truncate_x=tx,
        truncate_y=ty,
    )
