"""A1111's latent blending during sampling (knsd.serve.generate.denoiser): the arithmetic, and what it does
to every sampler on the real tiny pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from knsd.serve.api.request import parse_img2img
from knsd.serve.api.samplers import sampler_names
from knsd.serve.generate import inpaint as inpaint_module
from knsd.serve.generate.denoiser import TIMESTEP_SAMPLERS, Blend, DenoiserHook
from knsd.serve.generate.engine import Engine
from tests.test_inpaint import BASE, b64, picture


def _training_sigmas() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    return ((1 - alphas) / alphas) ** 0.5


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "flow"])
def test_blended_prediction_implies_the_blended_clean_latents(prediction: str) -> None:
    torch.manual_seed(0)
    hook = DenoiserHook(prediction=prediction, sigmas=_training_sigmas())
    keep = (torch.rand(1, 4, 8, 8) > 0.5).float()
    original = torch.randn(2, 4, 8, 8)
    hook.blend = Blend(keep, before=False, original=original)
    t = torch.tensor(437.25)  # fractional, as Karras schedules give
    x, out = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)  # CFG: the batch twice
    sigma = hook.sigma(t, x)
    alpha = (1 + sigma**2).rsqrt()

    def clean(pred: torch.Tensor) -> torch.Tensor:
        if prediction == "flow":
            return x - sigma * pred
        if prediction == "epsilon":
            return (x - sigma * alpha * pred) / alpha
        return alpha * x - sigma * alpha * pred

    blended = hook.blend_prediction(x, t, out)
    expected = clean(out) * (1 - keep) + original.repeat(2, 1, 1, 1) * keep
    assert torch.allclose(clean(blended), expected, atol=1e-4)
    # a timestep's sigma: the training schedule's (flow matching: t / 1000)
    expected_sigma = torch.tensor(0.999) if prediction == "flow" else _training_sigmas()[999]
    assert torch.allclose(hook.sigma(torch.tensor(999), x)[0, 0, 0, 0], expected_sigma)


def test_input_blending_keeps_the_clean_original_where_the_mask_keeps() -> None:
    keep = torch.zeros(1, 4, 8, 8)
    keep[..., :4] = 1
    original = torch.randn(1, 4, 8, 8)
    hook = DenoiserHook(blend=Blend(keep, before=True, original=original))
    x = torch.randn(2, 4, 8, 8)
    out = hook.blend_input(x)
    assert torch.equal(out[..., :4], original.repeat(2, 1, 1, 1)[..., :4]) and torch.equal(
        out[..., 4:], x[..., 4:]
    )


K_SAMPLERS = [s for s in sampler_names() if s not in TIMESTEP_SAMPLERS]


def test_k_samplers_steer_kept_latents_onto_the_original(
    tiny_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With everything kept, the k-diffusion samplers' own trajectory ends on the original latents (the
    blended estimate is the original on every call); the blend after sampling has nothing left to fix."""
    seen: dict[str, float] = {}
    finish = inpaint_module.Inpainting.finish

    def watched(self: Any, latents: Any) -> Any:
        seen["gap"] = float((latents - self.blend.original).abs().max())
        return finish(self, latents)

    monkeypatch.setattr(inpaint_module.Inpainting, "finish", watched)
    engine = Engine(tiny_model)
    nothing = np.zeros((64, 64), np.uint8)
    gaps = {}
    for sampler in K_SAMPLERS:
        body = {**BASE, "init_images": [b64(picture())], "mask": b64(nothing), "sampler_name": sampler,
                "steps": 6, "denoising_strength": 0.9, "inpainting_fill": 1}  # fmt: skip
        engine.generate(parse_img2img(body, 1 << 30))
        gaps[sampler] = seen["gap"]
    # latents here are of order 1; multistep solvers carry a little integration error
    assert all(gap < 0.1 for gap in gaps.values()), gaps
    assert sum(gap < 1e-3 for gap in gaps.values()) >= 8, gaps


@pytest.mark.parametrize(("name", "sampler"), [("tiny-sdxl", "DPM++ 2M"), ("tiny-sd3", "Euler")])
def test_other_families_inpaint_and_blend(
    name: str, sampler: str, cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SDXL (UNet with added conditions) and SD 3.x (an MMDiT predicting flow): the same blending."""
    from knsd.serve.models.loader import load_model
    from tests.test_inpaint import change, square_mask

    seen: dict[str, float] = {}
    finish = inpaint_module.Inpainting.finish

    def watched(self: Any, latents: Any) -> Any:
        seen["gap"] = float((latents - self.blend.original).abs().max())
        return finish(self, latents)

    monkeypatch.setattr(inpaint_module.Inpainting, "finish", watched)
    engine = Engine(load_model(name, cache, device="cpu"))
    original, mask = picture(), square_mask()
    body = {**BASE, "init_images": [b64(original)], "mask": b64(mask), "sampler_name": sampler}
    out = np.asarray(engine.generate(parse_img2img(body, 1 << 30)).images[0])
    diff = change(out, original)
    assert (diff[mask == 0] == 0).all() and diff[mask == 255].mean() > 20
    nothing = {**body, "mask": b64(np.zeros((64, 64), np.uint8)), "inpainting_fill": 1}
    engine.generate(parse_img2img(nothing, 1 << 30))
    assert seen["gap"] < 1e-3  # kept everywhere: the sampler itself ends on the original latents
