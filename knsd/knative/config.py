"""`config-autoscaler`: Knative's cluster-wide autoscaling settings, their defaults and validation.

Parsing and error messages follow knative/serving `pkg/autoscaler/config/config.go` (`NewConfigFromMap`,
`validate`); defaults are knative-v1.23.0's `config/core/configmaps/autoscaler.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from knsd.knative.goconv import (
    SECOND,
    DurationError,
    format_duration,
    go_float,
    parse_duration,
    parse_float,
    parse_int,
)

KPA_CLASS = "kpa.autoscaling.knative.dev"
HPA_CLASS = "hpa.autoscaling.knative.dev"
TARGET_MIN = 0.01
WINDOW_MIN_NS = 6 * SECOND
WINDOW_MAX_NS = 3600 * SECOND
PANIC_WINDOW_PERCENTAGE_MIN, PANIC_WINDOW_PERCENTAGE_MAX = 1.0, 100.0
# Knative's hard-coded RPS utilization (config.go defaultTargetUtilization); not settable via the ConfigMap.
RPS_TARGET_UTILIZATION = 0.7


class ConfigError(ValueError):
    """A `config-autoscaler` value Knative would reject; the message is Knative's."""


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """The `config-autoscaler` settings; durations in seconds, percentages as Knative stores them."""

    enable_scale_to_zero: bool = True
    container_concurrency_target_fraction: float = 0.7
    container_concurrency_target_default: float = 100.0
    requests_per_second_target_default: float = 200.0
    target_burst_capacity: float = 211.0
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_down_delay: float = 0.0
    pod_autoscaler_class: str = KPA_CLASS
    activator_capacity: float = 100.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0


# key -> (field, kind)
KEYS: dict[str, tuple[str, str]] = {
    "pod-autoscaler-class": ("pod_autoscaler_class", "string"),
    "enable-scale-to-zero": ("enable_scale_to_zero", "bool"),
    "allow-zero-initial-scale": ("allow_zero_initial_scale", "bool"),
    "max-scale-up-rate": ("max_scale_up_rate", "float"),
    "max-scale-down-rate": ("max_scale_down_rate", "float"),
    "container-concurrency-target-percentage": ("container_concurrency_target_fraction", "float"),
    "container-concurrency-target-default": ("container_concurrency_target_default", "float"),
    "requests-per-second-target-default": ("requests_per_second_target_default", "float"),
    "target-burst-capacity": ("target_burst_capacity", "float"),
    "panic-window-percentage": ("panic_window_percentage", "float"),
    "activator-capacity": ("activator_capacity", "float"),
    "panic-threshold-percentage": ("panic_threshold_percentage", "float"),
    "initial-scale": ("initial_scale", "int32"),
    "min-scale": ("min_scale", "int32"),
    "max-scale": ("max_scale", "int32"),
    "max-scale-limit": ("max_scale_limit", "int32"),
    "stable-window": ("stable_window", "duration"),
    "scale-down-delay": ("scale_down_delay", "duration"),
    "scale-to-zero-grace-period": ("scale_to_zero_grace_period", "duration"),
    "scale-to-zero-pod-retention-period": ("scale_to_zero_pod_retention_period", "duration"),
}


def _go_parse_bool(key: str, raw: str) -> bool:
    value = raw.strip()
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ConfigError(
        f'failed to parse data: failed to parse "{key}": strconv.ParseBool: parsing "{value}": invalid syntax'
    )


def _go_parse_float(key: str, raw: str) -> float:
    value = raw.strip()
    try:
        return parse_float(value)
    except ValueError as exc:
        raise ConfigError(
            f'failed to parse data: failed to parse "{key}": strconv.ParseFloat: parsing "{value}": {exc}'
        ) from None


def _go_parse_int32(key: str, raw: str) -> int:
    value = raw.strip()
    try:
        return parse_int(value, 32)
    except (ValueError, OverflowError) as exc:
        raise ConfigError(
            f'failed to parse data: failed to parse "{key}": strconv.ParseInt: parsing "{value}": {exc}'
        ) from None


def _go_parse_duration(key: str, raw: str) -> float:
    try:
        return parse_duration(raw.strip()) / SECOND
    except DurationError as exc:
        raise ConfigError(f'failed to parse data: failed to parse "{key}": {exc}') from None


def parse_config(data: Mapping[str, str], base: AutoscalerConfig | None = None) -> AutoscalerConfig:
    """Apply `config-autoscaler` keys over `base` (the defaults); unknown keys are an error here."""
    changes: dict[str, object] = {}
    for key, raw in data.items():
        if key not in KEYS:
            raise ConfigError(f"unknown config-autoscaler key {key!r}; known keys: {', '.join(sorted(KEYS))}")
        name, kind = KEYS[key]
        if kind == "string":
            changes[name] = raw.strip()
        elif kind == "bool":
            changes[name] = _go_parse_bool(key, raw)
        elif kind == "float":
            changes[name] = _go_parse_float(key, raw)
        elif kind == "int32":
            changes[name] = _go_parse_int32(key, raw)
        else:
            changes[name] = _go_parse_duration(key, raw)
    fraction = changes.get("container_concurrency_target_fraction")
    # Knative accepts percentages (70) and, for legacy reasons, fractions in (0, 1].
    if isinstance(fraction, float) and fraction > 1.0:
        changes["container_concurrency_target_fraction"] = fraction / 100.0
    return replace(base or AutoscalerConfig(), **changes)  # type: ignore[arg-type]


