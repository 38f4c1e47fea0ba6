"""From annotations, containerConcurrency and `config-autoscaler` to the DeciderSpec and windows.

Follows knative/serving `pkg/reconciler/autoscaling/resources/target.go` (`ResolveMetricTarget`),
`metric.go` (`MakeMetric`) and `kpa/resources/decider.go` (`MakeDecider`, `GetInitialScale`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from knsd.knative import annotations as a
from knsd.knative.autoscaler import DeciderSpec
from knsd.knative.config import RPS_TARGET_UTILIZATION, TARGET_MIN, AutoscalerConfig


@dataclass(frozen=True, slots=True)
class MetricTarget:
    target: float  # per-pod target, utilization applied
    total: float  # per-pod capacity


def resolve_metric_target(
    annotations: Mapping[str, str],
    container_concurrency: int,
    config: AutoscalerConfig,
    rps_target_utilization: float = RPS_TARGET_UTILIZATION,
) -> MetricTarget:
    """Knative's `ResolveMetricTarget`: target = max(0.01, total x utilization)."""
    metric = (a.lookup(annotations, a.METRIC) or (a.METRIC, "concurrency"))[1] or "concurrency"
    if metric == "rps":
        total = config.requests_per_second_target_default
        utilization = rps_target_utilization
    else:
        total = float(container_concurrency or config.container_concurrency_target_default)
        utilization = config.container_concurrency_target_fraction
    target = a.get_float(annotations, a.TARGET)
    if target is not None:
        total = target
        if metric == "concurrency" and container_concurrency != 0:
            total = min(target, float(container_concurrency))  # never aim above the hard limit
    tu = a.get_float(annotations, a.TARGET_UTILIZATION)
    if tu is not None:
        utilization = tu / 100
    return MetricTarget(target=max(TARGET_MIN, total * utilization), total=total)


def stable_window(annotations: Mapping[str, str], config: AutoscalerConfig) -> float:
    window = a.get_duration(annotations, a.WINDOW)
    return window if window is not None else config.stable_window


def panic_window(annotations: Mapping[str, str], config: AutoscalerConfig) -> float:
    """stable window x panic-window-percentage, rounded to whole seconds, at least 1 s."""
    percentage = a.get_float(annotations, a.PANIC_WINDOW_PERCENTAGE)
    if percentage is None:
        percentage = config.panic_window_percentage
    # Go's time.Duration.Round rounds halves away from zero.
    seconds = stable_window(annotations, config) * percentage / 100
    rounded = float(int(seconds + 0.5)) if seconds >= 0 else -float(int(-seconds + 0.5))
    return max(1.0, rounded)


def initial_scale(annotations: Mapping[str, str], config: AutoscalerConfig) -> int:
    """`GetInitialScale`: the annotation unless it is 0 and the cluster does not allow zero."""
    value = a.get_int32(annotations, a.INITIAL_SCALE)
    if value is None or (value == 0 and not config.allow_zero_initial_scale):
        return config.initial_scale
    return value


def decider_spec(
    annotations: Mapping[str, str],
    container_concurrency: int,
    config: AutoscalerConfig,
    reachable: bool = True,
) -> DeciderSpec:
    """Knative's `MakeDecider`."""
    target = resolve_metric_target(annotations, container_concurrency, config)
    threshold = a.get_float(annotations, a.PANIC_THRESHOLD_PERCENTAGE)
    tbc = a.get_float(annotations, a.TARGET_BURST_CAPACITY)
    delay = a.get_duration(annotations, a.SCALE_DOWN_DELAY)
    activation = a.get_int32(annotations, a.ACTIVATION_SCALE)
    metric = (a.lookup(annotations, a.METRIC) or (a.METRIC, "concurrency"))[1] or "concurrency"
    return DeciderSpec(
        scaling_metric=metric,
        target_value=target.target,
        total_value=target.total,
        target_burst_capacity=tbc if tbc is not None else config.target_burst_capacity,
        panic_threshold=(threshold if threshold is not None else config.panic_threshold_percentage) / 100,
        max_scale_up_rate=config.max_scale_up_rate,
        max_scale_down_rate=config.max_scale_down_rate,
        stable_window=stable_window(annotations, config),
        scale_down_delay=delay if delay is not None else config.scale_down_delay,
        activation_scale=activation or 0,
        reachable=reachable,
    )


def scale_bounds(
    annotations: Mapping[str, str], config: AutoscalerConfig, reachable: bool
) -> tuple[int, int]:
    """(min, max) scale: annotations over the cluster defaults; min is 0 for unreachable revisions."""
    lo = a.get_int32(annotations, a.MIN_SCALE)
    hi = a.get_int32(annotations, a.MAX_SCALE)
    low = (lo if lo is not None else config.min_scale) if reachable else 0
    return low, hi if hi is not None else config.max_scale
