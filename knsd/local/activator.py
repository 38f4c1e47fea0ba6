"""The local activator: the shared routing policy with asyncio futures, and the concurrency meter.

No HTTP here: `knsd.local.proxy` forwards the requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from knsd.knative.meter import ConcurrencyMeter
from knsd.knative.routing import BufferFull, Router
from knsd.local.pods import Pod

__all__ = ["Activator", "BufferFull", "BufferTimeout", "ConcurrencyMeter"]


class BufferTimeout(Exception):
    """No slot freed before the request's deadline (504)."""


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[Pod]
    pinned: str | None


def _granted(future: asyncio.Future[Pod]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _hand_over(waiter: _Waiter, pod: Pod) -> None:
    if not waiter.future.done():
        waiter.future.set_result(pod)


class Activator:
    """Routes requests to pods with free capacity; buffers the rest until a slot or their deadline."""

    def __init__(self, container_concurrency: int, buffer_limit: int = 10_000) -> None:
        self.router: Router[Pod, _Waiter] = Router(container_concurrency, buffer_limit, _hand_over)
        self.meter = ConcurrencyMeter()

    @property
    def pods(self) -> dict[str, Pod]:
        return self.router.pods

    @property
    def buffered(self) -> int:
        return self.router.buffered

    @property
    def inflight(self) -> int:
        return self.router.inflight

    def add_pod(self, pod: Pod) -> None:
        self.router.add_pod(pod)

    def remove_pod(self, pod: Pod) -> None:
        self.router.remove_pod(pod)

    def release(self, pod: Pod) -> None:
        """The request on `pod` finished (or failed)."""
        self.meter.change(-1)
        self.router.release(pod)

    async def acquire(self, pinned: str | None, timeout: float | None) -> Pod:
        """A pod slot for one request, in FIFO order; buffered until one frees or `timeout` passes."""
        self.meter.change(+1)
        try:
            waiter = _Waiter(asyncio.get_running_loop().create_future(), pinned)
            self.router.submit(waiter)
            if waiter.future.done():
                return waiter.future.result()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it can drop a cancellation on 3.11
                    return await asyncio.shield(waiter.future)
            except TimeoutError:
                if _granted(waiter.future):
                    return waiter.future.result()  # a slot arrived at the last moment
                raise BufferTimeout("activator request timeout") from None
            except asyncio.CancelledError:
                if _granted(waiter.future):  # the client left just as a slot was handed over
                    self.router.give_back(waiter.future.result())
                raise
            finally:
                self.router.cancel(waiter)
                if not waiter.future.done():
                    waiter.future.cancel()
        except BaseException:
            self.meter.change(-1)
            raise

    def fail_waiters(self, exc: Exception) -> None:
        """Fail every buffered request (shutdown)."""
        while self.router.waiters:
            waiter = self.router.waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(exc)
