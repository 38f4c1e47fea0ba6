"""Reading `autoscaling.knative.dev/*` annotations the way Knative's readers do (pa_lifecycle.go).

Validation lives in `knsd.knative.validation`; here a value that cannot be parsed is treated as absent, as
Knative's readers do. Legacy camelCase keys are honoured; the new key wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from knsd.knative.goconv import SECOND, DurationError, parse_duration, parse_float, parse_int

GROUP = "autoscaling.knative.dev"
CLASS = f"{GROUP}/class"
METRIC = f"{GROUP}/metric"
TARGET = f"{GROUP}/target"
TARGET_UTILIZATION = f"{GROUP}/target-utilization-percentage"
MIN_SCALE = f"{GROUP}/min-scale"
MAX_SCALE = f"{GROUP}/max-scale"
INITIAL_SCALE = f"{GROUP}/initial-scale"
ACTIVATION_SCALE = f"{GROUP}/activation-scale"
WINDOW = f"{GROUP}/window"
PANIC_WINDOW_PERCENTAGE = f"{GROUP}/panic-window-percentage"
PANIC_THRESHOLD_PERCENTAGE = f"{GROUP}/panic-threshold-percentage"
TARGET_BURST_CAPACITY = f"{GROUP}/target-burst-capacity"
SCALE_DOWN_DELAY = f"{GROUP}/scale-down-delay"
SCALE_TO_ZERO_POD_RETENTION = f"{GROUP}/scale-to-zero-pod-retention-period"
METRIC_AGGREGATION = f"{GROUP}/metric-aggregation-algorithm"
PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"

# New key -> legacy alias (kmap.KeyPriority: the first present wins).
ALIASES: dict[str, str] = {
    MIN_SCALE: f"{GROUP}/minScale",
    MAX_SCALE: f"{GROUP}/maxScale",
    INITIAL_SCALE: f"{GROUP}/initialScale",
    METRIC_AGGREGATION: f"{GROUP}/metricAggregationAlgorithm",
    PANIC_THRESHOLD_PERCENTAGE: f"{GROUP}/panicThresholdPercentage",
    PANIC_WINDOW_PERCENTAGE: f"{GROUP}/panicWindowPercentage",
    SCALE_DOWN_DELAY: f"{GROUP}/scaleDownDelay",
    SCALE_TO_ZERO_POD_RETENTION: f"{GROUP}/scaleToZeroPodRetentionPeriod",
    TARGET_BURST_CAPACITY: f"{GROUP}/targetBurstCapacity",
    TARGET_UTILIZATION: f"{GROUP}/targetUtilizationPercentage",
}


def lookup(annotations: Mapping[str, str], key: str) -> tuple[str, str] | None:
    """(the key actually found, its value), preferring the new key over its legacy alias."""
    if key in annotations:
        return key, annotations[key]
    alias = ALIASES.get(key)
    if alias is not None and alias in annotations:
        return alias, annotations[alias]
    return None


def get_float(annotations: Mapping[str, str], key: str) -> float | None:
    found = lookup(annotations, key)
    if found is None:
        return None
    try:
        return parse_float(found[1])
    except ValueError:
        return None


def get_int32(annotations: Mapping[str, str], key: str) -> int | None:
    found = lookup(annotations, key)
    if found is None:
        return None
    try:
        return parse_int(found[1], 32)
    except (ValueError, OverflowError):
        return None


def get_duration(annotations: Mapping[str, str], key: str) -> float | None:
    """A Go duration annotation in seconds, or None."""
    found = lookup(annotations, key)
    if found is None:
        return None
    try:
        return parse_duration(found[1]) / SECOND
    except DurationError:
        return None
