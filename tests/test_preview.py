"""Live previews: the denoised estimate each scheduler's step gives, the preview plan, and the drawing
methods (A1111's latent-to-RGB factors, the VAE, the weight-bound networks) on the real tiny pipelines."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from knsd.errors import InvalidField
from knsd.serve.api.policy import GENERATION_OPTIONS
from knsd.serve.api.preview import PreviewPlan, partial_images_plan, preview_plan
from knsd.serve.api.request import parse_txt2img
from knsd.serve.api.samplers import SAMPLERS, resolve_sampler, scheduler_for
from knsd.serve.generate.approx import LATENT_RGB_FACTORS, taesd_decoder, vae_approx, weights_path
from knsd.serve.generate.denoised import denoised_estimate
from knsd.serve.generate.engine import Engine

# Stable Diffusion's scheduler config (no clipping of the estimate: clip_sample false, as SD ships it).
SD1_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
              "clip_sample": False, "set_alpha_to_one": False}  # fmt: skip
FLOW_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}


def _scheduler(family: str, sampler: str, schedule: str | None) -> Any:
    import diffusers

    base = FLOW_CONFIG if family == "sd3" else SD1_CONFIG
    name, options = scheduler_for(family, resolve_sampler(sampler, schedule), dict(base))
    return getattr(diffusers, name).from_config(base, **dict(options))


def _takes(sampler: str, schedule: str | None) -> bool:
    try:
        resolve_sampler(sampler, schedule)
    except InvalidField:
        return False
    return True


CASES = [("sd1", s.name, sched) for s in SAMPLERS for sched in (None, "Karras") if _takes(s.name, sched)] + [
    ("sd3", name, None) for name in ("Euler", "Heun", "DPM++ 2M", "UniPC")
]


@pytest.mark.parametrize(("family", "sampler", "schedule"), CASES)
def test_denoised_estimate_recovers_the_clean_latents(
    family: str, sampler: str, schedule: str | None
) -> None:
    """Samples built with the scheduler's own forward process and an exact model output: every step's
    estimate is the clean latents, whatever the scheduler's parameterisation (VE, VP, flow)."""
    scheduler = _scheduler(family, sampler, schedule)
    scheduler.set_timesteps(8)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    flow = family == "sd3" or getattr(scheduler.config, "prediction_type", "") == "flow_prediction"
    for t in list(scheduler.timesteps)[:5]:
        if hasattr(scheduler, "_init_step_index") and scheduler.step_index is None:
            scheduler._init_step_index(t)
        if "FlowMatch" in type(scheduler).__name__:
            sample = scheduler.scale_noise(x0, torch.tensor([t]), noise)
        else:
            sample = scheduler.add_noise(x0, noise, torch.tensor([t]))
        output = noise - x0 if flow else noise
        # A second-order scheduler's corrector half is evaluated at the next point, not at `sample`.
        first_order = getattr(scheduler, "state_in_first_order", True)
        result = scheduler.step(output, t, sample, return_dict=False)
        estimate = denoised_estimate(scheduler, output, t, sample, result)
        if not first_order:
            continue
        assert estimate is not None
        torch.testing.assert_close(estimate.float(), x0, atol=2e-3, rtol=2e-3)


def test_plan_follows_a1111s_options() -> None:
    plan = preview_plan(dict(GENERATION_OPTIONS))
    assert (plan.method, plan.every, plan.grid) == ("Approx cheap", 10, True)
    assert [s for s in range(1, 31) if plan.due(s, 30)] == [10, 20, 30]
    every = preview_plan({**GENERATION_OPTIONS, "show_progress_every_n_steps": 0})
    assert all(every.due(s, 5) for s in range(1, 6))
    at_end = preview_plan({**GENERATION_OPTIONS, "show_progress_every_n_steps": -1})
    assert [s for s in range(1, 9) if at_end.due(s, 8)] == [8]
    off = preview_plan({**GENERATION_OPTIONS, "live_previews_enable": False})
    assert not off.enabled and not off.due(10, 10)
    with pytest.raises(InvalidField) as err:
        preview_plan({**GENERATION_OPTIONS, "show_progress_type": "RGB"}, {"show_progress_type": "RGB"})
    assert err.value.field == "override_settings.show_progress_type" and "Approx cheap" in err.value.allowed
    with pytest.raises(InvalidField, match="show_progress_every_n_steps"):
        preview_plan({**GENERATION_OPTIONS, "show_progress_every_n_steps": -2})


