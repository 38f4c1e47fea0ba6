"""Knative's validation of `autoscaling.knative.dev/*` annotations, with its exact error text.

Follows knative/serving `pkg/apis/autoscaling/annotation_validation.go` (`ValidateAnnotations`, v1.23).
"""

from __future__ import annotations

from collections.abc import Mapping

from knsd.knative import annotations as a
from knsd.knative.config import (
    HPA_CLASS,
    KPA_CLASS,
    TARGET_MIN,
    WINDOW_MAX_NS,
    WINDOW_MIN_NS,
    AutoscalerConfig,
)
from knsd.knative.fielderror import FieldError, generic, invalid_value, out_of_bounds, render
from knsd.knative.goconv import (
    SECOND,
    DurationError,
    format_duration,
    go_float,
    parse_duration,
    parse_float,
    parse_int,
)

INT32_MAX = 2**31 - 1
PANIC_WINDOW_PERCENTAGE = (1.0, 100.0)
PANIC_THRESHOLD_PERCENTAGE = (110.0, 1000.0)
ALGORITHMS = ("linear", "weighted-exponential", "weightedExponential")

__all__ = ["AutoscalerConfig", "annotation_errors", "validate_annotations"]


def validate_annotations(
    annotations: Mapping[str, str] | None, config: AutoscalerConfig | None = None
) -> str:
    """Knative's `ValidateAnnotations(...).Error()`: "" when valid, else its errors one per line."""
    return render(annotation_errors(annotations, config))


def annotation_errors(
    annotations: Mapping[str, str] | None, config: AutoscalerConfig | None = None
) -> list[FieldError]:
    """The individual errors, paths relative to the annotations map."""
    m = dict(annotations or {})
    c = config or AutoscalerConfig()
    return [
        *_class(m),
        *_min_max_scale(c, m),
        *_floats(m),
        *_window(m),
        *_last_pod_retention(m),
        *_scale_down_delay(m),
        *_metric(c, m),
        *_algorithm(m),
        *_initial_scale(c, m),
    ]


def _class(m: dict[str, str]) -> list[FieldError]:
    found = a.lookup(m, a.CLASS)
    if found and found[1].endswith(".knative.dev") and found[1] not in (KPA_CLASS, HPA_CLASS):
        return [invalid_value(found[1], found[0])]
    return []


def _int_ge0(m: dict[str, str], key: str) -> tuple[int, list[FieldError]]:
    found = a.lookup(m, key)
    if found is None:
        return 0, []
    k, v = found
    try:
        value = parse_int(v, 32)
    except OverflowError:
        return 0, [out_of_bounds(v, 0, INT32_MAX, k)]
    except ValueError:
        return 0, [invalid_value(v, k)]
    if value < 0:
        return 0, [out_of_bounds(v, 0, INT32_MAX, k)]
    return value, []


def _min_max_scale(c: AutoscalerConfig, m: dict[str, str]) -> list[FieldError]:
    low, errors = _int_ge0(m, a.MIN_SCALE)
    high, more = _int_ge0(m, a.MAX_SCALE)
    errors += more
    if high != 0 and high < low:
        errors.append(generic(f"max-scale={high} is less than min-scale={low}", a.MAX_SCALE, a.MIN_SCALE))
    found = a.lookup(m, a.MAX_SCALE)
    if found is not None and c.max_scale_limit != 0:
        if high > c.max_scale_limit:
            errors.append(out_of_bounds(high, 1, c.max_scale_limit, found[0]))
        if high == 0:
            errors.append(
                generic(f"max-scale=0 (unlimited), must be less than {c.max_scale_limit}", found[0])
            )
    act = a.lookup(m, a.ACTIVATION_SCALE)
    if act is not None:
        k, v = act
        try:
            activation = parse_int(v, 32)
        except (ValueError, OverflowError):
            errors.append(invalid_value(v, k))
        else:
            if low > activation:
                errors.append(generic(f"min-scale={low} is greater than activation-scale={activation}", k))
            elif high != 0 and high < activation:
                errors.append(generic(f"max-scale={high} is less than activation-scale={activation}", k))
            elif activation < 2:
                errors.append(generic(f"activation-scale={activation} must be greater than 1", k))
    return errors


def _float_in(m: dict[str, str], key: str, lo: float, hi: float) -> list[FieldError]:
    found = a.lookup(m, key)
    if found is None:
        return []
    k, v = found
    try:
        value = parse_float(v)
    except ValueError:
        return [invalid_value(v, k)]
    if value < lo or value > hi:
        return [out_of_bounds(v, go_float(lo), go_float(hi), k)]
    return []


