"""A1111's hires fix: target size, latent and image-space upscaling between the two passes.

Follows AUTOMATIC1111/stable-diffusion-webui `modules/processing.py` (StableDiffusionProcessingTxt2Img:
calculate_target_resolution, sample_hr_pass), `modules/images.py` (resize_image) and `modules/upscaler.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.serve.upscalers import BUILTIN_UPSCALERS, LATENT_UPSCALE_MODES

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


def upscale_latents(latents: Any, spec: HiresSpec) -> Any:
    """Interpolate first-pass latents to the target, then crop as A1111 does for hr_resize_x and _y."""
    import torch.nn.functional as F

    mode, antialias = LATENT_UPSCALE_MODES[spec.upscaler]
    size = (spec.target_h // OPT_F, spec.target_w // OPT_F)
    up = F.interpolate(latents, size=size, mode=mode, antialias=antialias)
    return crop_latents(up, spec)


def crop_latents(latents: Any, spec: HiresSpec) -> Any:
    tx, ty = spec.truncate_x, spec.truncate_y
    return latents[
        :, :, ty // 2 : latents.shape[2] - (ty + 1) // 2, tx // 2 : latents.shape[3] - (tx + 1) // 2
    ]


def upscale_image(image: Any, name: str, width: int, height: int) -> Any:
    """A1111's resize_image (mode 0, stretch) with a built-in upscaler: None, Lanczos or Nearest."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    if name == "None" or image.mode == "L":
        return image.resize((width, height), resample=lanczos)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        # Upscaler.upscale: one call of the scaler reaches the destination, then LANCZOS to it.
        dest = (int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8))
        resample = Image.Resampling.NEAREST if name == "Nearest" else lanczos
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
        if image.size != dest:
            image = image.resize(dest, resample=lanczos)
    if image.size != (width, height):
        image = image.resize((width, height), resample=lanczos)
    return image


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
