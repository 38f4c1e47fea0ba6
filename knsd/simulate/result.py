"""What one simulated run produced, and the inputs that shape a run beside its workload."""

from __future__ import annotations

from dataclasses import dataclass, field

from knsd.service.spec import ServiceSpec
from knsd.simulate.entities import SimPod


@dataclass
class SimResult:
    """Everything one simulated run produced."""

    latencies: list[float]  # successful requests, seconds from arrival to response
    cold: int
    statuses: dict[int, int]
    pods: list[SimPod]
    samples: list[tuple[float, int, int, int, int]]  # (t, ready, pending, desired, buffered), one per second
    end: float
    gpu_hours: float
    zero_at: list[float] = field(default_factory=list)  # moments the last pod went away
    events: list[tuple[float, str]] = field(default_factory=list)  # a rollout's steps
    by_revision: dict[str, int] = field(default_factory=dict)  # successful requests per revision
    gateway: int | None = None  # the gateway's in-flight bound, when a gateway queues in front of the route
    queue: list[tuple[float, int]] = field(
        default_factory=list
    )  # (t, jobs waiting at the gateway), per second

    @property
    def max_queue(self) -> int:
        return max((waiting for _, waiting in self.queue), default=0)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def max_pods(self) -> int:
        return max((ready for _, ready, _, _, _ in self.samples), default=0)


def gpus_per_pod(spec: ServiceSpec) -> float:
    if spec.effective_gpu:
        return float(spec.effective_gpu)
    if spec.qgpu_core is not None or spec.profile == "tke":
        return (spec.qgpu_core if spec.qgpu_core is not None else 50) / 100
    return 1.0


@dataclass(frozen=True, slots=True)
class Rollout:
    """At `at` seconds a new revision is created; once Ready it gets `percent` of the traffic."""

    at: float
    percent: int = 100
