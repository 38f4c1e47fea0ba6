"""A1111's hires fix as a request: the validated HiresSpec, its target size and infotext (pure).

Follows AUTOMATIC1111/stable-diffusion-webui `modules/processing.py` (StableDiffusionProcessingTxt2Img:
calculate_target_resolution) for the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.api.fields import integer, number, optional_text
from knsd.serve.api.samplers import SamplerChoice, resolve_sampler
from knsd.serve.api.upscalers import BUILTIN_UPSCALERS, LATENT_UPSCALE_MODES

# `hr_upscaler: null` means "Latent" (the first of LATENT_UPSCALE_MODES).
# Image-space upscalers that need no model weights (A1111's built-ins, listed by /sdapi/v1/upscalers).
IMAGE_UPSCALERS = BUILTIN_UPSCALERS
OPT_F = 8  # pixels per latent cell


@dataclass(frozen=True, slots=True)
class HiresSpec:
    """A validated hires-fix request (first-pass size lives on the request)."""

    upscaler: str  # a LATENT_UPSCALE_MODES or IMAGE_UPSCALERS name
    upscaler_given: bool  # False when hr_upscaler was null (infotext then has no "Hires upscaler")
    scale: float
    resize_x: int
    resize_y: int
    second_pass_steps: int  # 0 = same as the first pass
    denoising_strength: float
    sampler: Any  # SamplerChoice for the second pass
    sampler_given: str | None  # hr_sampler_name as given, when it differs from the first pass
    prompt: str
    negative_prompt: str
    target_w: int
    target_h: int
    truncate_x: int = 0
    truncate_y: int = 0

    @property
    def is_latent(self) -> bool:
        return self.upscaler in LATENT_UPSCALE_MODES

    @property
    def output_size(self) -> tuple[int, int]:
        """The final image's (width, height): latent cells x 8 after cropping."""
        lw = self.target_w // OPT_F - self.truncate_x // 2 - (self.truncate_x + 1) // 2
        lh = self.target_h // OPT_F - self.truncate_y // 2 - (self.truncate_y + 1) // 2
        return lw * OPT_F, lh * OPT_F


def target_size(
    width: int, height: int, scale: float, resize_x: int, resize_y: int
) -> tuple[int, int, int, int]:
    """(upscale_to_x, upscale_to_y, truncate_x, truncate_y) as A1111's calculate_target_resolution."""
    if resize_x == 0 and resize_y == 0:
        return int(width * scale), int(height * scale), 0, 0
    if resize_y == 0:
        return resize_x, resize_x * height // width, 0, 0
    if resize_x == 0:
        return resize_y * width // height, resize_y, 0, 0
    if width / height < resize_x / resize_y:
        to_x, to_y = resize_x, resize_x * height // width
    else:
        to_x, to_y = resize_y * width // height, resize_y
    return to_x, to_y, (to_x - resize_x) // OPT_F, (to_y - resize_y) // OPT_F


MAX_SIDE = 2048
SUPPORTED_UPSCALERS = (*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS)


@dataclass(frozen=True, slots=True)
class FirstPass:
    """What the hires pass takes from the first pass of its request."""

    width: int
    height: int
    sampler: SamplerChoice
    prompt: str
    negative_prompt: str


def parse_hires(body: dict[str, Any], req: FirstPass, max_pixels: int) -> HiresSpec:
    """The hires pass of a txt2img request with `enable_hr: true` (A1111's field defaults)."""
    upscaler_name = optional_text(body, "hr_upscaler")
    upscaler = upscaler_name or "Latent"
    if upscaler not in SUPPORTED_UPSCALERS:
        raise InvalidField(
            "hr_upscaler",
            "one of "
            + ", ".join(SUPPORTED_UPSCALERS)
            + " (model upscalers such as ESRGAN are not installed)",
            upscaler_name,
        )
    scale = number(body, "hr_scale", 2.0, 1.0, 8.0)
    resize_x = integer(body, "hr_resize_x", 0, 0, MAX_SIDE)
    resize_y = integer(body, "hr_resize_y", 0, 0, MAX_SIDE)
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
    hr_sampler = optional_text(body, "hr_sampler_name")
    if hr_sampler == "Use same sampler":
        hr_sampler = None
    hr_scheduler = optional_text(body, "hr_scheduler")
    if hr_scheduler == "Use same scheduler":
        hr_scheduler = None
    try:
        sampler = resolve_sampler(hr_sampler or req.sampler.sampler, hr_scheduler or req.sampler.schedule)
    except InvalidField as exc:
        field = "hr_sampler_name" if exc.field == "sampler_name" else "hr_scheduler"
        raise InvalidField(field, exc.allowed, exc.received) from exc
    # 0 is A1111's "upscale only": the second pass runs no step (knsd.serve.generate.passes.hires)
    strength = number(body, "denoising_strength", 0.75, 0.0, 1.0)
    return HiresSpec(
        upscaler=upscaler,
        upscaler_given=upscaler_name is not None,
        scale=scale,
        resize_x=resize_x,
        resize_y=resize_y,
        second_pass_steps=integer(body, "hr_second_pass_steps", 0, 0, 150),
        denoising_strength=strength,
        sampler=sampler,
        sampler_given=hr_sampler if hr_sampler and sampler.sampler != req.sampler.sampler else None,
        prompt=optional_text(body, "hr_prompt") or req.prompt,
        negative_prompt=optional_text(body, "hr_negative_prompt") or req.negative_prompt,
        target_w=to_x,
        target_h=to_y,
        truncate_x=tx,
        truncate_y=ty,
    )


def hires_infotext(spec: HiresSpec, first_schedule: str) -> list[tuple[str, Any]]:
    """The extra_generation_params A1111 adds for a hires pass, in its order."""
    items: list[tuple[str, Any]] = []
    if spec.sampler_given is not None:
        items.append(("Hires sampler", spec.sampler_given))
    if spec.sampler.schedule != first_schedule:
        items.append(("Hires schedule type", spec.sampler.schedule))
    if spec.resize_x == 0 and spec.resize_y == 0:
        items.append(("Hires upscale", spec.scale))
    else:
        items.append(("Hires resize", f"{spec.resize_x}x{spec.resize_y}"))
    if spec.second_pass_steps:
        items.append(("Hires steps", spec.second_pass_steps))
    if spec.upscaler_given:
        items.append(("Hires upscaler", spec.upscaler))
    return items
