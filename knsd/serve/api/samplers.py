"""A1111 sampler and schedule-type names mapped to diffusers schedulers (pure, no torch).

The table follows diffusers' own A1111 mapping (docs/source/en/api/schedulers/overview.md), in A1111's order.
DDIM, PLMS and UniPC are not in that table: their mapping here is knsd's reading of the algorithms. The
stochastic samplers (ancestral, SDE, DDIM with eta, Euler with churn) run on knsd's subclasses of these
schedulers (knsd.serve.generate.samplers), which follow k-diffusion as A1111 calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from knsd.errors import InvalidField


@dataclass(frozen=True, slots=True)
class Sampler:
    """One A1111 sampler: the diffusers scheduler class and its options."""

    name: str
    scheduler_class: str
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    # The schedule type A1111 uses for "Automatic" with this sampler.
    default_schedule: str = "Automatic"
    # What A1111's /sdapi/v1/samplers lists as the sampler's options.
    a1111_options: dict[str, str] = field(default_factory=dict)


SAMPLERS: tuple[Sampler, ...] = (
    Sampler(
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        aliases=("k_dpmpp_2m",),
        default_schedule="Karras",
        a1111_options={"scheduler": "karras"},
    ),
    Sampler(
        "DPM++ SDE",
        "DPMSolverSDEScheduler",
        aliases=("k_dpmpp_sde",),
        default_schedule="Karras",
        a1111_options={"scheduler": "karras", "second_order": "True", "brownian_noise": "True"},
    ),
    # knsd runs the multistep SDE samplers on k-diffusion sigmas (knsd.serve.generate.samplers.sde).
    Sampler(
        "DPM++ 2M SDE",
        "EulerDiscreteScheduler",
        aliases=("k_dpmpp_2m_sde",),
        default_schedule="Exponential",
        a1111_options={"scheduler": "exponential", "brownian_noise": "True"},
    ),
    Sampler(
        "DPM++ 2M SDE Heun",
        "EulerDiscreteScheduler",
        aliases=("k_dpmpp_2m_sde_heun",),
        default_schedule="Exponential",
        a1111_options={"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"},
    ),
    Sampler(
        "DPM++ 3M SDE",
        "EulerDiscreteScheduler",
        aliases=("k_dpmpp_3m_sde",),
        default_schedule="Exponential",
        a1111_options={
            "scheduler": "exponential",
            "discard_next_to_last_sigma": "True",
            "brownian_noise": "True",
        },
    ),
    Sampler(
        "Euler a",
        "EulerAncestralDiscreteScheduler",
        aliases=("k_euler_a", "k_euler_ancestral"),
        a1111_options={"uses_ensd": "True"},
    ),
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
    Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun",), a1111_options={"second_order": "True"}),
    Sampler(
        "DPM2",
        "KDPM2DiscreteScheduler",
        aliases=("k_dpm_2",),
        default_schedule="Karras",
        a1111_options={"scheduler": "karras", "second_order": "True"},
    ),
    Sampler(
        "DPM2 a",
        "KDPM2AncestralDiscreteScheduler",
        aliases=("k_dpm_2_a",),
        default_schedule="Karras",
        a1111_options={"scheduler": "karras", "uses_ensd": "True", "second_order": "True"},
    ),
    Sampler("DDIM", "DDIMScheduler", aliases=("ddim",)),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("plms", "PNDM")),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("unipc",)),
    Sampler("DEIS", "DEISMultistepScheduler", aliases=("deis",)),
)

# Schedule types: label -> extra scheduler options (diffusers' "Schedule types" table).
SCHEDULES: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"timestep_spacing": "linspace", "use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    "Simple": {"timestep_spacing": "trailing"},
    "Beta": {"timestep_spacing": "linspace", "use_beta_sigmas": True},
}
_SCHEDULE_ALIASES = {
    "automatic": "Automatic",
    "uniform": "Uniform",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "sgmuniform": "SGM Uniform",
    "simple": "Simple",
    "beta": "Beta",
}
# Only the k-diffusion style (sigma-based) schedulers take these sigma options.
_SIGMA_SCHEDULERS = {
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "LMSDiscreteScheduler",
    "HeunDiscreteScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
}

DEFAULT_SAMPLER = "Euler"


@dataclass(frozen=True, slots=True)
class SamplerChoice:
    """A resolved request: sampler, schedule type and the scheduler class with all its options."""

    sampler: str
    schedule: str
    scheduler_class: str
    options: tuple[tuple[str, Any], ...]


def _by_name() -> dict[str, Sampler]:
    table: dict[str, Sampler] = {}
    for s in SAMPLERS:
        for key in (s.name, *s.aliases):
            table[key.lower()] = s
    return table


_BY_NAME = _by_name()


def sampler_names() -> list[str]:
    """The canonical sampler names, in A1111's order."""
    return [s.name for s in SAMPLERS]


