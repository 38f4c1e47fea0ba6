"""Knative's metric windows: per-second buckets with partial-window averages, and the max window.

Follows knative/serving `pkg/autoscaler/aggregation/bucketing.go` (`TimedFloat64Buckets`,
`WeightedFloat64Buckets`) and `aggregation/max/timewindow.go`. Times are float seconds; buckets are
indexed by whole seconds (or whole granules) like Go's `unix_seconds / granularity`.
"""

from __future__ import annotations

import math
from collections import deque


def _round6(x: float) -> float:
    return round(x, 6)


class TimedBuckets:
    """A window of 1-second buckets; values recorded in the same second add up (revision totals)."""

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        self.granularity = granularity
        self.window = window
        self.n = max(1, math.ceil(window / granularity))
        self._buckets = [0.0] * self.n
        self._first: int | None = None  # index of the first write since the last reset
        self._last: int | None = None
        self._total = 0.0

    def _index(self, t: float) -> int:
        return int(math.floor(t / self.granularity))

    def is_empty(self, now: float) -> bool:
        """No write within the window before `now`."""
        return self._last is None or (self._index(now) - self._last) * self.granularity > self.window

    def record(self, t: float, value: float) -> None:
        idx = self._index(t)
        if self._last is None or idx - self._last >= self.n:
            # First write, or a gap of at least a whole window: start over.
            self._buckets = [0.0] * self.n
            self._total = 0.0
            self._first = idx
            self._last = idx
        elif idx < self._last - self.n + 1:
            return  # older than the window: ignored
        elif idx > self._last:
            for gap in range(self._last + 1, idx + 1):
                slot = gap % self.n
                self._total -= self._buckets[slot]
                self._buckets[slot] = 0.0
            self._last = idx
        self._buckets[idx % self.n] += value
        self._total += value

    def window_average(self, now: float) -> float:
        """The mean over the (possibly partial) window ending at `now`; 0 once the window is stale."""
        if self._last is None or self._first is None:
            return 0.0
        now_idx = self._index(now)
        elapsed = now_idx - self._last
        span = self._last - self._first + 1
        if elapsed <= 0:
            return _round6(self._total / min(span, self.n))
        if elapsed >= self.n:
            return 0.0
        total = self._total
        # The buckets that fall out of the window between the last write and now.
        for i in range(self._last - self.n + 1, now_idx - self.n + 1):
            total -= self._buckets[i % self.n]
        return _round6(total / min(span, self.n - elapsed))


class WeightedBuckets(TimedBuckets):
    """Knative's weighted-exponential average (opt-in `metric-aggregation-algorithm`)."""

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        super().__init__(window, granularity)
        self.alpha = max(1 - (1 - 0.9999) ** (1 / self.n), 0.2)

    def window_average(self, now: float) -> float:
        if self._last is None or self._first is None:
            return 0.0
        now_idx = self._index(now)
        if now_idx - self._last >= self.n:
            return 0.0
        total, multiplier = 0.0, self.alpha
        # Newest first; empty seconds since the last write count as leading zeros.
        start = min(now_idx, self._last)
        for _ in range(max(0, now_idx - self._last)):
            multiplier *= 1 - self.alpha
        for idx in range(start, max(self._first, max(now_idx, self._last) - self.n + 1) - 1, -1):
            total += self._buckets[idx % self.n] * multiplier
            multiplier *= 1 - self.alpha
        return _round6(total)


class MaxWindow:
    """The maximum of the values recorded over the last `window` seconds, in 2 s granules (scale-down-delay)."""

    def __init__(self, window: float, granularity: float = 2.0) -> None:
        self.granularity = granularity
        self.n = max(1, math.ceil(window / granularity))
        self._deque: deque[tuple[int, int]] = deque()  # (index, value), values strictly decreasing

    def record(self, t: float, value: int) -> None:
        idx = int(math.floor(t / self.granularity))
        while self._deque and self._deque[-1][1] <= value:
            self._deque.pop()
        self._deque.append((idx, value))
        while self._deque and idx - self._deque[0][0] >= self.n:
            self._deque.popleft()

    def current(self) -> int:
        return self._deque[0][1] if self._deque else 0

    def entries(self) -> list[tuple[int, int]]:
        return list(self._deque)
