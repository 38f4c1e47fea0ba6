"""The local activator's routing core: pods with free slots, a bounded FIFO buffer, concurrency accounting.

Like Knative's activator with containerConcurrency <= 3 ("first available"): a request goes to a ready
pod with a free slot; otherwise it waits in a bounded buffer (also while scaling from zero) until a slot
frees or its deadline passes. No HTTP here: `knsd.local.proxy` forwards the requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from knsd.local.pods import Pod


class BufferFull(Exception):
    """The activator's buffer is full (Knative: 503 "pending request queue full")."""


class BufferTimeout(Exception):
    """No slot freed before the request's deadline (504)."""


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[Pod]
    pinned: str | None
    enqueued: float = field(default_factory=time.monotonic)


def _granted(future: asyncio.Future[Pod]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class ConcurrencyMeter:
    """The time-weighted average of (in flight + buffered) requests per second, as Knative reports it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.current = 0
        self._since = clock()
        self._area = 0.0
        self._start = self._since
        self.requests = 0

    def change(self, delta: int) -> None:
        now = self.clock()
        self._area += self.current * (now - self._since)
        self._since = now
        self.current += delta
        if delta > 0:
            self.requests += delta

    def report(self) -> tuple[float, int]:
        """Average concurrency and request count since the last report; starts a new period."""
        now = self.clock()
        area = self._area + self.current * (now - self._since)
        elapsed = max(now - self._start, 1e-9)
        requests = self.requests
        self._area, self._since, self._start, self.requests = 0.0, now, now, 0
        return area / elapsed, requests


class Activator:
    """Routes requests to pods with free capacity; buffers the rest."""

    def __init__(self, container_concurrency: int, buffer_limit: int = 10_000) -> None:
        # containerConcurrency 0 means unlimited; the activator then never holds a request back.
        self.capacity = container_concurrency if container_concurrency > 0 else 1 << 30
        self.buffer_limit = buffer_limit
        self.pods: dict[str, Pod] = {}  # ready pods, oldest first ("first available")
        self._waiters: deque[_Waiter] = deque()
        self.meter = ConcurrencyMeter()

    @property
    def buffered(self) -> int:
        return len(self._waiters)

    @property
    def inflight(self) -> int:
        return sum(p.inflight for p in self.pods.values())

    def add_pod(self, pod: Pod) -> None:
        self.pods[pod.name] = pod
        self._dispatch()

    def remove_pod(self, pod: Pod) -> None:
        """The pod stops receiving requests (terminating or gone); waiters pinned to it go anywhere."""
        self.pods.pop(pod.name, None)
        for waiter in self._waiters:
            if waiter.pinned == pod.name:
                waiter.pinned = None
        self._dispatch()

    def _free(self, pinned: str | None) -> Pod | None:
        if pinned is not None and pinned in self.pods:
            pod = self.pods[pinned]
            return pod if pod.inflight < self.capacity else None
        for pod in self.pods.values():
            if pod.inflight < self.capacity:
                return pod
        return None

    def _take(self, pod: Pod) -> Pod:
        pod.inflight += 1
        pod.max_inflight = max(pod.max_inflight, pod.inflight)
        return pod

    async def acquire(self, pinned: str | None, timeout: float | None) -> Pod:
        """A pod slot for one request, in FIFO order; buffered until one frees or `timeout` passes."""
        self.meter.change(+1)
        try:
            waiter = _Waiter(asyncio.get_running_loop().create_future(), pinned)
            self._waiters.append(waiter)
            self._dispatch()  # FIFO: served at once only if no earlier request can take the slot
            if waiter.future.done():
                return waiter.future.result()
            if len(self._waiters) > self.buffer_limit:
                self._waiters.remove(waiter)
                raise BufferFull("pending request queue full")
            try:
                return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            except TimeoutError:
                if _granted(waiter.future):
                    return waiter.future.result()  # a slot arrived at the last moment
                raise BufferTimeout("activator request timeout") from None
            except asyncio.CancelledError:
                if _granted(waiter.future):  # the client left just as a slot was handed over
                    self._give_back(waiter.future.result())
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.cancel()
        except BaseException:
            self.meter.change(-1)
            raise

    def release(self, pod: Pod) -> None:
        """The request on `pod` finished (or failed)."""
        pod.inflight -= 1
        pod.served += 1
        self.meter.change(-1)
        self._dispatch()

    def _give_back(self, pod: Pod) -> None:
        pod.inflight -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiters in FIFO order (a waiter pinned to a busy pod does not block others)."""
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            pod = self._free(waiter.pinned)
            if pod is None:
                if waiter.pinned is None:
                    break  # no free slot anywhere
                continue
            self._waiters.remove(waiter)
            waiter.future.set_result(self._take(pod))

    def fail_waiters(self, exc: Exception) -> None:
        """Fail every buffered request (shutdown)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(exc)
