"""One revision's autoscaling loop, as Knative runs it, pure with an injected clock.

Stats are recorded each second (`record`), the first request at zero is reported at once (`poke`), and
every 2 s the KPA decides and the reconciler's bounds and scale-to-zero gate apply (`tick`). The local
runtime and the simulator both drive this class; only what they do with the replica count differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from knsd.knative import annotations as a
from knsd.knative.autoscaler import Autoscaler, ScaleResult
from knsd.knative.config import AutoscalerConfig
from knsd.knative.scaler import (
    ActiveCondition,
    PodAutoscalerState,
    ServerlessServiceState,
    active_condition,
    kpa_scale,
)
from knsd.knative.target import decider_spec, initial_scale, panic_window, scale_bounds, stable_window
from knsd.knative.windows import TimedBuckets, WeightedBuckets

TICK = 2.0  # Knative's decider tick
SCRAPE = 1.0  # the metric pipeline's period


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The autoscaler's state, for status pages and reports."""

    desired_scale: int
    decider_desired: int
    excess_burst_capacity: int
    panic: bool
    panic_since: float | None
    stable_concurrency: float
    panic_concurrency: float
    active: ActiveCondition
    sks_mode: str


class ScalingController:
    """Decider, metric windows and reconciler state of one revision."""

    def __init__(
        self, annotations: Mapping[str, str], container_concurrency: int, config: AutoscalerConfig, now: float
    ) -> None:
        self.annotations = dict(annotations)
        self.config = config
        self.decider = decider_spec(self.annotations, container_concurrency, config)
        algorithm = (a.lookup(self.annotations, a.METRIC_AGGREGATION) or ("", "linear"))[1]
        buckets = (
            WeightedBuckets if algorithm in ("weighted-exponential", "weightedExponential") else TimedBuckets
        )
        self.stable = buckets(stable_window(self.annotations, config))
        self.panic = buckets(panic_window(self.annotations, config))
        self.autoscaler = Autoscaler(self.decider, now, 0)
        self.decider_desired = -1  # "metrics not yet collected"
        self.last = ScaleResult(valid=False)
        self.replicas = 0
        self.active: ActiveCondition = "activating"
        self.active_since = now
        self.initialized = False
        self.sks_mode = "Proxy"
        self.proxy_since = now
        self.reachable = True
        self._poked = False
        self._last_stable = 0.0
        self._last_panic = 0.0

    @property
    def initial_target(self) -> int:
        """Ready pods needed before the revision is Ready: max(min-scale, initial-scale), within max-scale."""
        low, high = scale_bounds(self.annotations, self.config, reachable=True)
        target = max(low, initial_scale(self.annotations, self.config))
        return min(target, high) if high else target

    def start(self) -> int:
        """The replica count the revision is created with."""
        self.replicas = self.initial_target
        return self.replicas

    def note_ready(self, ready: int) -> bool:
        """Mark the scale target initialized once it first reaches the initial scale; True when it just did."""
        if not self.initialized and ready >= self.initial_target:
            self.initialized = True
            return True
        return False

    def record(self, now: float, concurrency: float, requests: int, has_ready_pods: bool) -> None:
        """The once-a-second stat (scraped pods plus the activator), when there is anything to report."""
        if self._poked:
            concurrency = max(0.0, concurrency - 1.0)  # the poke already reported that first request
            self._poked = False
        if has_ready_pods or concurrency > 0 or requests > 0:
            self.stable.record(now, concurrency)
            self.panic.record(now, concurrency)

    def poke_needed(self) -> bool:
        """At zero, and not yet reported this period (the activator reports the first request once)."""
        return not self._poked and (self.replicas == 0 or self.decider_desired == 0)

    def poke(self, now: float) -> None:
        """Knative's fast path: the first request at zero is reported at once; the caller ticks next."""
        self.stable.record(now, 1.0)
        self.panic.record(now, 1.0)
        self._poked = True

    def tick(self, now: float, ready: int) -> int | None:
        """One decider tick and the reconciler's response: the replica count to apply, or None."""
        observed: tuple[float | None, float | None] = (None, None)
        if not self.stable.is_empty(now):
            self._last_stable = self.stable.window_average(now)
            self._last_panic = self.panic.window_average(now)
            observed = (self._last_stable, self._last_panic)
        result = self.autoscaler.scale(now, ready, *observed)
        if result.valid:
            self.decider_desired = result.desired_pod_count
            self.last = result
        applied: int | None = None
        # The PA's condition changes as a result of the decision; the reconciler then looks again.
        for _ in range(2):
            decision = kpa_scale(self.decider_desired, self._pa_state(now), self._sks_state(now), self.config)
            if decision.apply and decision.scale >= 0:
                self.replicas = applied = decision.scale
            if not self._update_conditions(decision.scale, ready, now):
                break
        return applied

    def _pa_state(self, now: float) -> PodAutoscalerState:
        return PodAutoscalerState(
            active=self.active,
            in_state_for=now - self.active_since,
            annotations=self.annotations,
            reachability="Reachable" if self.reachable else "Unreachable",
            scale_target_initialized=self.initialized,
        )

    def _sks_state(self, now: float) -> ServerlessServiceState:
        proxy_for = now - self.proxy_since if self.sks_mode == "Proxy" else 0.0
        return ServerlessServiceState("Proxy" if self.sks_mode == "Proxy" else "Serve", proxy_for)

    def _update_conditions(self, want: int, ready: int, now: float) -> bool:
        """Active condition and SKS mode; True when the Active condition changed."""
        self.note_ready(ready)
        mode = "Serve" if want > 0 and self.last.excess_burst_capacity >= 0 else "Proxy"
        if mode != self.sks_mode:
            self.sks_mode = mode
            if mode == "Proxy":
                self.proxy_since = now
        condition = active_condition(want, ready, self.annotations, self.config, self.initialized)
        if condition != self.active:
            self.active = condition
            self.active_since = now
            return True
        return False

    def snapshot(self) -> Snapshot:
        return Snapshot(
            desired_scale=self.replicas,
            decider_desired=self.decider_desired,
            excess_burst_capacity=self.last.excess_burst_capacity,
            panic=self.autoscaler.panicking,
            panic_since=self.autoscaler.panic_time,
            stable_concurrency=self._last_stable,
            panic_concurrency=self._last_panic,
            active=self.active,
            sks_mode=self.sks_mode,
        )
