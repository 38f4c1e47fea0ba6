"""The current denoised estimate (x0) of a sampling step: what A1111's live previews show.

A1111 previews the sampler's `denoised` (the model's prediction of the clean latents at this step), not the
noisy latents. diffusers' step callback only gets the latents, so knsd wraps the scheduler's `step` and reads
the estimate from it: some schedulers return it (`pred_original_sample`); for the others it follows from the
model output, the sample and the noise level the step used, by the scheduler's parameterisation:

- sigma-space VP schedulers (DPM-Solver, UniPC, DEIS): `sample = alpha_t x0 + sigma_t eps`, alpha_t and
  sigma_t from the scheduler's own `_sigma_to_alpha_sigma_t` at the step's sigma (flow sigmas included);
- flow matching (SD 3.x): `sample = (1 - sigma) x0 + sigma noise`, the model predicts `noise - x0`;
- DDPM timesteps (PLMS): alpha_t = sqrt(alphas_cumprod[t]), sigma_t = sqrt(1 - alphas_cumprod[t]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _alpha_sigma(scheduler: Any, timestep: Any) -> tuple[Any, Any, str] | None:
    """(alpha_t, sigma_t, prediction type) of the step just taken, or None when unknown."""
    prediction = str(getattr(scheduler.config, "prediction_type", None) or "epsilon")
    sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if "FlowMatch" in type(scheduler).__name__ and sigmas is not None and index:
        sigma = sigmas[index - 1]  # the step has already moved its index on
        return 1 - sigma, sigma, "flow_prediction"
    if hasattr(scheduler, "_sigma_to_alpha_sigma_t") and sigmas is not None and index:
        alpha, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigmas[index - 1])
        return alpha, sigma_t, prediction
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is not None:
        cumprod = alphas[int(timestep)]
        return cumprod**0.5, (1 - cumprod) ** 0.5, prediction
    return None


def denoised_estimate(scheduler: Any, model_output: Any, timestep: Any, sample: Any, result: Any) -> Any:
    """x0 predicted at this step (same shape as the latents), or None when the scheduler is not understood."""
    returned = result if isinstance(result, tuple) else (getattr(result, "prev_sample", None),)
    if len(returned) > 1 and returned[1] is not None:
        return returned[1]  # Euler, Euler a, LMS, Heun, DPM2, DPM2 a, DDIM: pred_original_sample
    if not isinstance(result, tuple) and getattr(result, "pred_original_sample", None) is not None:
        return result.pred_original_sample
    found = _alpha_sigma(scheduler, timestep)
    if found is None:
        return None
    alpha, sigma, prediction = found
    out, x = model_output.float(), sample.float()
    if prediction == "epsilon":
        return (x - sigma * out) / alpha
    if prediction == "v_prediction":
        return alpha * x - sigma * out
    if prediction == "flow_prediction":
        return x - sigma * out
    if prediction == "sample":
        return out
    return None


@contextmanager
def capturing_denoised(scheduler: Any, keep: Callable[[Any], None], enabled: bool = True) -> Iterator[None]:
    """Within the block, every `scheduler.step` also hands its denoised estimate to `keep` (when enabled)."""
    if not enabled:
        yield
        return
    step = scheduler.step

    # the pipelines pass `eta` and `generator` only to a step whose signature has them: keep the original's
    @functools.wraps(step)
    def wrapped(model_output: Any, timestep: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
        result = step(model_output, timestep, sample, *args, **kwargs)
        keep(denoised_estimate(scheduler, model_output, timestep, sample, result))
        return result

    scheduler.step = wrapped
    try:
        yield
    finally:
        scheduler.__dict__.pop("step", None)
