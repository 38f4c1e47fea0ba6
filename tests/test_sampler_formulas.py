"""knsd's sampler schedulers against k-diffusion's formulas (@ ab527a9a, as A1111 v1.10.1 calls them).

Each test drives a scheduler the way a diffusers pipeline does (scale_model_input, model, step) with a
synthetic eps-model, and runs the k-diffusion loop written here from its formulas (get_ancestral_step,
sample_euler_ancestral, sample_dpm_2_ancestral, sample_euler with churn, sample_dpmpp_sde,
sample_dpmpp_2m_sde, sample_dpmpp_3m_sde) on the same sigmas, the same denoiser and the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

from knsd.serve.api.sampling import SamplerParams
from knsd.serve.generate.noise import SamplerNoise
from knsd.serve.generate.samplers import SamplerRun, build

CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}
SEEDS = (7, 8)
SHAPE = (2, 4, 8, 8)
C = 0.3  # the synthetic model: eps(x_in) = C * x_in


def _denoise(x: torch.Tensor, sigma: Any) -> torch.Tensor:
    """k-diffusion's CompVisDenoiser around the synthetic eps-model: D(x, sigma) = x - sigma * eps(c_in x)."""
    return x - sigma * C * x / (sigma**2 + 1) ** 0.5


def _anc(sigma_from: Any, sigma_to: Any, eta: float) -> tuple[Any, Any]:
    if not eta:
        return sigma_to, 0.0
    up = min(
        float(sigma_to), eta * float((sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    )
    return (sigma_to**2 - up**2) ** 0.5, up


def _generators(ensd: int = 0) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s + ensd) for s in SEEDS]


def _randn(gens: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.randn(SHAPE[1:], generator=g) for g in gens])


def _pipeline_loop(
    sampler: str, params: SamplerParams, steps: int, options: dict[str, Any]
) -> tuple[Any, Any]:
    """What a diffusers pipeline does with the scheduler; returns (final latents, scheduler)."""
    noise = SamplerNoise(SEEDS, params.ensd)
    scheduler = build(sampler, CONFIG, options, SamplerRun(params, noise))
    scheduler.set_timesteps(steps)
    first = _generators()
    x = _randn(first) * scheduler.init_noise_sigma
    noise.after_first(first)
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([x, x]), t)  # classifier-free guidance doubles it
        eps = C * model_in[: len(SEEDS)]
        x = scheduler.step(eps, t, x, return_dict=False)[0]
    return x, scheduler


def _start(sigmas: torch.Tensor) -> tuple[torch.Tensor, list[torch.Generator]]:
    gens = _generators()
    return _randn(gens) * sigmas[0], gens


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), float((a - b).abs().max())


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, 1.7])
def test_euler_ancestral_is_k_diffusion_sample_euler_ancestral(eta: float) -> None:
    got, scheduler = _pipeline_loop("Euler a", SamplerParams(eta=eta), 6, {})
    sigmas = scheduler.sigmas
    x, gens = _start(sigmas)
    for i in range(len(sigmas) - 1):
        d = _denoise(x, sigmas[i])
        down, up = _anc(sigmas[i], sigmas[i + 1], eta)
        x = x + (x - d) / sigmas[i] * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + _randn(gens) * up
    _close(got, x)


def test_euler_ancestral_eta_0_draws_nothing_it_adds() -> None:
    a, _ = _pipeline_loop("Euler a", SamplerParams(eta=0.0), 5, {})
    b, _ = _pipeline_loop("Euler a", SamplerParams(eta=0.0, ensd=31337), 5, {})
    c, _ = _pipeline_loop("Euler a", SamplerParams(eta=1.0), 5, {})
    d, _ = _pipeline_loop("Euler a", SamplerParams(eta=1.0, ensd=31337), 5, {})
    assert torch.equal(a, b) and not torch.allclose(c, d)


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_dpm2_ancestral_is_k_diffusion_sample_dpm_2_ancestral(eta: float) -> None:
    s_noise = 0.9
    got, scheduler = _pipeline_loop("DPM2 a", SamplerParams(eta=eta, s_noise=s_noise), 5, {})
    sigmas = torch.cat([scheduler.sigmas[:1], scheduler.sigmas[1:-1:2]])
    x, gens = _start(sigmas)
    for i in range(len(sigmas) - 1):
        d = _denoise(x, sigmas[i])
        down, up = _anc(sigmas[i], sigmas[i + 1], eta)
        deriv = (x - d) / sigmas[i]
        if float(down) == 0:
            x = x + deriv * (down - sigmas[i])
        else:
            mid = sigmas[i].log().lerp(torch.as_tensor(down).log(), 0.5).exp()
            x2 = x + deriv * (mid - sigmas[i])
            d2 = (x2 - _denoise(x2, mid)) / mid
            x = x + d2 * (down - sigmas[i]) + _randn(gens) * s_noise * up
    _close(got, x)


