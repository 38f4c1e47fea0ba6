"""Single-flight admission: one generation at a time, a bounded FIFO behind it, and draining."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from knsd.errors import Unavailable


class Admission:
    """Admits at most one running job and `max_queue` waiting ones; rejects all new ones once draining."""

    def __init__(self, max_queue: int, retry_after: int = 1) -> None:
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.running = 0
        self.waiting = 0
        self.draining = False
        self.peak = 0  # the most requests held at once (running + waiting) since start
        self._lock = asyncio.Lock()  # asyncio.Lock wakes its waiters in FIFO order
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> int:
        return self.running + self.waiting

    def check(self) -> None:
        """503 (Unavailable) now when a request would be refused: draining, or the queue is full."""
        if self.draining:
            raise Unavailable("server is shutting down", retry_after=self.retry_after)
        if self.busy >= 1 + self.max_queue:
            raise Unavailable("pending request queue full", retry_after=self.retry_after)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for the pipeline; 503 (Unavailable) when draining or when the queue is full."""
        self.check()
        self.waiting += 1
        self.peak = max(self.peak, self.busy)
        self._idle.clear()
        try:
            await self._lock.acquire()
        except BaseException:
            self.waiting -= 1
            self._maybe_idle()
            raise
        self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._lock.release()
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.busy == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Stop admitting; wait until running and queued jobs are done. False if the timeout passed."""
        self.draining = True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
