"""The k-diffusion pieces knsd's sampler schedulers share (crowsonkb/k-diffusion @ ab527a9a, the commit
A1111 v1.10.1 pins): the ancestral step, the denoised estimate and a pass's sampler state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.serve.api.sampling import SamplerParams
from knsd.serve.generate.noise import SamplerNoise


@dataclass(frozen=True, slots=True)
class SamplerRun:
    """One pass's sampler parameters and the noise its steps draw (per-image generators or trees)."""

    params: SamplerParams
    noise: SamplerNoise


def ancestral_step(sigma_from: Any, sigma_to: Any, eta: float) -> tuple[Any, Any]:
    """k-diffusion's get_ancestral_step: (sigma_down, sigma_up); eta 0 is a deterministic step."""
    import torch

    if not eta:
        return sigma_to, sigma_to * 0
    up = torch.minimum(
        torch.as_tensor(sigma_to),
        eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5,
    )
    down = (sigma_to**2 - up**2) ** 0.5
    return down, up


def denoised(prediction_type: str, sample: Any, model_output: Any, sigma: Any) -> Any:
    """The model's estimate of the clean latents at `sigma` (k-diffusion's denoiser output)."""
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    raise ValueError(f"prediction_type {prediction_type!r} is not supported by knsd's samplers")


def output(cls: Any, prev: Any, x0: Any, dtype: Any, return_dict: bool) -> Any:
    """A scheduler's step result, as diffusers' pipelines read it."""
    prev = prev.to(dtype)
    return cls(prev_sample=prev, pred_original_sample=x0) if return_dict else (prev, x0)


def start_sigma(scheduler: Any) -> Any:
    """txt2img starts from noise x sigma_max, as k-diffusion samples (diffusers' "leading" Euler schedulers
    start from sqrt(sigma_max^2 + 1) instead)."""
    return scheduler.sigmas.max()