def _dur(seconds: float) -> str:
    return format_duration(round(seconds * SECOND))


def validate_config(c: AutoscalerConfig) -> AutoscalerConfig:
    """Knative's `validate()`: the first violated rule raises ConfigError with Knative's message."""
    if c.scale_to_zero_grace_period <= 0:
        raise ConfigError(
            f"scale-to-zero-grace-period must be positive, was: {_dur(c.scale_to_zero_grace_period)}"
        )
    if c.scale_down_delay < 0:
        raise ConfigError(f"scale-down-delay cannot be negative, was: {_dur(c.scale_down_delay)}")
    if round(c.scale_down_delay) != c.scale_down_delay:
        raise ConfigError(
            f"scale-down-delay = {_dur(c.scale_down_delay)}, must be specified with at most second precision"
        )
    if c.scale_to_zero_pod_retention_period < 0:
        raise ConfigError(
            f"scale-to-zero-pod-retention-period cannot be negative, was: {_dur(c.scale_to_zero_pod_retention_period)}"
        )
    if c.target_burst_capacity < 0 and c.target_burst_capacity != -1:
        raise ConfigError(
            "target-burst-capacity must be either non-negative or -1 (for unlimited), "
            f"was: {c.target_burst_capacity:f}"
        )
    fraction = c.container_concurrency_target_fraction
    if fraction <= 0 or fraction > 1:
        raise ConfigError(
            f"container-concurrency-target-percentage = {fraction:f} is outside of valid range of (0, 100]"
        )
    if (x := fraction * c.container_concurrency_target_default) < TARGET_MIN:
        raise ConfigError(
            "container-concurrency-target-percentage and container-concurrency-target-default yield target "
            f"concurrency of {go_float(x)}, can't be less than {go_float(TARGET_MIN)}"
        )
    if c.requests_per_second_target_default < TARGET_MIN:
        raise ConfigError(
            f"requests-per-second-target-default must be at least {go_float(TARGET_MIN)}, "
            f"was: {go_float(c.requests_per_second_target_default)}"
        )
    if c.activator_capacity < 1:
        raise ConfigError(f"activator-capacity = {go_float(c.activator_capacity)}, must be at least 1")
    if c.max_scale_up_rate <= 1.0:
        raise ConfigError(f"max-scale-up-rate = {go_float(c.max_scale_up_rate)}, must be greater than 1.0")
    if c.max_scale_down_rate <= 1.0:
        raise ConfigError(
            f"max-scale-down-rate = {go_float(c.max_scale_down_rate)}, must be greater than 1.0"
        )
    window_ns = round(c.stable_window * SECOND)
    if window_ns < WINDOW_MIN_NS or window_ns > WINDOW_MAX_NS:
        raise ConfigError(
            f"stable-window = {_dur(c.stable_window)}, must be in "
            f"[{format_duration(WINDOW_MIN_NS)}; {format_duration(WINDOW_MAX_NS)}] range"
        )
    if window_ns % SECOND:
        raise ConfigError(
            f"stable-window = {_dur(c.stable_window)}, must be specified with at most second precision"
        )
    pwp = c.panic_window_percentage
    if pwp < PANIC_WINDOW_PERCENTAGE_MIN or pwp > PANIC_WINDOW_PERCENTAGE_MAX:
        raise ConfigError(
            f"panic-window-percentage = {go_float(pwp)}, must be in "
            f"[{go_float(PANIC_WINDOW_PERCENTAGE_MIN)}, {go_float(PANIC_WINDOW_PERCENTAGE_MAX)}] interval"
        )
    if c.initial_scale < 0 or (c.initial_scale == 0 and not c.allow_zero_initial_scale):
        raise ConfigError(
            f"initial-scale = {c.initial_scale}, must be at least 0 (or at least 1 when allow-zero-initial-scale is false)"
        )
    min_max_scale = 1 if c.max_scale_limit > 0 else 0
    if c.max_scale < min_max_scale or (c.max_scale_limit > 0 and c.max_scale > c.max_scale_limit):
        raise ConfigError(
            f"max-scale = {c.max_scale}, must be in [{min_max_scale}, max-scale-limit({c.max_scale_limit})] range"
        )
    if c.max_scale_limit < 0:
        raise ConfigError(f"max-scale-limit = {c.max_scale_limit}, must be at least 0")
    # min-scale is a v1.2x addition to config-autoscaler; the wording mirrors max-scale's.
    if c.min_scale < 0 or (c.max_scale > 0 and c.min_scale > c.max_scale):
        raise ConfigError(f"min-scale = {c.min_scale}, must be in [0, max-scale({c.max_scale})] range")
    return c
