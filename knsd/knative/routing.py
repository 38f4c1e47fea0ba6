"""The activator's routing policy (pure): first available slot, a bounded FIFO buffer, pinned requests.

Like Knative's activator with containerConcurrency <= 3: a request goes to a ready pod with a free slot;
otherwise it waits, in order, until a slot frees. The local runtime wraps it with asyncio futures, the
simulator with events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Slots(Protocol):
    """What the router needs of a pod."""

    name: str
    inflight: int
    max_inflight: int
    served: int


class Waiting(Protocol):
    pinned: str | None


class BufferFull(Exception):
    """The buffer is full (Knative: 503 "pending request queue full")."""


P = TypeVar("P", bound=Slots)
W = TypeVar("W", bound=Waiting)


class Router(Generic[P, W]):
    """Hands pod slots to requests in FIFO order; `assign(waiter, pod)` is called for each hand-over."""

    def __init__(self, container_concurrency: int, buffer_limit: int, assign: Callable[[W, P], None]) -> None:
        # containerConcurrency 0 means unlimited; the activator then never holds a request back.
        self.capacity = container_concurrency if container_concurrency > 0 else 1 << 30
        self.buffer_limit = buffer_limit
        self.assign = assign
        self.pods: dict[str, P] = {}  # ready pods, oldest first ("first available")
        self.waiters: deque[W] = deque()

    @property
    def buffered(self) -> int:
        return len(self.waiters)

    @property
    def inflight(self) -> int:
        return sum(p.inflight for p in self.pods.values())

    def submit(self, waiter: W) -> None:
        """Queue a request and hand out what can be handed out; BufferFull if it must wait and cannot."""
        self.waiters.append(waiter)
        self.dispatch()
        if len(self.waiters) > self.buffer_limit and waiter in self.waiters:
            self.waiters.remove(waiter)
            raise BufferFull("pending request queue full")

    def cancel(self, waiter: W) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def add_pod(self, pod: P) -> None:
        self.pods[pod.name] = pod
        self.dispatch()

    def remove_pod(self, pod: P) -> None:
        """The pod stops receiving requests (terminating or gone); waiters pinned to it may go anywhere."""
        self.pods.pop(pod.name, None)
        for waiter in self.waiters:
            if waiter.pinned == pod.name:
                waiter.pinned = None
        self.dispatch()

    def release(self, pod: P) -> None:
        """A request on `pod` finished."""
        pod.inflight -= 1
        pod.served += 1
        self.dispatch()

    def give_back(self, pod: P) -> None:
        """A slot handed to a request that left before using it."""
        pod.inflight -= 1
        self.dispatch()

    def _free(self, pinned: str | None) -> P | None:
        if pinned is not None and pinned in self.pods:
            pod = self.pods[pinned]
            return pod if pod.inflight < self.capacity else None
        for pod in self.pods.values():
            if pod.inflight < self.capacity:
                return pod
        return None

    def dispatch(self) -> None:
        """Hand free slots to waiters in order (a waiter pinned to a busy pod does not block others)."""
        waiters, i = self.waiters, 0
        while i < len(waiters):
            waiter = waiters[i]
            pod = self._free(waiter.pinned)
            if pod is None:
                if waiter.pinned is None:
                    break  # no free slot anywhere
                i += 1
                continue
            del waiters[i]
            pod.inflight += 1
            pod.max_inflight = max(pod.max_inflight, pod.inflight)
            self.assign(waiter, pod)
