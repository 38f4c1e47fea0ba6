"""eta, ENSD, churn and sigma noise on the real tiny pipeline, with A1111 v1.10.1's semantics and infotext."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from knsd.errors import InvalidField
from knsd.serve.api.infotext import ModelInfo, info, infotext
from knsd.serve.api.request import parse_img2img, parse_txt2img
from knsd.serve.generate.engine import Engine

BASE = {"prompt": "a red cat", "width": 64, "height": 64, "steps": 4, "seed": 21}
BUDGET = 1 << 30
ENSD = {"override_settings": {"eta_noise_seed_delta": 31337}}
MODEL = ModelInfo("tiny", "abc")


@pytest.fixture(scope="module")
def engine(tiny_model: Any) -> Engine:
    return Engine(tiny_model)


def _images(engine: Engine, **fields: Any) -> list[np.ndarray]:
    out = engine.generate(parse_txt2img({**BASE, **fields}, BUDGET))
    return [np.asarray(im, dtype=np.int16) for im in out.images]


def _one(engine: Engine, **fields: Any) -> np.ndarray:
    return _images(engine, **fields)[0]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM2 a"])
def test_eta_0_makes_ancestral_samplers_ignore_ensd_and_eta_1_does_not(engine: Engine, sampler: str) -> None:
    eta0 = _one(engine, sampler_name=sampler, eta=0)
    assert np.array_equal(eta0, _one(engine, sampler_name=sampler, eta=0, **ENSD))
    eta1 = _one(engine, sampler_name=sampler)  # null eta: the eta_ancestral option, 1.0
    assert not np.array_equal(eta1, _one(engine, sampler_name=sampler, **ENSD))
    assert not np.array_equal(eta0, eta1)


def test_euler_a_with_eta_0_is_euler(engine: Engine) -> None:
    """k-diffusion's get_ancestral_step returns (sigma_next, 0) for eta 0: Euler a becomes plain Euler."""
    diff = np.abs(_one(engine, sampler_name="Euler a", eta=0) - _one(engine, sampler_name="Euler"))
    assert diff.max() <= 1


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE"])
def test_each_image_of_a_batch_draws_its_own_noise(engine: Engine, sampler: str) -> None:
    """A1111 gives every image its own generator (Brownian tree for SDE samplers) seeded with its seed, so
    the second image of a batch is the image a lone request with seed + 1 makes."""
    batch = _images(engine, sampler_name=sampler, batch_size=2)
    alone = _one(engine, sampler_name=sampler, seed=BASE["seed"] + 1)
    assert np.abs(batch[1] - alone).max() <= 2
    assert np.abs(batch[0] - batch[1]).mean() > 5


def test_sde_noise_is_seeded_by_the_seeds_not_ensd(engine: Engine) -> None:
    a = _one(engine, sampler_name="DPM++ 2M SDE")
    assert np.array_equal(a, _one(engine, sampler_name="DPM++ 2M SDE", **ENSD))
    assert not np.array_equal(a, _one(engine, sampler_name="DPM++ 2M SDE", eta=0))


def test_ddim_eta_adds_noise_from_the_generators(engine: Engine) -> None:
    plain = _one(engine, sampler_name="DDIM")  # eta_ddim option: 0
    assert np.array_equal(plain, _one(engine, sampler_name="DDIM", eta=0))
    noisy = _one(engine, sampler_name="DDIM", eta=1)
    assert not np.array_equal(plain, noisy)
    assert not np.array_equal(noisy, _one(engine, sampler_name="DDIM", eta=1, **ENSD))


def test_euler_churn_only_inside_its_sigma_window(engine: Engine) -> None:
    plain = _one(engine, sampler_name="Euler")
    assert not np.array_equal(plain, _one(engine, sampler_name="Euler", s_churn=1.0))
    # every sigma of the schedule lies below s_tmin: gamma is 0 on every step
    assert np.array_equal(plain, _one(engine, sampler_name="Euler", s_churn=1.0, s_tmin=1000.0))
    # s_noise scales the churn noise
    assert not np.array_equal(
        _one(engine, sampler_name="Euler", s_churn=1.0),
        _one(engine, sampler_name="Euler", s_churn=1.0, s_noise=0.5),
    )


