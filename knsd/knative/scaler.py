"""The KPA reconciler's side of scaling: bounds after the decider, the scale-to-zero gate, Active state.

Follows knative/serving `pkg/reconciler/autoscaling/kpa/scaler.go` (`scale`, `handleScaleToZero`) and
`kpa.go` (`computeActiveCondition`). Pure: the caller supplies the clock-derived durations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from knsd.knative import annotations as a
from knsd.knative.config import AutoscalerConfig
from knsd.knative.target import initial_scale, scale_bounds, stable_window

ActiveCondition = Literal["activating", "active", "inactive"]
Reachability = Literal["Reachable", "Unreachable", "Unknown"]
SKSMode = Literal["Serve", "Proxy"]

ACTIVATION_TIMEOUT_BUFFER = 30.0  # kpa.go activationTimeoutBuffer
PROXY_REQUEUE = 3.0  # requeue while waiting for the activator to be in the path
DEFAULT_PROGRESS_DEADLINE = 600.0  # config-deployment progress-deadline


@dataclass(frozen=True, slots=True)
class PodAutoscalerState:
    """What the reconciler knows of the PodAutoscaler."""

    active: ActiveCondition
    in_state_for: float  # seconds since the Active condition last changed
    annotations: Mapping[str, str]
    reachability: Reachability = "Unknown"
    scale_target_initialized: bool = False

    @property
    def reachable(self) -> bool:
        return self.reachability != "Unreachable"


@dataclass(frozen=True, slots=True)
class ServerlessServiceState:
    mode: SKSMode
    proxy_for: float  # seconds the activator has been in the path (0 in Serve mode)


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """The scale to apply (when `apply`), when to look again, and whether to probe the activator."""

    scale: int
    apply: bool
    requeue_after: float | None = None
    start_probe: bool = False

    def patches(self, replicas: int) -> bool:
        """Whether this decision changes a deployment with `replicas` replicas."""
        return self.apply and self.scale != replicas


def progress_deadline(annotations: Mapping[str, str], default: float = DEFAULT_PROGRESS_DEADLINE) -> float:
    value = a.get_duration(annotations, a.PROGRESS_DEADLINE)
    return value if value is not None else default


def bounded_scale(desired: int, pa: PodAutoscalerState, config: AutoscalerConfig) -> int:
    """min/max/initial-scale bounds as the reconciler applies them after the decider."""
    low, high = scale_bounds(pa.annotations, config, pa.reachable)
    initial = initial_scale(pa.annotations, config)
    if initial > 1 and not pa.scale_target_initialized and pa.reachable:
        low = max(initial, low)
    if desired < low:
        return low
    if high != 0 and desired > high:
        return high
    return desired


def kpa_scale(
    desired: int,
    pa: PodAutoscalerState,
    sks: ServerlessServiceState,
    config: AutoscalerConfig,
    activator_probe: bool = True,
    deployment_progress_deadline: float = DEFAULT_PROGRESS_DEADLINE,
) -> ScaleDecision:
    """The reconciler's decision for the decider's `desired` (-1 = not yet known)."""
    if desired < 0 and pa.active != "activating":
        return ScaleDecision(desired, apply=False)  # metrics not yet collected
    desired = bounded_scale(desired, pa, config)
    if desired != 0:
        return ScaleDecision(desired, apply=True)
    return _scale_to_zero(pa, sks, config, activator_probe, deployment_progress_deadline)


def _scale_to_zero(
    pa: PodAutoscalerState,
    sks: ServerlessServiceState,
    config: AutoscalerConfig,
    activator_probe: bool,
    deployment_progress_deadline: float,
) -> ScaleDecision:
    if not config.enable_scale_to_zero:
        return ScaleDecision(1, apply=True)
    if pa.active == "activating":
        timeout = progress_deadline(pa.annotations, deployment_progress_deadline) + ACTIVATION_TIMEOUT_BUFFER
        if pa.in_state_for > timeout:
            return ScaleDecision(0, apply=True)  # activation failed: give up and go back to zero
        return ScaleDecision(-1, apply=False, requeue_after=timeout)
    if pa.active == "active":
        window = stable_window(pa.annotations, config)
        if pa.in_state_for >= window:
            # The PA goes Inactive now; the activator must be in the path before the last pod goes.
            return ScaleDecision(0, apply=False, requeue_after=PROXY_REQUEUE if sks.mode == "Proxy" else None)
        return ScaleDecision(1, apply=True, requeue_after=window - pa.in_state_for)
    tbc = a.get_float(pa.annotations, a.TARGET_BURST_CAPACITY)
    if tbc is None:
        tbc = config.target_burst_capacity
    if not (tbc == -1 or activator_probe):
        return ScaleDecision(0, apply=False, start_probe=True)
    retention = 0.0
    if pa.reachable:
        value = a.get_duration(pa.annotations, a.SCALE_TO_ZERO_POD_RETENTION)
        retention = value if value is not None else config.scale_to_zero_pod_retention_period
    grace = config.scale_to_zero_grace_period
    if pa.in_state_for >= max(grace, retention):
        return ScaleDecision(0, apply=True)
    if retention > 0 and pa.in_state_for < retention:
        return ScaleDecision(0, apply=False, requeue_after=retention - pa.in_state_for)
    remaining = grace - sks.proxy_for
    if remaining <= 0:
        return ScaleDecision(0, apply=True)  # the activator has been in the path long enough
    return ScaleDecision(0, apply=False, requeue_after=remaining)


def active_condition(
    want: int, ready: int, annotations: Mapping[str, str], config: AutoscalerConfig, initialized: bool
) -> ActiveCondition:
    """`computeActiveCondition`: Inactive at zero, Activating below the minimum ready, else Active."""
    low, _ = scale_bounds(annotations, config, reachable=True)
    min_ready = max(low, 1) if initialized else max(low, initial_scale(annotations, config))
    if want == 0 or min_ready == 0:
        return "inactive"
    if ready < min_ready:
        return "activating"
    return "active"
