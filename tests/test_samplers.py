from __future__ import annotations

import pytest

from knsd.errors import InvalidField
from knsd.serve.api.samplers import resolve_sampler, sampler_names


def test_default_is_euler_like_a1111_api() -> None:
    choice = resolve_sampler(None, None)
    assert (choice.sampler, choice.schedule, choice.scheduler_class) == (
        "Euler",
        "Automatic",
        "EulerDiscreteScheduler",
    )


def test_legacy_karras_suffix_is_split() -> None:
    choice = resolve_sampler("DPM++ 2M Karras", None)
    assert choice.sampler == "DPM++ 2M"
    assert dict(choice.options)["use_karras_sigmas"] is True
    # Karras is DPM++ 2M's own default schedule, which A1111 reports as Automatic.
    assert choice.schedule == "Automatic"


def test_scheduler_field_and_aliases() -> None:
    choice = resolve_sampler("k_euler_a", "karras")
    assert choice.sampler == "Euler a" and choice.schedule == "Karras"
    assert dict(choice.options) == {"use_karras_sigmas": True}
    # DPM++ 2M SDE runs on k-diffusion sigmas with A1111's Exponential schedule for "Automatic"
    assert resolve_sampler("DPM++ 2M SDE", None).options == tuple(
        sorted({"timestep_spacing": "linspace", "use_exponential_sigmas": True}.items())
    )


@pytest.mark.parametrize("name", ["Euler", "Euler a", "DDIM", "DPM++ 2M", "LMS", "Heun", "PLMS", "UniPC"])
def test_required_samplers_exist(name: str) -> None:
    assert name in sampler_names()
    assert resolve_sampler(name, None).sampler == name


def test_unknown_sampler_lists_valid_names() -> None:
    with pytest.raises(InvalidField) as err:
        resolve_sampler("Magic", None)
    assert err.value.field == "sampler_name"
    assert "Euler a" in err.value.message and "UniPC" in err.value.message and "'Magic'" in err.value.message


def test_bad_schedule() -> None:
    with pytest.raises(InvalidField) as err:
        resolve_sampler("Euler", "Wobbly")
    assert err.value.field == "scheduler"
    with pytest.raises(InvalidField):
        resolve_sampler("DDIM", "Karras")  # DDIM has no sigma schedule
