"""What knsd adds around every call of the denoiser (UNet or MMDiT) while a pass runs: an inpainting
model's extra input channels and A1111's latent blending during inpainting.

A1111 blends in its CFG denoiser (`sd_samplers_cfg_denoiser.py`), on every model call, with the clean
original latents: for its timestep samplers (DDIM, PLMS, UniPC) the model's input, `x = x*regen +
original*keep`; for the k-diffusion samplers the model's estimate of the clean latents after CFG,
`denoised = denoised*regen + original*keep`. Diffusers' schedulers take a noise (or v, or flow) prediction,
so the estimate is computed from the prediction at the call's noise level sigma, blended, and turned back
into a prediction; the sampler then steps as if the model had predicted the blend. CFG combines the
predictions of a batch affinely, so blending each prediction before CFG equals blending after it. Being a
wrapper of the denoiser's forward, it composes with any scheduler, knsd's own ones included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

TIMESTEP_SAMPLERS = frozenset({"DDIM", "PLMS", "UniPC"})  # A1111's sd_samplers_timesteps


@dataclass(slots=True)
class Blend:
    """Mask blending: `keep` is 1 where the original stays (A1111's `mask`), `original` the clean latents
    (set once the pass has encoded them); `before` blends the input (timestep samplers)."""

    keep: Any
    before: bool
    original: Any = None


@dataclass(slots=True)
class DenoiserHook:
    """Per-call additions for one pass: `concat` (B, 5, h, w) for inpainting models, `blend` for inpainting.

    `prediction` is the model's ("epsilon", "v_prediction", "flow"); `sigmas` its training noise levels
    (1000 for SD 1.x/2.x/SDXL) to read a call's sigma off its timestep, as k-diffusion's denoiser does.
    """

    concat: Any = None
    blend: Blend | None = None
    prediction: str = "epsilon"
    sigmas: Any = None

    def sigma(self, timestep: Any, like: Any) -> Any:
        """The noise level of a call at `timestep`, shaped to broadcast over `like` (B, C, h, w)."""
        import torch

        t = torch.as_tensor(timestep).detach().to("cpu", torch.float32).reshape(-1)  # the table is on CPU
        if self.prediction == "flow":
            sigma = t / 1000.0
        else:  # log-linear between the training levels, as k-diffusion's t_to_sigma
            log_sigmas = self.sigmas.to("cpu", torch.float32).log()
            t = t.clamp(0, len(log_sigmas) - 1)
            low = t.floor().long()
            high = t.ceil().long()
            frac = t - low
            sigma = ((1 - frac) * log_sigmas[low] + frac * log_sigmas[high]).exp()
        if sigma.numel() == 1:
            sigma = sigma.expand(like.shape[0])
        return sigma.to(device=like.device, dtype=torch.float32).reshape(-1, 1, 1, 1)

    def blend_prediction(self, x: Any, timestep: Any, out: Any) -> Any:
        """The prediction that gives, at this sigma, the blended estimate of the clean latents."""
        blend = self.blend
        assert blend is not None
        sigma = self.sigma(timestep, x)
        xf, of = x.float(), out.float()
        if self.prediction == "flow":  # x = (1 - s) x0 + s noise, out = noise - x0
            x0 = xf - sigma * of
        else:  # x = alpha x0 + s_t noise with alpha = 1 / sqrt(1 + sigma^2), s_t = sigma * alpha
            alpha = (1 + sigma**2).rsqrt()
            st = sigma * alpha
            x0 = (xf - st * of) / alpha if self.prediction == "epsilon" else alpha * xf - st * of
        keep, original = _batched(blend.keep, x), _batched(blend.original, x)
        x0 = x0 * (1 - keep) + original.float() * keep
        if self.prediction == "flow":
            new = (xf - x0) / sigma
        elif self.prediction == "epsilon":
            new = (xf - alpha * x0) / st
        else:
            new = (alpha * xf - x0) / st
        return new.to(out.dtype)

    def blend_input(self, x: Any) -> Any:
        blend = self.blend
        assert blend is not None
        keep = _batched(blend.keep, x).to(x.dtype)
        return x * (1 - keep) + _batched(blend.original, x).to(x.dtype) * keep


def _batched(tensor: Any, like: Any) -> Any:
    """`tensor` (1 or B images) repeated over a call's batch (B, 2B with CFG, or B per CFG half)."""
    tensor = tensor.to(like.device)
    if tensor.shape[0] == like.shape[0]:
        return tensor
    return tensor.repeat(like.shape[0] // tensor.shape[0], 1, 1, 1)


_SAMPLE_KEYS = ("sample", "hidden_states")  # the UNet's and the MMDiT's name for the latents


@contextmanager
def hooked(denoiser: Any, hook: DenoiserHook | None) -> Iterator[None]:
    """While active, every forward of `denoiser` gets the hook's channels and blending."""
    if hook is None or (hook.concat is None and hook.blend is None):
        yield
        return
    import torch

    original = denoiser.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        call = list(args)
        key = next((k for k in _SAMPLE_KEYS if k in kwargs), None)
        x = kwargs[key] if key else call[0]
        timestep = kwargs["timestep"] if "timestep" in kwargs else call[1]
        blend = hook.blend if hook.blend is not None and hook.blend.original is not None else None
        if blend is not None and blend.before:
            x = hook.blend_input(x)
        model_in = x if hook.concat is None else torch.cat([x, _batched(hook.concat, x).to(x.dtype)], 1)
        if key:
            kwargs[key] = model_in
        else:
            call[0] = model_in
        out = original(*call, **kwargs)
        if blend is None or blend.before:
            return out
        if isinstance(out, tuple):
            return (hook.blend_prediction(x, timestep, out[0]), *out[1:])
        out.sample = hook.blend_prediction(x, timestep, out.sample)
        return out

    saved = denoiser.__dict__.get("forward")  # someone else's per-instance patch, if any
    denoiser.forward = forward
    try:
        yield
    finally:
        if saved is None:
            del denoiser.forward
        else:
            denoiser.forward = saved