def _schedule_label(name: str) -> str | None:
    if name in SCHEDULES:
        return name
    return _SCHEDULE_ALIASES.get(name.lower().replace(" ", "_"))


def resolve_sampler(sampler_name: str | None, scheduler: str | None) -> SamplerChoice:
    """Resolve A1111's sampler and schedule type, including legacy names such as "DPM++ 2M Karras"."""
    name = (sampler_name or DEFAULT_SAMPLER).strip()
    sampler = _BY_NAME.get(name.lower())
    suffix_schedule: str | None = None
    if sampler is None:
        # A1111 strips a trailing schedule label: "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras").
        for label in sorted(SCHEDULES, key=len, reverse=True):
            if name.lower().endswith(" " + label.lower()):
                sampler = _BY_NAME.get(name[: -len(label) - 1].strip().lower())
                if sampler is not None:
                    suffix_schedule = label
                    break
    if sampler is None:
        raise InvalidField("sampler_name", "one of " + ", ".join(sampler_names()), sampler_name)
    schedule = suffix_schedule
    if scheduler:
        schedule = _schedule_label(scheduler)
        if schedule is None:
            raise InvalidField("scheduler", "one of " + ", ".join(SCHEDULES), scheduler)
    if schedule in (None, "Automatic"):
        schedule = sampler.default_schedule
    options = dict(sampler.options)
    if sampler.scheduler_class in _SIGMA_SCHEDULERS:
        options.update(SCHEDULES[schedule])
    elif schedule not in ("Automatic", "Uniform"):
        raise InvalidField(
            "scheduler", f"Automatic or Uniform for sampler {sampler.name}", scheduler or suffix_schedule
        )
    if schedule == sampler.default_schedule:
        schedule = "Automatic"
    return SamplerChoice(sampler.name, schedule, sampler.scheduler_class, tuple(sorted(options.items())))


# SD 3.x is a rectified-flow model: only flow-matching samplers apply. A1111 name -> scheduler, options,
# whether it can start mid-schedule (img2img needs `scale_noise`), and the schedule types it takes.
_FLOW_SAMPLERS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "Euler": ("FlowMatchEulerDiscreteScheduler", {}, True),
    "Heun": ("FlowMatchHeunDiscreteScheduler", {}, True),
    "DPM++ 2M": (
        "DPMSolverMultistepScheduler",
        {"use_flow_sigmas": True, "prediction_type": "flow_prediction"},
        False,
    ),
    "UniPC": (
        "UniPCMultistepScheduler",
        {"use_flow_sigmas": True, "prediction_type": "flow_prediction"},
        False,
    ),
}
_FLOW_SCHEDULES = {
    "FlowMatchEulerDiscreteScheduler": ("Automatic", "Uniform", "Karras", "Exponential", "Beta"),
    "FlowMatchHeunDiscreteScheduler": ("Automatic", "Uniform"),
    "DPMSolverMultistepScheduler": ("Automatic", "Uniform"),
    "UniPCMultistepScheduler": ("Automatic", "Uniform"),
}


def family_sampler_names(family: str, img2img: bool = False) -> list[str]:
    """The A1111 sampler names that apply to a family (all of them outside SD 3.x)."""
    if family != "sd3":
        return sampler_names()
    return [name for name, (_, _, mid) in _FLOW_SAMPLERS.items() if mid or not img2img]


def scheduler_for(
    family: str, choice: SamplerChoice, base: dict[str, Any], img2img: bool = False
) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """The scheduler class and options for a resolved sampler on a family; 422 when it does not apply."""
    if family != "sd3":
        return choice.scheduler_class, choice.options
    entry = _FLOW_SAMPLERS.get(choice.sampler)
    if entry is None or (img2img and not entry[2]):
        valid = ", ".join(family_sampler_names(family, img2img))
        job = "img2img on " if img2img else ""
        raise InvalidField(
            "sampler_name", f"one of {valid} ({job}SD 3.x is a flow-matching model)", choice.sampler
        )
    cls, options, _ = entry
    options = dict(options)
    schedule = choice.schedule
    if schedule not in _FLOW_SCHEDULES[cls]:
        allowed = ", ".join(_FLOW_SCHEDULES[cls])
        raise InvalidField("scheduler", f"one of {allowed} for sampler {choice.sampler} on SD 3.x", schedule)
    if schedule not in ("Automatic", "Uniform"):
        options.update({k: v for k, v in SCHEDULES[schedule].items() if k != "timestep_spacing"})
    if "flow_shift" not in options and "use_flow_sigmas" in options:
        options["flow_shift"] = base.get("shift", 3.0)  # keep the model's timestep shift (3.0 for SD 3.5)
    return cls, tuple(sorted(options.items()))
