"""Knative's KPA decision, faithful to knative/serving `pkg/autoscaler/scaling/autoscaler.go` (v1.23).

Pure: no I/O and an injected clock (`now`, float seconds). `observed_stable` and `observed_panic` are
revision-total concurrency (or RPS) averaged over the stable and panic windows; the metric windows
themselves are in `knsd.knative.windows`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from knsd.knative.windows import MaxWindow

__all__ = ["Autoscaler", "DeciderSpec", "ScaleResult"]


@dataclass(frozen=True, slots=True)
class DeciderSpec:
    """What the decider needs; times in seconds, `panic_threshold` a ratio (2.0 = 200 %)."""

    scaling_metric: str = "concurrency"
    target_value: float = 100.0
    total_value: float = 100.0
    target_burst_capacity: float = 211.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    stable_window: float = 60.0
    scale_down_delay: float = 0.0
    activation_scale: int = 0
    reachable: bool = True


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """One decision; an invalid one is ignored by the caller, which keeps the previous scale."""

    valid: bool
    desired_pod_count: int = 0
    excess_burst_capacity: int = 0


INVALID = ScaleResult(valid=False)


def _int32(x: float) -> int:
    return int(max(-(2**31), min(2**31 - 1, x)))


@dataclass
class Autoscaler:
    """The per-revision decider state: panic time, the panic ratchet and the scale-down-delay window."""

    spec: DeciderSpec
    panic_time: float | None = field(init=False, default=None)
    max_panic_pods: int = field(init=False, default=0)
    delay_window: MaxWindow | None = field(init=False, default=None)

    def __init__(self, spec: DeciderSpec, now: float, ready_count: int | None) -> None:
        self.spec = spec
        self.delay_window = MaxWindow(spec.scale_down_delay) if spec.scale_down_delay > 0 else None
        # An autoscaler that comes up with pods already running starts in panic, so that a restart
        # without history never scales them down.
        current = ready_count if ready_count is not None else 0
        self.max_panic_pods = current
        self.panic_time = now if current > 1 else None

    def update(self, spec: DeciderSpec) -> None:
        """Take a new spec; it applies from the next `scale` call. Panic state persists."""
        if spec.scale_down_delay != self.spec.scale_down_delay:
            self.delay_window = MaxWindow(spec.scale_down_delay) if spec.scale_down_delay > 0 else None
        self.spec = spec

    @property
    def panicking(self) -> bool:
        return self.panic_time is not None

    def scale(
        self, now: float, ready_count: int | None, observed_stable: float | None, observed_panic: float | None
    ) -> ScaleResult:
        """One KPA tick. `ready_count=None` is a pod-count error, `observed_stable=None` no metric data."""
        spec = self.spec
        if ready_count is None or observed_stable is None:
            return INVALID
        panic_observed = observed_panic if observed_panic is not None else observed_stable
        rp = float(max(1, ready_count))

        max_up = math.ceil(spec.max_scale_up_rate * rp)
        max_down = math.floor(rp / spec.max_scale_down_rate) if spec.reachable else 0

        dspc = math.ceil(observed_stable / spec.target_value)
        dppc = math.ceil(panic_observed / spec.target_value)
        dsp = int(min(max(dspc, max_down), max_up))
        dpp = int(min(max(dppc, max_down), max_up))

        # activation-scale applies after the rate clamp and may exceed max_up.
        if spec.activation_scale > 1:
            if dspc > 0 and spec.activation_scale > dsp:
                dsp = spec.activation_scale
            if dppc > 0 and spec.activation_scale > dpp:
                dpp = spec.activation_scale

        over_threshold = dppc / rp >= spec.panic_threshold
        if over_threshold:
            self.panic_time = now  # enter, or extend, panic
        elif self.panic_time is not None and self.panic_time + spec.stable_window < now:
            self.panic_time = None
            self.max_panic_pods = 0

        desired = dsp
        if self.panic_time is not None:
            desired = max(desired, dpp)
            if desired > self.max_panic_pods:
                self.max_panic_pods = desired
            desired = self.max_panic_pods  # never scale down while panicking

        if spec.reachable and self.delay_window is not None:
            self.delay_window.record(now, desired)
            desired = self.delay_window.current()

        if spec.target_burst_capacity == 0:
            ebc = 0.0
        elif spec.target_burst_capacity > 0:
            ebc = math.floor(ready_count * spec.total_value - spec.target_burst_capacity - panic_observed)
        else:
            ebc = -1.0
        return ScaleResult(valid=True, desired_pod_count=_int32(desired), excess_burst_capacity=_int32(ebc))
