"""A1111's samplers that draw noise from the per-image generators: Euler a and DPM2 a with eta, Euler with
churn, DDIM with eta. Each is a diffusers scheduler whose step follows k-diffusion @ ab527a9a (A1111's
`ddim` for DDIM) and draws from the pass's SamplerNoise instead of the pipeline's generator."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import torch
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteSchedulerOutput

from knsd.serve.generate.samplers.kdiffusion import SamplerRun, ancestral_step, denoised, output, start_sigma

# diffusers' schedulers build their state in __init__ and set_timesteps without annotations: knsd's
# subclasses treat them as Any (mypy: disallow_subclassing_any is off for this package).
_diffusers: Any = diffusers


class EulerAncestral(_diffusers.EulerAncestralDiscreteScheduler):
    """k-diffusion's sample_euler_ancestral: eta scales the added noise (0 = plain Euler); noise is drawn
    only while the next sigma is above 0; A1111 never passes s_noise here."""

    knsd: SamplerRun

    @property
    def init_noise_sigma(self) -> Any:
        return start_sigma(self)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> Any:
        if self.step_index is None:
            self._init_step_index(timestep)
        i = self.step_index
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        x = sample.to(torch.float32)
        x0 = denoised(self.config.prediction_type, x, model_output, sigma)
        down, up = ancestral_step(sigma, sigma_next, self.knsd.params.eta)
        x = x + (x - x0) / sigma * (down - sigma)
        if sigma_next > 0:
            x = x + self.knsd.noise.next(x) * up
        self._step_index += 1
        return output(EulerAncestralDiscreteSchedulerOutput, x, x0, model_output.dtype, return_dict)


class DPM2Ancestral(_diffusers.KDPM2AncestralDiscreteScheduler):
    """k-diffusion's sample_dpm_2_ancestral with eta and s_noise: the ancestral split and the midpoint
    sigma are recomputed from eta, the noise comes from the pass's generators."""

    knsd: SamplerRun
    sample: Any
    timesteps: Any

    @property
    def init_noise_sigma(self) -> Any:
        return start_sigma(self)

    def set_timesteps(
        self, num_inference_steps: int, device: Any = None, num_train_timesteps: int | None = None
    ) -> None:
        super().set_timesteps(num_inference_steps, device, num_train_timesteps)
        if getattr(self, "knsd", None) is None:
            return  # diffusers' __init__ sets timesteps before knsd's parameters are attached
        sigmas = torch.cat([self.sigmas[:1], self.sigmas[1:-1:2]])  # un-interleave: s0 .. s_n-1, 0
        timesteps = torch.cat([self.timesteps[:1], self.timesteps[2::2]])
        nexts = torch.cat([sigmas[1:], sigmas.new_zeros(1)])
        ups, downs = [], []
        for s, n in zip(sigmas, nexts, strict=True):
            down, up = ancestral_step(s, n, self.knsd.params.eta) if s > 0 else (n * 0, n * 0)
            downs.append(torch.as_tensor(down, dtype=sigmas.dtype))
            ups.append(torch.as_tensor(up, dtype=sigmas.dtype))
        sigmas_down, sigmas_up = torch.stack(downs), torch.stack(ups)
        sigmas_down[-1] = 0.0
        interpol = sigmas.log().lerp(sigmas_down.log(), 0.5).exp()
        interpol[-2:] = 0.0

        def interleave(v: torch.Tensor) -> torch.Tensor:
            return torch.cat([v[:1], v[1:].repeat_interleave(2), v[-1:]])

        self.sigmas_up, self.sigmas_down = interleave(sigmas_up), interleave(sigmas_down)
        self.sigmas_interpol = interleave(interpol)
        log_sigmas = self.log_sigmas.cpu().numpy()
        t_interpol = np.array([self._sigma_to_t(s, log_sigmas) for s in interpol.numpy()])
        t_interpol_tensor = torch.from_numpy(t_interpol).to(timesteps.device, dtype=timesteps.dtype)
        pairs = torch.stack((t_interpol_tensor[:-2, None], timesteps[1:, None]), dim=-1).flatten()
        self.timesteps = torch.cat([timesteps[:1], pairs])

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> Any:
        if self.step_index is None:
            self._init_step_index(timestep)
        i = self.step_index
        first = self.state_in_first_order
        sigma = self.sigmas[i] if first else self.sigmas[i - 1]
        interpol = self.sigmas_interpol[i] if first else self.sigmas_interpol[i - 1]
        up, down = self.sigmas_up[i] if first else self.sigmas_up[i - 1], self.sigmas_down[i - 1]
        at = sigma if first else interpol
        x0 = denoised(self.config.prediction_type, sample, model_output, at)
        derivative = (sample - x0) / at
        if first:
            self.sample = sample
            prev = sample + derivative * (interpol - sigma)
        else:
            prev = self.sample + derivative * (down - sigma)
            self.sample = None
            prev = prev + self.knsd.noise.next(prev) * self.knsd.params.s_noise * up
        self._step_index += 1
        return output(KDPM2AncestralDiscreteSchedulerOutput, prev, x0, model_output.dtype, return_dict)


