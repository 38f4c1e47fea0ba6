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
from collections import deque

from knsd.knative.config import AutoscalerConfig
from knsd.knative.controller import SCRAPE, TICK, ScalingController
from knsd.knative.routing import BufferFull
from knsd.service.spec import ServiceSpec
from knsd.simulate.dist import Distribution, Replay
from knsd.simulate.entities import SimPod, SimRequest, SimRevision
from knsd.simulate.result import Rollout, SimResult, gpus_per_pod
from knsd.simulate.workload import Workload

DONE, READY, TIMEOUT, ROLLOUT, RETIRE = 0, 1, 2, 3, 4


class Simulation:
    """One run of one spec against one workload (optionally with a rollout to a new revision)."""

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
        rollout: Rollout | None = None,
        gateway: int | None = None,
    ) -> None:
        self.spec, self.config, self.workload = spec, config, workload
        # knsd gateway in front: requests wait in its queue (Redis) and at most `gateway` are at the route.
        self.gateway = gateway
        self.gw_queue: deque[SimRequest] = deque()
        self.gw_inflight = 0
        self.gw_samples: list[tuple[float, int]] = []
        self.service_time, self.cold_start = service_time, cold_start
        self.rng = random.Random(seed)
        self.t = 0.0
        self.timeout = float(spec.timeout or 300)
        self.heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._working = 0  # DONE and READY events in the heap: requests in service, pods starting
        self.last_work = 0.0  # when a request or a pod last changed state
        self.pods: list[SimPod] = []
        self.requests: list[SimRequest] = []
        self.samples: list[tuple[float, int, int, int, int]] = []
        self.zero_at: list[float] = []
        self.events: list[tuple[float, str]] = []
        self.next_tick, self.next_scrape = first_tick, first_scrape
        self.rollout = rollout
        self.revisions = [SimRevision(f"{spec.name}-00001", spec, config, 0.0, self._now, self._assign)]
        self.split: list[tuple[SimRevision, int]] = [(self.revisions[0], 100)]
        self._current: dict[str, int] = {}

    @property
    def controller(self) -> ScalingController:
        """The first revision's autoscaler (the only one without a rollout)."""
        return self.revisions[0].controller

    def _push(self, when: float, kind: int, obj: object) -> None:
        self._seq += 1
        self._working += kind in (DONE, READY)
        heapq.heappush(self.heap, (when, self._seq, kind, obj))

    # pods

    def _scale_to(self, rev: SimRevision, replicas: int) -> None:
        live = rev.live
        for _ in range(replicas - len(live)):
            pod = SimPod(f"pod-{len(self.pods) + 1:04d}", self.t, revision=rev)
            self.pods.append(pod)
            live.append(pod)
            self._push(self.t + self.cold_start.sample(self.rng), READY, pod)
        if len(live) > replicas:
            victims = sorted(live, key=lambda p: (p.state == "ready", p.inflight > 0, -p.created))
            for pod in victims[: len(live) - replicas]:
                self._terminate(pod)

    def _terminate(self, pod: SimPod) -> None:
        rev = pod.revision
        rev.live.remove(pod)
        if pod.state == "ready":
            rev.router.remove_pod(pod)
        pod.state = "terminating"
        if pod.inflight == 0:
            self._gone(pod)

    def _gone(self, pod: SimPod) -> None:
        pod.state, pod.gone_at = "gone", self.t
        if not any(r.live for r in self.revisions) and not any(p.state == "terminating" for p in self.pods):
            self.zero_at.append(self.t)

    # requests

    def _pick(self) -> SimRevision:
        """The revision for the next request: smooth weighted round robin over the split (as knsd's route)."""
        if len(self.split) == 1:
            return self.split[0][0]
        total = sum(w for _, w in self.split)
        for rev, weight in self.split:
            self._current[rev.name] = self._current.get(rev.name, 0) + weight
        best = max(self.split, key=lambda rw: self._current[rw[0].name])[0]
        self._current[best.name] -= total
        return best

    def _now(self) -> float:
        return self.t

    def _assign(self, req: SimRequest, pod: SimPod) -> None:
        req.start = self.t
        req.pinned = pod.name
        req.cold = pod.ready_at is not None and pod.ready_at > req.arrival
        self._push(self.t + self.service_time.sample(self.rng), DONE, (req, pod))

    def _arrive(self, arrival: float) -> None:
        req = SimRequest(arrival)
        self.requests.append(req)
        if self.gateway is not None and self.gw_inflight >= self.gateway:
            self.gw_queue.append(req)  # waits in the gateway's queue, not at the activator
            return
        self._dispatch(req)

    def _dispatch(self, req: SimRequest) -> None:
        rev = self._pick()
        req.revision, req.dispatched = rev, self.t
        self.gw_inflight += 1
        rev.meter.change(+1)
        if rev.controller.poke_needed():
            rev.controller.poke(self.t)
            self._tick_one(rev)
        try:
            rev.router.submit(req)
        except BufferFull:
            req.status, req.end = 503, self.t
            rev.meter.change(-1)
            self._left_route()
            return
        if req.start is None:
            self._push(self.t + self.timeout, TIMEOUT, req)

    def _left_route(self) -> None:
        """A request is done at the route: the gateway sends the next one in its queue."""
        self.gw_inflight -= 1
        if self.gw_queue:
            self._dispatch(self.gw_queue.popleft())

    def _done(self, req: SimRequest, pod: SimPod) -> None:
        rev = pod.revision
        rev.meter.change(-1)
        rev.router.release(pod)
        if pod.state == "terminating" and pod.inflight == 0:
            self._gone(pod)  # it drained its last request
        req.end = self.last_work = self.t
        # The activator's timeout covers waiting and the response alike (from when the route got it).
        req.status = 504 if req.end - (req.dispatched or req.arrival) > self.timeout else 200
        self._left_route()

    def _timeout(self, req: SimRequest) -> None:
        if req.start is None and req.end is None:
            rev = req.revision
            rev.router.cancel(req)
            rev.meter.change(-1)
            req.status, req.end = 504, self.t
            self.last_work = self.t
            self._left_route()

    def _ready(self, pod: SimPod) -> None:
        if pod.state != "pending":
            return
        rev = pod.revision
        pod.state, pod.ready_at = "ready", self.t
        self.last_work = self.t
        rev.router.add_pod(pod)
        rev.controller.note_ready(len(rev.router.pods))
        if rev.ready_at is None and rev.controller.initialized:
            rev.ready_at = self.t
            if rev is not self.revisions[0]:
                self._cut_over(rev)

    # rollout

    def _start_rollout(self) -> None:
        """Knative creates the new revision at its initial scale; traffic stays put until it is Ready."""
        assert self.rollout is not None
        rev = SimRevision(
            f"{self.spec.name}-{len(self.revisions) + 1:05d}",
            self.spec,
            self.config,
            self.t,
            self._now,
            self._assign,
        )
        self.revisions.append(rev)
        self.events.append((self.t, f"revision {rev.name} created"))
        replicas = rev.controller.start()
        self._scale_to(rev, replicas)
        if replicas == 0:  # Ready with no pods (initial-scale 0)
            rev.ready_at = self.t
            self._cut_over(rev)

    def _cut_over(self, new: SimRevision) -> None:
        """The new revision is Ready: traffic moves at once (Knative without a rollout-duration)."""
        assert self.rollout is not None
        percent = self.rollout.percent
        old = self.revisions[0]
        self.split = [(r, w) for r, w in ((old, 100 - percent), (new, percent)) if w]
        self.events.append((self.t, f"traffic: {new.name} {percent}%, {old.name} {100 - percent}%"))
        if percent == 100:
            # Unrouted, the old revision scales to zero by the normal path: about a stable window after its
            # last request, plus the scale-to-zero grace period (knative/serving, routingState=reserve).
            old.retired = True
            linger = old.controller.decider.stable_window + self.config.scale_to_zero_grace_period
            self._push(self.t + linger, RETIRE, old)

    def _retire(self, rev: SimRevision) -> None:
        for pod in list(rev.live):
            self._terminate(pod)
        self.events.append((self.t, f"revision {rev.name} scaled to zero"))

    # clocks

    def _tick_one(self, rev: SimRevision) -> None:
        replicas = rev.controller.tick(self.t, len(rev.router.pods))
        if replicas is not None:
            self._scale_to(rev, replicas)

    def _tick(self) -> None:
        for rev in self.revisions:
            if not rev.retired:
                self._tick_one(rev)

    def _scrape(self) -> None:
        ready = pending = desired = buffered = 0
        for rev in self.revisions:
            concurrency, count = rev.meter.report()
            rev_ready = len(rev.router.pods)
            rev.controller.record(self.t, concurrency, count, rev_ready > 0)
            ready += rev_ready
            pending += len(rev.live) - rev_ready
            desired += 0 if rev.retired else rev.controller.replicas
            buffered += rev.router.buffered
        self.samples.append((self.t, ready, pending, desired, buffered))
        if self.gateway is not None:
            self.gw_samples.append((self.t, len(self.gw_queue)))

    def _tail(self) -> float:
        """How long after its last request or pod start the service may still be scaling in."""
        c = self.revisions[-1].controller
        retention = self.config.scale_to_zero_pod_retention_period
        return (
            c.decider.stable_window
            + c.decider.scale_down_delay
            + self.config.scale_to_zero_grace_period
            + retention
            + 10
        )

    def _waiting(self) -> bool:
        return any(r.router.waiters for r in self.revisions)

    def run(self) -> SimResult:
        arrivals = self.workload.arrivals
        n, i = len(arrivals), 0
        # Like `knsd deploy`, which waits for Ready: the initial scale is warm when the traffic starts.
        first = self.revisions[0]
        for _ in range(first.controller.start()):
            pod = SimPod(f"pod-{len(self.pods) + 1:04d}", 0.0, revision=first)
            self.pods.append(pod)
            first.live.append(pod)
            self._ready(pod)
        if self.rollout is not None:
            self._push(self.rollout.at, ROLLOUT, None)
        tail = self._tail()
        inf = math.inf
        while True:
            t_arrival = arrivals[i] if i < n else inf
            t_event = self.heap[0][0] if self.heap else inf
            t_next = min(t_arrival, t_event, self.next_scrape, self.next_tick)
            settled = (
                i >= n
                and not self.heap
                and not any(r.live for r in self.revisions)
                and not any(r.router.waiters for r in self.revisions)
                and not self.gw_queue
            )
            # The tail counts from the last work, not from the end of the workload: a cold start or a
            # service time longer than the tail must still finish, and the scale-in after it be seen.
            busy = i < n or self._working > 0 or self._waiting() or bool(self.gw_queue)
            horizon = max(self.workload.duration, self.last_work) + tail
            if (not busy and t_next > horizon) or (settled and t_next >= self.workload.duration):
                break
            self.t = t_next
            if t_event == t_next:
                _, _, kind, obj = heapq.heappop(self.heap)
                self._working -= kind in (DONE, READY)
                if kind == DONE:
                    self._done(*obj)  # type: ignore[misc]
                elif kind == READY:
                    self._ready(obj)  # type: ignore[arg-type]
                elif kind == TIMEOUT:
                    self._timeout(obj)  # type: ignore[arg-type]
                elif kind == ROLLOUT:
                    self._start_rollout()
                else:
                    self._retire(obj)  # type: ignore[arg-type]
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
            events=self.events,
            by_revision={
                rev.name: sum(1 for r in self.requests if r.revision is rev and r.status == 200)
                for rev in self.revisions
            },
            gateway=self.gateway,
            queue=self.gw_samples,
        )