def test_euler_churn_is_k_diffusion_sample_euler() -> None:
    p = SamplerParams(s_churn=2.0, s_tmin=0.5, s_tmax=8.0, s_noise=1.003)
    got, scheduler = _pipeline_loop("Euler", p, 6, {})
    sigmas = scheduler.sigmas
    x, gens = _start(sigmas)
    churned = 0
    for i in range(len(sigmas) - 1):
        s = float(sigmas[i])
        gamma = min(p.s_churn / (len(sigmas) - 1), 2**0.5 - 1) if p.s_tmin <= s <= p.s_tmax else 0.0
        eps = _randn(gens) * p.s_noise  # drawn on every step
        hat = s * (gamma + 1)
        if gamma > 0:
            churned += 1
            x = x + eps * (hat**2 - s**2) ** 0.5
        d = _denoise(x, hat)
        x = x + (x - d) / hat * (sigmas[i + 1] - hat)
    assert 0 < churned < len(sigmas) - 1  # the window excluded some steps
    _close(got, x)


def _brownian(sigmas: torch.Tensor) -> Callable[[Any, Any], torch.Tensor]:
    tree = BrownianTreeNoiseSampler(
        torch.zeros(SHAPE), sigmas[sigmas > 0].min(), sigmas.max(), seed=list(SEEDS)
    )
    return lambda a, b: tree(torch.as_tensor(a), torch.as_tensor(b))


@pytest.mark.parametrize(
    ("sampler", "eta"), [("DPM++ 2M SDE", 0.7), ("DPM++ 2M SDE Heun", 1.0), ("DPM++ 2M SDE", 0.0)]
)
def test_dpmpp_2m_sde_is_k_diffusion_sample_dpmpp_2m_sde(sampler: str, eta: float) -> None:
    s_noise = 1.1
    opts = {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}
    got, scheduler = _pipeline_loop(sampler, SamplerParams(eta=eta, s_noise=s_noise), 6, opts)
    sigmas = scheduler.sigmas
    x, _ = _start(sigmas)
    noise = _brownian(sigmas)
    old, h_last = None, None
    for i in range(len(sigmas) - 1):
        d = _denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = d
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            eh = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eh).exp() * x + (-h - eh).expm1().neg() * d
            if old is not None:
                r = h_last / h
                if sampler.endswith("Heun"):
                    x = x + ((-h - eh).expm1().neg() / (-h - eh) + 1) * (1 / r) * (d - old)
                else:
                    x = x + 0.5 * (-h - eh).expm1().neg() * (1 / r) * (d - old)
            if eta:
                x = (
                    x
                    + noise(sigmas[i], sigmas[i + 1])
                    * sigmas[i + 1]
                    * (-2 * eh).expm1().neg().sqrt()
                    * s_noise
                )
            h_last = h
        old = d
    _close(got, x)


def test_dpmpp_3m_sde_is_k_diffusion_sample_dpmpp_3m_sde_without_the_penultimate_sigma() -> None:
    eta, steps = 0.8, 6
    opts = {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}
    got, scheduler = _pipeline_loop("DPM++ 3M SDE", SamplerParams(eta=eta), steps, opts)
    sigmas = scheduler.sigmas
    assert len(sigmas) == steps + 1 and float(sigmas[-1]) == 0
    x, _ = _start(sigmas)
    noise = _brownian(sigmas)
    d1 = d2 = h1 = h2 = None
    for i in range(len(sigmas) - 1):
        d = _denoise(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = d
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            he = h * (eta + 1)
            x = torch.exp(-he) * x + (-he).expm1().neg() * d
            phi2 = (-he).expm1() / he + 1
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                a, b = (d - d1) / r0, (d1 - d2) / r1
                x = x + phi2 * (a + (a - b) * r0 / (r0 + r1)) - (phi2 / he - 0.5) * ((a - b) / (r0 + r1))
            elif h1 is not None:
                x = x + phi2 * (d - d1) / (h1 / h)
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        d1, d2, h1, h2 = d, d1, h, h1
    _close(got, x)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpmpp_sde_is_k_diffusion_sample_dpmpp_sde(eta: float) -> None:
    got, scheduler = _pipeline_loop("DPM++ SDE", SamplerParams(eta=eta), 4, {"use_karras_sigmas": True})
    sigmas = torch.cat([scheduler.sigmas[:1], scheduler.sigmas[1:-1:2], scheduler.sigmas[-1:]])
    x, _ = _start(sigmas)
    noise = _brownian(sigmas)
    for i in range(len(sigmas) - 1):
        d = _denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x + (x - d) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        s = t + (t_next - t) * 0.5
        sd, su = _anc(sigmas[i], (-s).exp(), eta)
        s_ = -torch.as_tensor(sd).log()
        x2 = (torch.as_tensor(sd) / sigmas[i]) * x - (t - s_).expm1() * d
        x2 = x2 + noise(sigmas[i], (-s).exp()) * su
        d2 = _denoise(x2, (-s).exp())
        sd, su = _anc(sigmas[i], sigmas[i + 1], eta)
        tn = -torch.as_tensor(sd).log()
        x = (torch.as_tensor(sd) / sigmas[i]) * x - (t - tn).expm1() * d2
        x = x + noise(sigmas[i], sigmas[i + 1]) * su
    assert not math.isnan(float(x.sum()))
    _close(got, x)
