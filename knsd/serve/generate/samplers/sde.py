"""A1111's SDE samplers: DPM++ SDE, DPM++ 2M SDE (midpoint and Heun) and DPM++ 3M SDE with eta and
s_noise, their noise from Brownian trees seeded with the batch's seeds (k-diffusion's
BrownianTreeNoiseSampler, as A1111's create_noise_sampler builds it; torchsde)."""

from __future__ import annotations

import warnings
from typing import Any

import diffusers
import torch
from diffusers.schedulers import scheduling_dpmsolver_sde
from diffusers.schedulers.scheduling_dpmsolver_sde import DPMSolverSDESchedulerOutput
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput

from knsd.serve.generate.samplers.kdiffusion import SamplerRun, ancestral_step, denoised, output, start_sigma

_diffusers: Any = diffusers  # untyped scheduler state, as in knsd.serve.generate.samplers.ancestral
_sde: Any = scheduling_dpmsolver_sde


class _Brownian:
    """Brownian-tree noise over the schedule's sigma range: one tree per image, seeded with its seed, drawn
    on the CPU in float32 (A1111's randn_source CPU), normalised to unit variance per interval."""

    def __init__(self, like: torch.Tensor, sigmas: torch.Tensor, seeds: tuple[int, ...]) -> None:
        sigmas = sigmas.to("cpu", torch.float32)
        x = torch.zeros(like.shape, dtype=torch.float32)
        self.sampler = _sde.BrownianTreeNoiseSampler(
            x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[int(s) for s in seeds]
        )

    def __call__(self, sigma: Any, sigma_next: Any, like: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # torchsde compares the float32 ends of the range with float64 queries; k-diffusion (and so
            # A1111) queries the same values and gets the same noise and the same warning.
            warnings.filterwarnings("ignore", "Should have", UserWarning)
            noise = self.sampler(
                torch.as_tensor(sigma).cpu().float(), torch.as_tensor(sigma_next).cpu().float()
            )
        out: torch.Tensor = noise.to(device=like.device, dtype=like.dtype)
        return out


class DPMppSDE(_diffusers.DPMSolverSDEScheduler):
    """k-diffusion's sample_dpmpp_sde (r = 1/2): two ancestral DPM-Solver++ substeps per step with eta."""

    knsd: SamplerRun
    sample: Any
    mid_point_sigma: Any

    @property
    def init_noise_sigma(self) -> Any:
        return start_sigma(self)

    _tree: _Brownian | None = None

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        self._tree = None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
        s_noise: float = 1.0,
    ) -> Any:
        if self.step_index is None:
            self._init_step_index(timestep)
        if self._tree is None:
            self._tree = _Brownian(sample, self.sigmas, self.knsd.noise.seeds)
        i, first = self.step_index, self.state_in_first_order
        sigma = self.sigmas[i] if first else self.sigmas[i - 1]
        sigma_next = self.sigmas[i + 1] if first else self.sigmas[i]
        t, t_next = -sigma.log(), -sigma_next.log()
        t_mid = t + (t_next - t) * 0.5
        at = sigma if first else (-t_mid).exp()
        x0 = denoised(self.config.prediction_type, sample, model_output, at)
        p = self.knsd.params
        if sigma_next == 0:
            prev = sample + (sample - x0) / sigma * (sigma_next - sigma)
        else:
            base = sample if first else self.sample
            target = (-t_mid).exp() if first else sigma_next
            down, up = ancestral_step(sigma, target, p.eta)
            t_down = -torch.as_tensor(down).log()
            prev = (down / sigma) * base - (t - t_down).expm1() * x0
            prev = prev + self._tree(sigma, target, prev) * p.s_noise * up
            self.sample = base if first else None
            self.mid_point_sigma = target if first else None
        self._step_index += 1
        return output(DPMSolverSDESchedulerOutput, prev, x0, model_output.dtype, return_dict)


