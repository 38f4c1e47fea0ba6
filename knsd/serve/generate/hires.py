"""A1111's latent hires fix between the two passes: latents interpolated to the target, then cropped.

Follows AUTOMATIC1111/stable-diffusion-webui `modules/processing.py` (StableDiffusionProcessingTxt2Img:
sample_hr_pass); image-space upscalers are in `upscale.py`.
"""

from __future__ import annotations

from typing import Any

from knsd.serve.api.hires import OPT_F, HiresSpec
from knsd.serve.api.upscalers import LATENT_UPSCALE_MODES


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