def test_img2img_later_noise_goes_on_from_the_start_noise_generators(engine: Engine) -> None:
    from PIL import Image

    image = Image.new("RGB", (64, 64), (200, 40, 40))
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, "PNG")
    body = {**BASE, "init_images": [base64.b64encode(buf.getvalue()).decode()], "sampler_name": "Euler a"}

    def run(**fields: Any) -> np.ndarray:
        [out] = engine.generate(parse_img2img({**body, **fields}, BUDGET)).images
        return np.asarray(out, dtype=np.int16)

    assert np.array_equal(run(eta=0), run(eta=0, **ENSD))
    assert not np.array_equal(run(), run(**ENSD))


def test_infotext_writes_what_a1111_writes() -> None:
    def text(**fields: Any) -> str:
        req = parse_txt2img({**BASE, **fields}, BUDGET)
        return infotext(req, req.seed, MODEL)

    assert "Eta: 0," in text(sampler_name="Euler a", eta=0)  # JSON 0 is written as given
    assert "Eta" not in text(sampler_name="Euler a")  # the default 1.0 is not written
    assert "Eta" not in text(sampler_name="Euler", eta=0.3)  # Euler does not read eta
    assert "Eta DDIM: 0.5" in text(sampler_name="DDIM", eta=0.5)
    assert "ENSD: 31337" in text(sampler_name="Euler a", **ENSD)
    assert "ENSD" not in text(sampler_name="Euler a", eta=0, **ENSD)  # eta 0 uses no ENSD noise
    assert "ENSD" not in text(sampler_name="DPM++ 2M SDE", **ENSD)  # Brownian noise: seeded by the seed
    line = text(sampler_name="Euler a", **ENSD).splitlines()[-1]
    assert line.index("ENSD") < line.index("RNG")
    # a request's s_churn is applied but not written; the option's is written (and wins)
    assert "Sigma churn" not in text(sampler_name="Euler", s_churn=0.5)
    opt = text(sampler_name="Euler", s_churn=0.5, override_settings={"s_churn": 0.25})
    assert "Sigma churn: 0.25" in opt
    req = parse_txt2img({**BASE, "sampler_name": "Euler", "override_settings": {"s_churn": 0.25}}, BUDGET)
    assert req.sampler_params.s_churn == 0.25
    assert info(req, MODEL)["extra_generation_params"]["Sigma churn"] == 0.25


def test_sampler_fields_are_validated_by_name() -> None:
    for body, field in [
        ({"eta": -0.5}, "eta"),
        ({"eta": "high"}, "eta"),
        ({"s_noise": True}, "s_noise"),
        ({"sampler_name": "Heun", "s_churn": 0.5}, "s_churn"),  # Heun reads churn; knsd cannot churn it
        ({"override_settings": {"eta_ancestral": "x"}}, "override_settings.eta_ancestral"),
    ]:
        with pytest.raises(InvalidField) as err:
            parse_txt2img({**BASE, **body}, BUDGET)
        assert err.value.field == field
    # churn on a sampler that does not read it is ignored, as in A1111
    assert (
        parse_txt2img({**BASE, "sampler_name": "LMS", "s_churn": 0.5}, BUDGET).sampler_params.s_churn == 0.0
    )


def test_a_second_engine_on_a_used_model_starts_from_the_checkpoints_scheduler(tiny_model: Any) -> None:
    """A pass replaces the pipeline's scheduler; an engine built on the model afterwards still builds its
    schedulers from the checkpoint's config (it took the last pass's exponential flag into a Karras
    schedule, which diffusers refuses)."""
    Engine(tiny_model).generate(
        parse_txt2img({**BASE, "sampler_name": "DPM++ 2M", "scheduler": "Exponential"}, BUDGET)
    )
    out = Engine(tiny_model).generate(parse_txt2img({**BASE, "sampler_name": "DPM++ 2M Karras"}, BUDGET))
    assert len(out.images) == 1
    assert not Engine(tiny_model).passes.base_config.get("use_exponential_sigmas")


@pytest.mark.parametrize("churn", [1.0, 12293804.0])
def test_churn_past_the_largest_sigma_runs_every_step_once(engine: Engine, churn: float) -> None:
    """sigma_hat above the largest trained sigma maps to the last timestep again; the steps still run in
    order (diffusers' search by timestep started a step late and indexed past the sigmas: a 500)."""
    req = parse_txt2img({**BASE, "sampler_name": "Euler", "s_churn": churn, "s_tmin": 5, "steps": 50}, BUDGET)
    steps: list[int] = []
    engine.progress.listener = lambda: steps.append(engine.progress.sampling_step)
    try:
        out = engine.generate(req)
    finally:
        engine.progress.listener = None
    assert len(out.images) == 1 and max(steps) == 50
