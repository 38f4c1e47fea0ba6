"""Summarising a run the way hey does (pure): histogram, percentiles, details, distributions.

hey's own algorithms are kept for its report (so scripts that parse hey see the same numbers); the
JSON report adds exact nearest-rank percentiles up to p99.99.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from knsd.loadtest.requester import Result

HEY_PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
EXACT_PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99)
BUCKETS = 10
BAR_WIDTH = 40


@dataclass(frozen=True, slots=True)
class Phase:
    average: float
    fastest: float
    slowest: float


@dataclass(frozen=True, slots=True)
class Summary:
    """hey's report numbers, plus knsd's exact percentiles."""

    total: float
    count: int  # every result, errors included (hey's numRes)
    successes: int
    fastest: float
    slowest: float
    average: float
    rps: float
    size_total: int
    size_per_request: int
    histogram: tuple[tuple[float, int], ...]
    hey_percentiles: tuple[tuple[int, float], ...]
    percentiles: tuple[tuple[float, float], ...]
    details: Mapping[str, Phase]
    status_codes: Mapping[int, int]
    errors: Mapping[str, int]
    revisions: Mapping[str, Mapping[int, int]] = field(default_factory=dict)  # revision -> status -> count
    # Time to first byte (sending to the response's first byte), exact percentiles as `percentiles`; and
    # how many responses were event streams, whose first byte comes long before their end.
    first_byte: tuple[tuple[float, float], ...] = ()
    streamed: int = 0


def hey_percentiles(lats: list[float]) -> tuple[tuple[int, float], ...]:
    """hey's algorithm (one rank high; a missing one is printed as "0% in 0.0000 secs"; none without data)."""
    if not lats:
        return ()
    values = [0.0] * len(HEY_PERCENTILES)
    j = 0
    n = len(lats)
    for i in range(n):
        if j >= len(HEY_PERCENTILES):
            break
        if (i * 100) // n >= HEY_PERCENTILES[j]:
            values[j] = lats[i]
            j += 1
    return tuple((p, v) if v > 0 else (0, 0.0) for p, v in zip(HEY_PERCENTILES, values, strict=True))


def exact_percentiles(lats: list[float]) -> tuple[tuple[float, float], ...]:
    """Nearest-rank percentiles of sorted latencies."""
    if not lats:
        return ()
    n = len(lats)
    return tuple((p, lats[max(0, math.ceil(p / 100 * n) - 1)]) for p in EXACT_PERCENTILES)


def histogram(lats: list[float]) -> tuple[tuple[float, int], ...]:
    """hey's 11 marks: a latency counts in the first bucket whose mark is >= it."""
    if not lats:
        return ()
    fastest, slowest = lats[0], lats[-1]
    size = (slowest - fastest) / BUCKETS
    marks = [fastest + size * i for i in range(BUCKETS)] + [slowest]
    counts = [0] * len(marks)
    b = 0
    for value in lats:
        while value > marks[b] and b < len(marks) - 1:
            b += 1
        counts[b] += 1
    return tuple(zip(marks, counts, strict=True))


def _phase(values: list[float], n: int) -> Phase:
    if not values:
        return Phase(math.nan, 0.0, 0.0)  # hey divides by zero here too
    return Phase(sum(values) / n, min(values), max(values))


def summarize(results: Iterable[Result], errors: Mapping[str, int], total: float) -> Summary:
    """The summary of a run that took `total` seconds."""
    done = list(results)
    lats = sorted(r.total for r in done)
    n = len(lats)
    count = n + sum(errors.values())
    status: dict[int, int] = {}
    revisions: dict[str, dict[int, int]] = {}
    for r in done:
        status[r.status] = status.get(r.status, 0) + 1
        if r.revision is not None:
            codes = revisions.setdefault(r.revision, {})
            codes[r.status] = codes.get(r.status, 0) + 1
    size_total = sum(r.size for r in done)
    phases = {
        "DNS+dialup": [r.conn for r in done],
        "DNS-lookup": [r.dns for r in done],
        "req write": [r.req for r in done],
        "resp wait": [r.delay for r in done],
        "resp read": [r.res for r in done],
    }
    return Summary(
        total=total,
        count=count,
        successes=n,
        fastest=lats[0] if lats else 0.0,
        slowest=lats[-1] if lats else 0.0,
        average=sum(lats) / n if n else math.nan,
        rps=count / total if total > 0 else 0.0,
        size_total=size_total,
        size_per_request=size_total // n if n else 0,
        histogram=histogram(lats),
        hey_percentiles=hey_percentiles(lats),
        percentiles=exact_percentiles(lats),
        details={name: _phase(values, n) for name, values in phases.items()},
        status_codes=dict(sorted(status.items())),
        errors=dict(sorted(errors.items())),
        revisions={name: dict(sorted(codes.items())) for name, codes in sorted(revisions.items())},
        first_byte=exact_percentiles(sorted(r.first_byte for r in done)),
        streamed=sum(r.streamed for r in done),
    )