class DPMpp2MSDE(_diffusers.EulerDiscreteScheduler):
    """k-diffusion's sample_dpmpp_2m_sde (midpoint) on knsd's k-diffusion sigmas: one model call per step."""

    knsd: SamplerRun
    heun = False
    _tree: _Brownian | None = None
    _old: torch.Tensor | None = None
    _h_last: torch.Tensor | None = None

    @property
    def init_noise_sigma(self) -> Any:
        return start_sigma(self)

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        self._tree, self._old, self._h_last = None, None, None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        *args: Any,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        if self.step_index is None:
            self._init_step_index(timestep)
        if self._tree is None:
            self._tree = _Brownian(sample, self.sigmas, self.knsd.noise.seeds)
        i = self.step_index
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        x = sample.to(torch.float32)
        x0 = denoised(self.config.prediction_type, x, model_output.to(torch.float32), sigma)
        prev = self._update(x, x0, sigma, sigma_next)
        self._step_index += 1
        return output(EulerDiscreteSchedulerOutput, prev, x0, model_output.dtype, return_dict)

    def _update(self, x: torch.Tensor, x0: torch.Tensor, sigma: Any, sigma_next: Any) -> torch.Tensor:
        p, h = self.knsd.params, None
        if sigma_next == 0:
            x = x0
        else:
            h = sigma.log() - sigma_next.log()
            eta_h = p.eta * h
            x = sigma_next / sigma * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * x0
            if self._old is not None and self._h_last is not None:
                r = self._h_last / h
                if self.heun:
                    coef = (-h - eta_h).expm1().neg() / (-h - eta_h) + 1
                else:
                    coef = 0.5 * (-h - eta_h).expm1().neg()
                x = x + coef * (1 / r) * (x0 - self._old)
            if p.eta:
                assert self._tree is not None
                noise = self._tree(sigma, sigma_next, x)
                x = x + noise * sigma_next * (-2 * eta_h).expm1().neg().sqrt() * p.s_noise
        self._old = x0
        self._h_last = h if h is not None else self._h_last
        return x


class DPMpp2MSDEHeun(DPMpp2MSDE):
    """DPM++ 2M SDE with k-diffusion's `solver_type="heun"`."""

    heun = True


class DPMpp3MSDE(DPMpp2MSDE):
    """k-diffusion's sample_dpmpp_3m_sde, with the penultimate sigma discarded as A1111 does for it."""

    sigmas: Any
    timesteps: Any
    _h_2: torch.Tensor | None = None
    _old_2: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(num_inference_steps + 1, *args, **kwargs)
        keep = [k for k in range(len(self.sigmas)) if k != len(self.sigmas) - 2]
        self.sigmas = self.sigmas[keep]
        self.timesteps = self.timesteps[:-1]
        self.num_inference_steps = num_inference_steps
        self._h_2, self._old_2 = None, None

    def _update(self, x: torch.Tensor, x0: torch.Tensor, sigma: Any, sigma_next: Any) -> torch.Tensor:
        p, h = self.knsd.params, None
        if sigma_next == 0:
            x = x0
        else:
            h = sigma.log() - sigma_next.log()
            h_eta = h * (p.eta + 1)
            x = (-h_eta).exp() * x + (-h_eta).expm1().neg() * x0
            phi_2 = (-h_eta).expm1() / h_eta + 1
            if self._h_2 is not None and self._old is not None and self._old_2 is not None:
                assert self._h_last is not None
                r0, r1 = self._h_last / h, self._h_2 / h
                d1_0 = (x0 - self._old) / r0
                d1_1 = (self._old - self._old_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif self._h_last is not None and self._old is not None:
                x = x + phi_2 * (x0 - self._old) / (self._h_last / h)
            if p.eta:
                assert self._tree is not None
                noise = self._tree(sigma, sigma_next, x)
                x = x + noise * sigma_next * (-2 * h * p.eta).expm1().neg().sqrt() * p.s_noise
        self._old_2, self._old = self._old, x0
        self._h_2, self._h_last = self._h_last, h
        return x
