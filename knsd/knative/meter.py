"""The concurrency an activator or queue-proxy reports to the autoscaler (pure, injected clock)."""

from __future__ import annotations

import time
from collections.abc import Callable


class ConcurrencyMeter:
    """The time-weighted average of (in flight + buffered) requests per period, as Knative reports it."""

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
