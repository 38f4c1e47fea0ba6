"""The simulation: a workload through the activator's routing, Knative's autoscaling loop and pods that
take a cold start to become ready, in simulated time.

It drives the very objects the local runtime uses (`ScalingController`, `Router`, `ConcurrencyMeter`):
arrivals, 1 s scrapes and 2 s decider ticks come from sorted streams; completions, pod readiness and
request timeouts from a heap.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from knsd.knative.config import AutoscalerConfig
from knsd.knative.controller import SCRAPE, TICK, ScalingController
from knsd.knative.meter import ConcurrencyMeter
from knsd.knative.routing import BufferFull, Router
from knsd.simulate.dist import Distribution, Replay
from knsd.simulate.workload import Workload
from knsd.spec import ServiceSpec

DONE, READY, TIMEOUT = 0, 1, 2
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


@dataclass(eq=False, slots=True)
class SimRequest:
    arrival: float
    pinned: str | None = None
    start: float | None = None
    end: float | None = None
    status: int = 0
    cold: bool = False


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


class Simulation:
    """One run of one spec against one workload."""

    def __init__(
        self,
        spec: ServiceSpec,
        config: AutoscalerConfig,
        workload: Workload,
        service_time: Distribution | Replay,
        cold_start: Distribution | Replay,
        seed: int = 0,
        first_tick: float = TICK,
        first_scrape: float = SCRAPE,
    ) -> None:
        self.spec, self.config, self.workload = spec, config, workload
        self.service_time, self.cold_start = service_time, cold_start
        self.rng = random.Random(seed)
        self.t = 0.0
        self.timeout = float(spec.timeout or 300)
        self.controller = ScalingController(spec.template_annotations(), spec.concurrency_limit, config, 0.0)
        self.meter = ConcurrencyMeter(clock=lambda: self.t)
        self.router: Router[SimPod, SimRequest] = Router(spec.concurrency_limit, BUFFER_LIMIT, self._assign)
        self.heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._working = 0  # DONE and READY events in the heap: requests in service, pods starting
        self.last_work = 0.0  # when a request or a pod last changed state
        self.pods: list[SimPod] = []
        self.live: list[SimPod] = []  # pending or ready
        self.requests: list[SimRequest] = []
        self.samples: list[tuple[float, int, int, int, int]] = []
        self.zero_at: list[float] = []
        self.next_tick, self.next_scrape = first_tick, first_scrape

    def _push(self, when: float, kind: int, obj: object) -> None:
        self._seq += 1
        self._working += kind != TIMEOUT
        heapq.heappush(self.heap, (when, self._seq, kind, obj))

    # pods

    def _scale_to(self, replicas: int) -> None:
        live = self.live
        for _ in range(replicas - len(live)):
            pod = SimPod(f"pod-{len(self.pods) + 1:04d}", self.t)
            self.pods.append(pod)
            live.append(pod)
            self._push(self.t + self.cold_start.sample(self.rng), READY, pod)
        if len(live) > replicas:
            victims = sorted(live, key=lambda p: (p.state == "ready", p.inflight > 0, -p.created))
            for pod in victims[: len(live) - replicas]:
                self._terminate(pod)

    def _terminate(self, pod: SimPod) -> None:
        self.live.remove(pod)
        if pod.state == "ready":
            self.router.remove_pod(pod)
        pod.state = "terminating"
        if pod.inflight == 0:
            self._gone(pod)

    def _gone(self, pod: SimPod) -> None:
        pod.state, pod.gone_at = "gone", self.t
        if not self.live and not any(p.state == "terminating" for p in self.pods):
            self.zero_at.append(self.t)

    def _ready_count(self) -> int:
        return len(self.router.pods)

    # requests

    def _assign(self, req: SimRequest, pod: SimPod) -> None:
        req.start = self.t
        req.pinned = pod.name
        req.cold = pod.ready_at is not None and pod.ready_at > req.arrival
        self._push(self.t + self.service_time.sample(self.rng), DONE, (req, pod))

    def _arrive(self, arrival: float) -> None:
        req = SimRequest(arrival)
        self.requests.append(req)
        self.meter.change(+1)
        if self.controller.poke_needed():
            self.controller.poke(self.t)
            self._tick()
        try:
            self.router.submit(req)
        except BufferFull:
            req.status, req.end = 503, self.t
            self.meter.change(-1)
            return
        if req.start is None:
            self._push(self.t + self.timeout, TIMEOUT, req)

    def _done(self, req: SimRequest, pod: SimPod) -> None:
        self.meter.change(-1)
        self.router.release(pod)
        if pod.state == "terminating" and pod.inflight == 0:
            self._gone(pod)  # it drained its last request
        req.end = self.last_work = self.t
        # The activator's timeout covers waiting and the response alike.
        req.status = 504 if req.end - req.arrival > self.timeout else 200

    def _timeout(self, req: SimRequest) -> None:
        if req.start is None and req.end is None:
            self.router.cancel(req)
            self.meter.change(-1)
            req.status, req.end = 504, self.t
            self.last_work = self.t

    def _ready(self, pod: SimPod) -> None:
        if pod.state != "pending":
            return
        pod.state, pod.ready_at = "ready", self.t
        self.last_work = self.t
        self.router.add_pod(pod)
        self.controller.note_ready(self._ready_count())

    # clocks

    def _tick(self) -> None:
        replicas = self.controller.tick(self.t, self._ready_count())
        if replicas is not None:
            self._scale_to(replicas)

    def _scrape(self) -> None:
        concurrency, count = self.meter.report()
        ready = self._ready_count()
        self.controller.record(self.t, concurrency, count, ready > 0)
        pending = len(self.live) - ready
        self.samples.append((self.t, ready, pending, self.controller.replicas, self.router.buffered))

    def _tail(self) -> float:
        """How long after its last request or pod start the service may still be scaling in."""
        c = self.controller
        retention = self.config.scale_to_zero_pod_retention_period
        return (
            c.decider.stable_window
            + c.decider.scale_down_delay
            + self.config.scale_to_zero_grace_period
            + retention
            + 10
        )

    def run(self) -> SimResult:
        arrivals = self.workload.arrivals
        n, i = len(arrivals), 0
        # Like `knsd deploy`, which waits for Ready: the initial scale is warm when the traffic starts.
        for _ in range(self.controller.start()):
            pod = SimPod(f"pod-{len(self.pods) + 1:04d}", 0.0)
            self.pods.append(pod)
            self.live.append(pod)
            self._ready(pod)
        tail = self._tail()
        inf = math.inf
        while True:
            t_arrival = arrivals[i] if i < n else inf
            t_event = self.heap[0][0] if self.heap else inf
            t_next = min(t_arrival, t_event, self.next_scrape, self.next_tick)
            # The tail counts from the last work, not from the end of the workload: a cold start or a
            # service time longer than the tail must still finish, and the scale-in after it be seen.
            busy = i < n or self._working > 0 or bool(self.router.waiters)
            settled = not busy and not self.heap and not self.live
            horizon = max(self.workload.duration, self.last_work) + tail
            if (not busy and t_next > horizon) or (settled and t_next >= self.workload.duration):
                break
            self.t = t_next
            if t_event == t_next:
                _, _, kind, obj = heapq.heappop(self.heap)
                self._working -= kind != TIMEOUT
                if kind == DONE:
                    self._done(*obj)  # type: ignore[misc]
                elif kind == READY:
                    self._ready(obj)  # type: ignore[arg-type]
                else:
                    self._timeout(obj)  # type: ignore[arg-type]
            elif t_arrival == t_next:
                i += 1
                self._arrive(t_arrival)
            elif self.next_scrape == t_next:
                self.next_scrape += SCRAPE
                self._scrape()
            else:
                self.next_tick += TICK
                self._tick()
        end = self.t
        for req in self.requests:
            if req.end is None:
                req.status = 504  # still waiting when the simulation ended
        pod_seconds = sum((p.gone_at if p.gone_at is not None else end) - p.created for p in self.pods)
        statuses: dict[int, int] = {}
        for req in self.requests:
            statuses[req.status] = statuses.get(req.status, 0) + 1
        ok = [r for r in self.requests if r.status == 200 and r.end is not None]
        return SimResult(
            latencies=sorted(r.end - r.arrival for r in ok),  # type: ignore[operator]
            cold=sum(1 for r in ok if r.cold),
            statuses=dict(sorted(statuses.items())),
            pods=self.pods,
            samples=self.samples,
            end=end,
            gpu_hours=pod_seconds * gpus_per_pod(self.spec) / 3600,
            zero_at=self.zero_at,
        )