def _floats(m: dict[str, str]) -> list[FieldError]:
    errors = _float_in(m, a.PANIC_WINDOW_PERCENTAGE, *PANIC_WINDOW_PERCENTAGE)
    errors += _float_in(m, a.PANIC_THRESHOLD_PERCENTAGE, *PANIC_THRESHOLD_PERCENTAGE)
    found = a.lookup(m, a.TARGET)
    if found is not None:
        k, v = found
        try:
            if parse_float(v) < TARGET_MIN:
                errors.append(generic(f"target {v} should be at least {go_float(TARGET_MIN)}", k))
        except ValueError:
            errors.append(invalid_value(v, k))
    errors += _float_in(m, a.TARGET_UTILIZATION, 1.0, 100.0)
    found = a.lookup(m, a.TARGET_BURST_CAPACITY)
    if found is not None:
        k, v = found
        try:
            value = parse_float(v)
            if value < 0 and value != -1:
                errors.append(invalid_value(v, k))
        except ValueError:
            errors.append(invalid_value(v, k))
    return errors


def _duration(m: dict[str, str], key: str) -> tuple[str, str, int] | FieldError | None:
    found = a.lookup(m, key)
    if found is None:
        return None
    k, v = found
    try:
        return k, v, parse_duration(v)
    except DurationError:
        return invalid_value(v, k)


def _window(m: dict[str, str]) -> list[FieldError]:
    parsed = _duration(m, a.WINDOW)
    if parsed is None:
        return []
    if isinstance(parsed, FieldError):
        return [FieldError(parsed.message, (a.WINDOW,))]
    _, v, ns = parsed
    if ns < WINDOW_MIN_NS or ns > WINDOW_MAX_NS:
        return [out_of_bounds(v, format_duration(WINDOW_MIN_NS), format_duration(WINDOW_MAX_NS), a.WINDOW)]
    if ns % SECOND:
        return [generic("must be specified with at most second precision", a.WINDOW)]
    return []


def _duration_within_window(m: dict[str, str], key: str, whole_seconds: bool) -> list[FieldError]:
    """0 <= d <= 1h (Knative caps these at the longest window); optionally whole seconds."""
    parsed = _duration(m, key)
    if parsed is None:
        return []
    if isinstance(parsed, FieldError):
        return [parsed]
    k, v, ns = parsed
    if ns < 0 or ns > WINDOW_MAX_NS:
        return [out_of_bounds(v, format_duration(0), format_duration(WINDOW_MAX_NS), k)]
    # Go's Duration.Round(time.Second) != d
    if whole_seconds and ns % SECOND:
        return [generic("must be specified with at most second precision", k)]
    return []


def _last_pod_retention(m: dict[str, str]) -> list[FieldError]:
    return _duration_within_window(m, a.SCALE_TO_ZERO_POD_RETENTION, whole_seconds=False)


def _scale_down_delay(m: dict[str, str]) -> list[FieldError]:
    return _duration_within_window(m, a.SCALE_DOWN_DELAY, whole_seconds=True)


def _metric(c: AutoscalerConfig, m: dict[str, str]) -> list[FieldError]:
    found = a.lookup(m, a.METRIC)
    if found is None:
        return []
    metric = found[1]
    cls = (a.lookup(m, a.CLASS) or (a.CLASS, c.pod_autoscaler_class))[1]
    if cls == KPA_CLASS and metric in ("concurrency", "rps"):
        return []
    if cls == HPA_CLASS and metric != "":
        return []
    if cls not in (KPA_CLASS, HPA_CLASS):
        return []  # other classes of PodAutoscaler are left alone
    return [invalid_value(metric, a.METRIC)]


def _algorithm(m: dict[str, str]) -> list[FieldError]:
    cls = a.lookup(m, a.CLASS)
    if cls is None or cls[1] != KPA_CLASS:
        return []  # validated only when the class is explicitly KPA
    found = a.lookup(m, a.METRIC_AGGREGATION)
    if found is not None and found[1] != "" and found[1] not in ALGORITHMS:
        return [invalid_value(found[1], found[0])]
    return []


def _initial_scale(c: AutoscalerConfig, m: dict[str, str]) -> list[FieldError]:
    found = a.lookup(m, a.INITIAL_SCALE)
    if found is None:
        return []
    k, v = found
    try:
        value = parse_int(v, 64)  # strconv.Atoi: not limited to int32
    except (ValueError, OverflowError):
        return [invalid_value(v, k)]
    if value < 0:
        return [invalid_value(v, f"{k} must be greater than 0")]
    if value == 0 and not c.allow_zero_initial_scale:
        return [invalid_value(v, f"{k}=0 not allowed by cluster")]
    return []
