"""What to simulate: the spec as given, always-on references, and sweeps over one knob."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from knsd.errors import UsageError
from knsd.knative.config import KEYS, AutoscalerConfig, ConfigError, parse_config, validate_config
from knsd.knative.validation import validate_annotations
from knsd.service.gateway import max_inflight
from knsd.service.spec import ServiceSpec
from knsd.simulate.dist import Distribution
from knsd.simulate.result import Rollout, SimResult
from knsd.simulate.simulation import Simulation
from knsd.simulate.workload import Workload

# Sweepable spec knobs: flag name -> (ServiceSpec field, type)
SPEC_KNOBS: dict[str, tuple[str, type]] = {
    "scale-min": ("scale_min", int),
    "scale-max": ("scale_max", int),
    "scale-init": ("scale_init", int),
    "scale-target": ("scale_target", float),
    "scale-utilization": ("scale_utilization", float),
    "scale-window": ("scale_window", str),
    "scale-down-delay": ("scale_down_delay", str),
    "scale-to-zero-retention": ("scale_to_zero_retention", str),
    "concurrency-limit": ("concurrency_limit", int),
}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    spec: ServiceSpec
    config: AutoscalerConfig
    rollout: Rollout | None = None


def _check(spec: ServiceSpec, config: AutoscalerConfig, flag: str) -> None:
    errors = validate_annotations(spec.template_annotations(), config)
    if errors:
        raise UsageError(flag, "Knative would reject this revision:\n" + errors)


def references(spec: ServiceSpec, config: AutoscalerConfig, peak_pods: int) -> list[Scenario]:
    """Always-on references: min-scale = max-scale, and min-scale 1."""
    size = spec.scale_max or max(1, peak_pods)
    fixed = dataclasses.replace(spec, scale_min=size, scale_max=size, scale_init=None)
    one = dataclasses.replace(spec, scale_min=max(1, spec.scale_min), scale_init=None)
    return [Scenario(f"always on (min = max = {size})", fixed, config), Scenario("min-scale 1", one, config)]


def sweep(text: str, spec: ServiceSpec, config: AutoscalerConfig) -> list[Scenario]:
    """`KEY=v1,v2,...` over a spec knob (scale-window, scale-min, ...) or a config-autoscaler key."""
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("--")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not items:
        raise UsageError("--sweep", f"expected KEY=v1,v2,..., got {text!r}")
    out = []
    for value in items:
        name = f"{key}={value}"
        if key in SPEC_KNOBS:
            field, kind = SPEC_KNOBS[key]
            try:
                converted = kind(value)
            except ValueError:
                raise UsageError("--sweep", f"{key} takes a {kind.__name__}, got {value!r}") from None
            variant = dataclasses.replace(spec, **{field: converted})
            _check(variant, config, "--sweep")
            out.append(Scenario(name, variant, config))
        elif key in KEYS:
            try:
                variant_config = validate_config(parse_config({key: value}, base=config))
            except ConfigError as exc:
                raise UsageError("--sweep", str(exc)) from exc
            _check(spec, variant_config, "--sweep")
            out.append(Scenario(name, spec, variant_config))
        else:
            known = ", ".join(sorted(SPEC_KNOBS) + sorted(KEYS))
            raise UsageError("--sweep", f"unknown knob {key!r}; one of: {known}")
    return out


def run(
    scenario: Scenario, workload: Workload, service: Distribution, cold: Distribution, seed: int
) -> SimResult:
    gateway = max_inflight(scenario.spec) if scenario.spec.gateway else None
    return Simulation(
        scenario.spec,
        scenario.config,
        workload,
        service,
        cold,
        seed,
        rollout=scenario.rollout,
        gateway=gateway,
    ).run()


def parse_rollout(text: str, duration: float) -> Rollout:
    """`--rollout T[:PERCENT]`: at T (a duration or seconds) a new revision; PERCENT of the traffic once Ready."""
    from knsd.simulate.dist import seconds

    at_text, _, pct_text = text.partition(":")
    at = seconds(at_text, "--rollout")
    if not 0 <= at < duration:
        raise UsageError("--rollout", f"T must be within the workload (0 to {duration:g}s), got {at_text!r}")
    try:
        percent = int(pct_text.removesuffix("%")) if pct_text else 100
    except ValueError:
        raise UsageError("--rollout", f"expected T[:PERCENT] with PERCENT 1-100, got {text!r}") from None
    if not 1 <= percent <= 100:
        raise UsageError("--rollout", f"PERCENT must be 1-100, got {percent}")
    return Rollout(at, percent)


def with_rollout(scenario: Scenario, rollout: Rollout) -> Scenario:
    pct = "" if rollout.percent == 100 else f" ({rollout.percent}%)"
    return dataclasses.replace(
        scenario, name=f"{scenario.name}, rollout at {rollout.at:g}s{pct}", rollout=rollout
    )
