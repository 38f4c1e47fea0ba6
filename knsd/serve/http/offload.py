"""A request's CPU work before it waits (JSON, image decoding, png-info, add-on lookups, ControlNet's
preprocessors) runs on a few worker threads, never on the event loop, so probes and other requests are
answered while a large body is read; each call counts the images it decodes against one request's
budget (knsd.serve.api.images)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from knsd.serve.api.images import ImageLimits, decoding

T = TypeVar("T")


def default_workers() -> int:
    """As many threads as cores, at most 4: the work is CPU-bound, more threads only queue on the GIL."""
    return max(1, min(4, os.cpu_count() or 1))


class Offload:
    """A bounded pool of worker threads for request parsing (`run`)."""

    def __init__(self, limits: ImageLimits, workers: int | None = None) -> None:
        self.limits = limits
        self._executor = ThreadPoolExecutor(workers or default_workers(), "knsd-parse")

    async def run(self, fn: Callable[[], T]) -> T:
        """`fn()` on a worker thread, its images held to one request's budget. A caller cancelled while
        it waits for a thread takes its work off the queue; one cancelled while it runs lets it finish."""

        def call() -> T:
            with decoding(self.limits):
                return fn()

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
