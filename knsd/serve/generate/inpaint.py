"""Inpainting on the latent side, as A1111 v1.10's img2img does after preparing the pixels
(knsd.serve.api.inpaint.prepare): the latent mask, the latent fills, the blend after sampling, the overlay,
and the extra input channels of inpainting models (9-channel UNets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from knsd.serve.api.inpaint import PreparedInpaint
from knsd.serve.api.mask import apply_overlay
from knsd.serve.generate.denoiser import TIMESTEP_SAMPLERS, Blend, DenoiserHook
from knsd.serve.generate.noise import SeedSpec, first_noise


def latent_keep(mask: Any, shape: tuple[int, int, int], round_mask: bool) -> Any:
    """A1111's latent mask: the pixel mask resized (bicubic) to the latents, rounded with `mask_round`;
    returned as `keep` (1 where the original stays), shaped (1, C, h, w)."""
    import numpy as np
    import torch
    from PIL import Image

    channels, height, width = shape
    small = np.asarray(mask.convert("L").resize((width, height), Image.Resampling.BICUBIC), np.float32) / 255
    if round_mask:
        small = np.around(small)
    regen = torch.from_numpy(np.ascontiguousarray(small))
    return (1 - regen).expand(1, channels, height, width).contiguous()


def model_channels(model: Any) -> int:
    """The denoiser's input channels: 9 for inpainting UNets (latents, mask, masked-image latents)."""
    config = model.denoiser.config
    return int(config.get("in_channels", 0) or 0)


def is_inpainting_model(model: Any) -> bool:
    """True for SD 1.x/2.x/SDXL inpainting checkpoints (A1111: conditioning key hybrid, or SDXL inpaint)."""
    return model_channels(model) == 9


class Inpainting:
    """One img2img request's masked sampling: from the pipeline's encoded latents to the overlaid images.

    `shape` is the latents' (C, h, w); with no mask left (A1111's blank-mask fallback of "only masked")
    there is nothing to blend and no overlay."""

    def __init__(self, prepared: PreparedInpaint, shape: tuple[int, int, int], round_mask: bool, fill: int,
                 sampler: str) -> None:  # fmt: skip
        self.prepared = prepared
        self.fill = fill
        self.blend: Blend | None = None
        if prepared.mask is not None:
            self.blend = Blend(latent_keep(prepared.mask, shape, round_mask), sampler in TIMESTEP_SAMPLERS)

    def start(self, original: Any, spec: SeedSpec) -> Any:
        """The pass's encoded latents with A1111's latent fill, kept as the blending target."""
        blend = self.blend
        if blend is None:
            return original
        keep = blend.keep = blend.keep.to(original)  # on the latents' device from here on
        if self.fill == 2:  # latent noise: randn(seed) of each image where the mask regenerates
            noise = first_noise(tuple(original.shape[1:]), SeedSpec(spec.seeds))[0].to(original)
            original = original * keep + noise * (1 - keep)
        elif self.fill == 3:  # latent nothing
            original = original * keep
        blend.original = original
        return original

    def hook(self, base: DenoiserHook) -> DenoiserHook:
        """The pass's denoiser hook: `base` (an inpainting model's channels) with the blending."""
        return DenoiserHook(base.concat, self.blend, base.prediction, base.sigmas)

    def finish(self, latents: Any) -> Any:
        """After sampling: the original latents laid back where the mask keeps them."""
        blend = self.blend
        if blend is None or blend.original is None:
            return latents
        keep = blend.keep.to(latents)
        return latents * (1 - keep) + blend.original.to(latents) * keep

    def overlay(self, images: list[Any]) -> list[Any]:
        """The original pixels laid over each result (pasted back into the full image when only masked)."""
        prepared = self.prepared
        if prepared.overlay is None:
            return images
        return [apply_overlay(image, prepared.overlay, prepared.paste_to) for image in images]


def image_conditioning(
    encode: Callable[[Any, tuple[int, ...]], Any],
    size: tuple[int, int],
    seeds: tuple[int, ...],
    pixels: Any = None,
    mask: Any = None,
    weight: float = 1.0,
    round_mask: bool = True,
) -> Any:
    """An inpainting model's extra input, (B, 5, h, w): the mask at latent size, then the latents of the
    masked image (A1111's inpainting_image_conditioning).

    `pixels` (B, 3, H, W) in [-1, 1] is the image the pass starts from, None for txt2img (mid-grey, fully
    masked); `mask` (L, W x H) is white where the pass regenerates, None for all of it; `weight` is
    inpainting_mask_weight (1: masked pixels become grey; 0: the model sees the whole image). `encode`
    turns pixels into latents (the VAE's sample with each image's seed, scaled).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    width, height = size
    count = len(seeds)
    if mask is None:
        regen = torch.ones(1, 1, height, width)
    else:
        regen = torch.from_numpy(np.asarray(mask.convert("L"), np.float32) / 255)[None, None]
        if round_mask:
            regen = regen.round()
    if pixels is None:
        pixels = torch.zeros(count, 3, height, width)
    regen = regen.to(pixels)
    masked = torch.lerp(pixels, pixels * (1 - regen), weight)
    latents = encode(masked, seeds)
    small = F.interpolate(regen, size=tuple(latents.shape[-2:]))  # nearest, as A1111
    return torch.cat([small.expand(latents.shape[0], -1, -1, -1).to(latents), latents], dim=1)
