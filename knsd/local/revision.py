"""One revision of the local runtime: Knative's autoscaling loop driving its pods.

Every second the activator's concurrency (in flight + buffered) is recorded into the stable and panic
windows; every 2 s (and at once on the first request at zero) the KPA decides, the reconciler's bounds
and scale-to-zero gate apply, and the pods are scaled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from knsd.autoscaler import Autoscaler, ScaleResult
from knsd.autoscaling import annotations as a
from knsd.autoscaling.config import AutoscalerConfig
from knsd.autoscaling.scaler import (
    ActiveCondition,
    PodAutoscalerState,
    ServerlessServiceState,
    active_condition,
    kpa_scale,
)
from knsd.autoscaling.target import decider_spec, initial_scale, panic_window, scale_bounds, stable_window
from knsd.autoscaling.windows import TimedBuckets, WeightedBuckets
from knsd.local.activator import Activator
from knsd.local.pods import Pod, PodSet
from knsd.spec import ServiceSpec

log = logging.getLogger("knsd.local")
TICK = 2.0  # Knative's decider tick
MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the status endpoint reports about the autoscaler."""

    desired_scale: int
    decider_desired: int
    excess_burst_capacity: int
    panic: bool
    panic_since: float | None
    stable_concurrency: float
    panic_concurrency: float
    active: ActiveCondition
    sks_mode: str


class Revision:
    """A revision's autoscaler state, pods and activator."""

    def __init__(
        self,
        name: str,
        spec: ServiceSpec,
        config: AutoscalerConfig,
        pods_factory: Callable[[Revision], PodSet],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.spec = spec
        self.config = config
        self.clock = clock
        self.annotations = spec.template_annotations()
        now = clock()
        self.decider = decider_spec(self.annotations, spec.concurrency_limit, config)
        algorithm = (a.lookup(self.annotations, a.METRIC_AGGREGATION) or ("", "linear"))[1]
        buckets = (
            WeightedBuckets if algorithm in ("weighted-exponential", "weightedExponential") else TimedBuckets
        )
        self.stable = buckets(stable_window(self.annotations, config))
        self.panic = buckets(panic_window(self.annotations, config))
        self.autoscaler = Autoscaler(self.decider, now, 0)
        self.activator = Activator(spec.concurrency_limit)
        self.pods = pods_factory(self)
        self.decider_desired = -1  # "metrics not yet collected"
        self.last = ScaleResult(valid=False)
        self.replicas = 0
        self.active: ActiveCondition = "activating"
        self.active_since = now
        self.initialized = False
        self.sks_mode = "Proxy"
        self.proxy_since = now
        self.serving = False  # the route sends traffic here
        self._poked = False
        self._tick_lock = asyncio.Lock()
        self._failures = 0
        self._last_stable = 0.0
        self._last_panic = 0.0

    @property
    def initial_target(self) -> int:
        """Ready pods needed before the revision is Ready: max(min-scale, initial-scale), within max-scale."""
        low, high = scale_bounds(self.annotations, self.config, reachable=True)
        target = max(low, initial_scale(self.annotations, self.config))
        return min(target, high) if high else target

    @property
    def ready(self) -> bool:
        return self.initialized

    async def start(self) -> None:
        """Create the pods for the initial scale, as the revision reconciler does."""
        self.replicas = self.initial_target
        await self.pods.scale_to(self.replicas)
        self._check_initialized()

    def _check_initialized(self) -> None:
        if not self.initialized and len(self.pods.ready()) >= self.initial_target:
            self.initialized = True
            log.info("revision %s is Ready (%d ready pods)", self.name, len(self.pods.ready()))

    # metrics

    def record(self, now: float) -> None:
        """The once-a-second stat: average concurrency of the last second, when there is anything to report."""
        concurrency, requests = self.activator.meter.report()
        if self._poked:
            concurrency = max(0.0, concurrency - 1.0)  # the poke already reported that first request
            self._poked = False
        if self.pods.ready() or concurrency > 0 or requests > 0:
            self.stable.record(now, concurrency)
            self.panic.record(now, concurrency)

    def poke_needed(self) -> bool:
        return self.replicas == 0 or self.decider_desired == 0

    async def poke(self) -> None:
        """Knative's fast path: the first request at zero is reported at once and the decider runs now."""
        now = self.clock()
        self.stable.record(now, 1.0)
        self.panic.record(now, 1.0)
        self._poked = True
        await self.tick()

    # decisions

    def _observed(self, now: float) -> tuple[float | None, float | None]:
        if self.stable.is_empty(now):
            return None, None
        self._last_stable = self.stable.window_average(now)
        self._last_panic = self.panic.window_average(now)
        return self._last_stable, self._last_panic

    async def tick(self) -> None:
        """One decider tick and the reconciler's response to it."""
        async with self._tick_lock:
            now = self.clock()
            ready = len(self.pods.ready())
            stable, panic = self._observed(now)
            result = self.autoscaler.scale(now, ready, stable, panic)
            if result.valid:
                self.decider_desired = result.desired_pod_count
                self.last = result
            # The PA's condition changes as a result of the decision; the reconciler then looks again.
            for _ in range(2):
                decision = kpa_scale(
                    self.decider_desired, self._pa_state(now), self._sks_state(now), self.config
                )
                if decision.apply and decision.scale >= 0 and decision.scale != self.replicas:
                    log.info("revision %s: scale %d -> %d", self.name, self.replicas, decision.scale)
                    self.replicas = decision.scale
                if decision.apply and decision.scale >= 0:
                    await self._reconcile()
                if not self._update_conditions(decision.scale, ready, now):
                    break

    def _pa_state(self, now: float) -> PodAutoscalerState:
        return PodAutoscalerState(
            active=self.active,
            in_state_for=now - self.active_since,
            annotations=self.annotations,
            reachability="Reachable" if self.serving else "Unknown",
            scale_target_initialized=self.initialized,
        )

    def _sks_state(self, now: float) -> ServerlessServiceState:
        proxy_for = now - self.proxy_since if self.sks_mode == "Proxy" else 0.0
        return ServerlessServiceState("Proxy" if self.sks_mode == "Proxy" else "Serve", proxy_for)

    def _update_conditions(self, want: int, ready: int, now: float) -> bool:
        """Active condition and SKS mode; True when the Active condition changed."""
        self._check_initialized()
        mode = "Serve" if want > 0 and self.last.excess_burst_capacity >= 0 else "Proxy"
        if mode != self.sks_mode:
            self.sks_mode = mode
            if mode == "Proxy":
                self.proxy_since = now
        condition = active_condition(want, ready, self.annotations, self.config, self.initialized)
        if condition != self.active:
            log.info("revision %s: %s -> %s", self.name, self.active, condition)
            self.active = condition
            self.active_since = now
            return True
        return False

    async def _reconcile(self) -> None:
        await self.pods.scale_to(self.replicas)

    async def replace_failed(self, pod: Pod) -> None:
        """A pod died: replace it after a crash-loop backoff (1 s, 2 s, 4 s, ... up to 30 s)."""
        self._failures += 1
        delay = min(MAX_BACKOFF, 2.0 ** (self._failures - 1)) if self._failures > 1 else 0.0
        if delay:
            log.warning("revision %s: pod %s failed; restarting in %.0fs", self.name, pod.name, delay)
            await asyncio.sleep(delay)
        await self._reconcile()

    def pod_ready(self, pod: Pod) -> None:
        self._failures = 0
        self.activator.add_pod(pod)
        self._check_initialized()

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