class Euler(_diffusers.EulerDiscreteScheduler):
    """k-diffusion's sample_euler (from noise x sigma_max) with s_churn, s_tmin, s_tmax and s_noise: on each step the latents are
    churned up to sigma_hat = sigma (1 + gamma) and the model is evaluated there (timestep and input scale
    of sigma_hat); a noise draw is made on every step, as k-diffusion does."""

    knsd: SamplerRun
    _hats: torch.Tensor | None = None
    _churned: torch.Tensor | None = None

    @property
    def init_noise_sigma(self) -> Any:
        return start_sigma(self)

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        self._churn_from(0)

    def set_begin_index(self, begin_index: int = 0) -> None:
        super().set_begin_index(begin_index)
        self._churn_from(begin_index)  # img2img: gamma counts the steps that run

    def _init_step_index(self, timestep: float | torch.Tensor) -> None:
        # Steps run in order from the begin index (as k-diffusion counts them): churned timesteps can
        # repeat (sigma_hat past the largest trained sigma maps to the last timestep), so diffusers' search
        # for the step by its timestep would start a step late and run past the end.
        self._step_index = self.begin_index if self.begin_index is not None else 0

    def _churn_from(self, begin: int) -> None:
        """sigma_hat per step and the model timesteps that go with them, written into `timesteps` in
        place (pipelines iterate views of it)."""
        if getattr(self, "knsd", None) is None:
            return
        p = self.knsd.params
        sigmas = self.sigmas.to(torch.float64)
        steps = len(sigmas) - 1 - begin
        hats = sigmas.clone()
        for i in range(begin, len(sigmas) - 1):
            s = float(sigmas[i])
            gamma = min(p.s_churn / steps, 2**0.5 - 1) if p.s_tmin <= s <= p.s_tmax else 0.0
            hats[i] = s * (gamma + 1)
        self._hats = hats
        alphas = self.alphas_cumprod.numpy()
        log_sigmas = np.log(((1 - alphas) / alphas) ** 0.5)
        for i in range(begin, len(self.timesteps)):
            if hats[i] != sigmas[i]:
                t = self._sigma_to_t(np.array(float(hats[i])), log_sigmas)
                self.timesteps[i] = torch.as_tensor(t, dtype=self.timesteps.dtype)

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        if self.step_index is None:
            self._init_step_index(timestep)
        assert self._hats is not None
        i = self.step_index
        sigma, hat = self.sigmas[i].to(torch.float32), self._hats[i].to(torch.float32)
        noise = self.knsd.noise
        images = len(noise.seeds)
        latents = sample[:images].to(torch.float32)
        eps = noise.next(latents) * self.knsd.params.s_noise
        if hat > sigma:
            latents = latents + eps * (hat**2 - sigma**2) ** 0.5
        self._churned = latents
        copies = sample.shape[0] // images  # classifier-free guidance doubles the batch
        self.is_scale_input_called = True
        return (torch.cat([latents] * copies) / (hat**2 + 1) ** 0.5).to(sample.dtype)

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
        assert self._hats is not None
        i = self.step_index
        hat = self._hats[i].to(torch.float32)
        x = self._churned if self._churned is not None else sample.to(torch.float32)
        x0 = denoised(self.config.prediction_type, x, model_output.to(torch.float32), hat)
        prev = x + (x - x0) / hat * (self.sigmas[i + 1] - hat)
        self._churned = None
        self._step_index += 1
        return output(EulerDiscreteSchedulerOutput, prev, x0, model_output.dtype, return_dict)


class DDIM(_diffusers.DDIMScheduler):
    """diffusers' DDIM step (A1111's `ddim` formula) with its eta noise from the pass's generators."""

    knsd: SamplerRun

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        if eta > 0 and variance_noise is None:
            variance_noise = self.knsd.noise.next(model_output)
        return super().step(
            model_output, timestep, sample, eta, use_clipped_model_output, None, variance_noise, return_dict
        )