def test_partial_images_are_spread_over_the_steps_before_the_last() -> None:
    assert partial_images_plan(2, 12).at == (4, 8)
    assert partial_images_plan(3, 20).at == (5, 10, 15)
    assert partial_images_plan(3, 2).at == (1,)  # fewer steps than partials: fewer partials
    assert partial_images_plan(2, 12).method == "Full" and not partial_images_plan(0, 12).enabled


def _previews(engine: Engine, body: dict[str, Any]) -> tuple[list[Image.Image], Any]:
    seen: list[str] = []
    last = [engine.progress.preview_id]

    def listener() -> None:
        if engine.progress.preview_id != last[0]:
            last[0] = engine.progress.preview_id
            seen.append(engine.progress.current_image or "")

    engine.progress.listener = listener
    try:
        out = engine.generate(parse_txt2img({"prompt": "a cat", "width": 64, "height": 64, **body}, 1 << 30))
    finally:
        engine.progress.listener = None
    return [Image.open(io.BytesIO(base64.b64decode(s))) for s in seen], out


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x = torch.tensor(list(a.convert("RGB").getdata()), dtype=torch.float64)
    y = torch.tensor(list(b.convert("RGB").getdata()), dtype=torch.float64)
    mse = float(((x - y) ** 2).mean())
    return 99.0 if mse == 0 else 10 * float(torch.log10(torch.tensor(255.0**2 / mse)))


def test_full_previews_end_on_the_image_returned(tiny_model: Any, tmp_path: Path) -> None:
    """Full: the VAE decode of each step's estimate; with Euler the last step's estimate is the result."""
    engine = Engine(tiny_model, volume=tmp_path)
    options = {"show_progress_every_n_steps": 3, "show_progress_type": "Full"}
    previews, out = _previews(engine, {"steps": 9, "seed": 3, "override_settings": options})
    assert len(previews) == 3 and all(p.size == (64, 64) for p in previews)
    assert _psnr(previews[-1], out.images[0]) > 40


def test_approx_cheap_is_a1111s_linear_map_at_latent_size(tiny_model: Any, tmp_path: Path) -> None:
    engine = Engine(tiny_model, volume=tmp_path)
    options = {"show_progress_every_n_steps": 2, "show_progress_type": "Approx cheap"}
    previews, _ = _previews(engine, {"steps": 4, "batch_size": 3, "override_settings": options})
    # Three 8x8 latents as A1111's grid: round(sqrt(3)) = 2 rows of 2 columns.
    assert [p.size for p in previews] == [(16, 16), (16, 16)]
    single, _ = _previews(engine, {"steps": 2, "override_settings": {**options, "show_progress_grid": False}})
    assert [p.size for p in single] == [(8, 8)]
    assert len(LATENT_RGB_FACTORS["sd3"]) == 16 and len(LATENT_RGB_FACTORS["sdxl"]) == 4


def test_weighted_methods_need_their_weights_on_the_volume(tiny_model: Any, tmp_path: Path) -> None:
    engine = Engine(tiny_model, volume=tmp_path)
    for method, build, size in (("Approx NN", vae_approx, (16, 16)), ("TAESD", taesd_decoder, (64, 64))):
        body = {
            "steps": 2,
            "override_settings": {"show_progress_every_n_steps": 1, "show_progress_type": method},
        }
        with pytest.raises(InvalidField) as err:
            engine.check(parse_txt2img({"prompt": "x", "width": 64, "height": 64, **body}, 1 << 30))
        path = weights_path(tmp_path, method, "sd1")
        assert err.value.field == "override_settings.show_progress_type"
        assert str(path.relative_to(tmp_path)) in str(err.value)
        # Weights of the published layout (random values here): the network draws the previews.
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(build(4).state_dict(), path)
        previews, _ = _previews(engine, body)
        assert [p.size for p in previews] == [size, size]


def test_plan_default_draws_nothing() -> None:
    assert not PreviewPlan().enabled


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM", "DPM++ 2M SDE", "UniPC"])
def test_previews_do_not_change_the_image(tiny_model: Any, tmp_path: Path, sampler: str) -> None:
    """Drawing previews reads the step, it never changes it: the pipelines pass `eta` and `generator` only
    to a step whose signature has them, so the wrapper must keep it (bit-identical images either way)."""
    engine = Engine(tiny_model, volume=tmp_path)
    body = {
        "prompt": "a cat",
        "width": 64,
        "height": 64,
        "steps": 6,
        "seed": 11,
        "sampler_name": sampler,
        "eta": 0.7,
    }
    images = []
    for enable in (False, True):
        options = {"live_previews_enable": enable, "show_progress_every_n_steps": 0}
        out = engine.generate(parse_txt2img({**body, "override_settings": options}, 1 << 30))
        images.append(out.images[0].tobytes())
    assert images[0] == images[1]
