"""Initial latent noise with A1111's variation seeds and seed resize (`modules/rng.py`, ImageRNG.first).

knsd draws on CPU generators (A1111's `randn_source: CPU`), so a seed gives the same noise on any device.
Each image has its own generator seeded with its seed; after the first draw it goes on to the sampler
(ancestral noise), as A1111's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SeedSpec:
    """Seeds of one batch and the variation settings shared by the request."""

    seeds: tuple[int, ...]
    subseeds: tuple[int, ...] = ()
    subseed_strength: float = 0.0
    resize_from_h: int = -1
    resize_from_w: int = -1

    @property
    def plain(self) -> bool:
        """True when the noise is simply randn(seed) per image."""
        return self.subseed_strength == 0 and (self.resize_from_h <= 0 or self.resize_from_w <= 0)


def _randn(seed: int, shape: tuple[int, ...], generator: Any = None) -> Any:
    import torch

    gen = generator if generator is not None else torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=gen)


def slerp(val: float, low: Any, high: Any) -> Any:
    """A1111's spherical interpolation (normalising along dim 1 of a (C, H, W) tensor, as it does)."""
    import torch

    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)  # A1111's fallback weights, reversed as in the original
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(
        1
    ) * high


def first_noise(shape: tuple[int, int, int], spec: SeedSpec) -> tuple[Any, list[Any]]:
    """The (B, C, H, W) initial noise and the per-image generators to continue sampling with."""
    import torch

    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in spec.seeds]
    resized = spec.resize_from_h > 0 and spec.resize_from_w > 0
    noise_shape = (shape[0], spec.resize_from_h // 8, spec.resize_from_w // 8) if resized else shape
    xs = []
    for i, (seed, generator) in enumerate(zip(spec.seeds, generators, strict=True)):
        subnoise = None
        if spec.subseed_strength != 0:
            subseed = spec.subseeds[i] if i < len(spec.subseeds) else 0
            subnoise = _randn(subseed, noise_shape)
        noise = _randn(seed, noise_shape) if noise_shape != shape else _randn(seed, shape, generator)
        if subnoise is not None:
            noise = slerp(spec.subseed_strength, noise, subnoise)
        if noise_shape != shape:
            x = _randn(seed, shape, generator)
            dx, dy = (shape[2] - noise_shape[2]) // 2, (shape[1] - noise_shape[1]) // 2
            w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
            h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
            tx, ty = max(dx, 0), max(dy, 0)
            dx, dy = max(-dx, 0), max(-dy, 0)
            x[:, ty : ty + h, tx : tx + w] = noise[:, dy : dy + h, dx : dx + w]
            noise = x
        xs.append(noise)
    return torch.stack(xs), generators


class SamplerNoise:
    """The noise a sampler draws after the initial noise (A1111's `ImageRNG.next`): one draw per image
    from that image's generator, which goes on from the first draw, or restarts at seed + ENSD
    (`eta_noise_seed_delta`) when that option is set. One per sampling pass; not shared between requests."""

    def __init__(self, seeds: tuple[int, ...], ensd: int = 0) -> None:
        self.seeds = seeds
        self.ensd = ensd
        self.generators: list[Any] = []

    def after_first(self, generators: list[Any]) -> None:
        """The generators as the first draw left them (replaced by seed + ENSD ones when ENSD is set)."""
        import torch

        if self.ensd:
            generators = [torch.Generator("cpu").manual_seed(int(s) + self.ensd) for s in self.seeds]
        self.generators = list(generators)

    def next(self, like: Any) -> Any:
        """A (B, C, H, W) standard normal draw shaped like `like` (B = this pass's images), on its device."""
        import torch

        if not self.generators:
            self.after_first([torch.Generator("cpu").manual_seed(int(s)) for s in self.seeds])
        shape = tuple(int(n) for n in like.shape[1:])
        drawn = [torch.randn(shape, generator=g) for g in self.generators]
        return torch.stack(drawn).to(device=like.device, dtype=like.dtype)
