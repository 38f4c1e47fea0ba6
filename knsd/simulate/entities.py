"""What the simulation moves in simulated time: pods, requests and the revisions that route and scale them
(each with the local runtime's own autoscaler, router and concurrency meter)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from knsd.knative.config import AutoscalerConfig
from knsd.knative.controller import ScalingController
from knsd.knative.meter import ConcurrencyMeter
from knsd.knative.routing import Router
from knsd.service.spec import ServiceSpec

BUFFER_LIMIT = 10_000  # Knative's activator queue depth


@dataclass(eq=False, slots=True)
class SimPod:
    name: str
    created: float
    state: str = "pending"  # pending, ready, terminating, gone
    ready_at: float | None = None
    gone_at: float | None = None
    inflight: int = 0
    max_inflight: int = 0
    served: int = 0
    revision: SimRevision = field(default=None, repr=False)  # type: ignore[assignment]


@dataclass(eq=False, slots=True)
class SimRequest:
    arrival: float
    revision: SimRevision = field(default=None, repr=False)  # type: ignore[assignment]
    pinned: str | None = None
    start: float | None = None
    end: float | None = None
    status: int = 0
    cold: bool = False
    dispatched: float | None = None  # when it reached the route (after the gateway's queue, if any)


class SimRevision:
    """One revision: its autoscaler, activator routing and concurrency meter, and its live pods."""

    def __init__(
        self,
        name: str,
        spec: ServiceSpec,
        config: AutoscalerConfig,
        created: float,
        clock: Callable[[], float],
        assign: Callable[[SimRequest, SimPod], None],
    ) -> None:
        self.name = name
        self.created = created
        self.controller = ScalingController(
            spec.template_annotations(), spec.concurrency_limit, config, created
        )
        self.meter = ConcurrencyMeter(clock=clock)
        self.router: Router[SimPod, SimRequest] = Router(spec.concurrency_limit, BUFFER_LIMIT, assign)
        self.live: list[SimPod] = []  # pending or ready
        self.ready_at: float | None = None
        self.retired = (
            False  # no traffic any more: no autoscaling, its pods go (see the simulation's cut-over)
        )
