"""Arrival times: Poisson at a rate, a daily profile, or a trace (times, or knsd loadtest's CSV/JSON)."""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from knsd.errors import UsageError


@dataclass(frozen=True, slots=True)
class Workload:
    arrivals: list[float]  # seconds from the start, sorted
    duration: float
    description: str


def poisson(rate: float, duration: float, rng: random.Random) -> Workload:
    """Poisson arrivals: exponential gaps with mean 1/rate."""
    times, t = [], 0.0
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= duration:
            break
        times.append(t)
    return Workload(times, duration, f"Poisson {rate:g}/s for {duration:g}s")


def daily_profile(text: str, rng: random.Random, days: float = 1.0) -> Workload:
    """`peak:R1,base:R2[,at:HOUR]`: a day whose rate goes smoothly from base (at HOUR-12) to peak (at HOUR)."""
    fields: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        try:
            fields[key.strip()] = float(value)
        except ValueError:
            raise UsageError("--profile-day", f"expected peak:R,base:R[,at:HOUR], got {text!r}") from None
        if not sep:
            raise UsageError("--profile-day", f"expected peak:R,base:R[,at:HOUR], got {text!r}")
    if "peak" not in fields or "base" not in fields or not 0 <= fields["base"] <= fields["peak"]:
        raise UsageError("--profile-day", f"needs peak and base rates with 0 <= base <= peak, got {text!r}")
    peak, base, at = fields["peak"], fields["base"], fields.get("at", 14.0) * 3600
    duration = days * 86400

    def rate(t: float) -> float:
        return base + (peak - base) * (1 + math.cos(2 * math.pi * (t - at) / 86400)) / 2

    # Thinning (Lewis-Shedler): Poisson at the peak rate, each kept with probability rate(t)/peak.
    times, t = [], 0.0
    while peak > 0:
        t += rng.expovariate(peak)
        if t >= duration:
            break
        if rng.random() * peak < rate(t):
            times.append(t)
    return Workload(times, duration, f"daily profile base {base:g}/s, peak {peak:g}/s at {at / 3600:g}h")


def trace(path: Path) -> Workload:
    """Arrival times from a file: one number per line, knsd loadtest's CSV (offset) or JSON (timeline)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError("--trace", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    times: list[float] = []
    try:
        if text.lstrip().startswith("{") or text.lstrip().startswith("["):
            data = json.loads(text)
            if isinstance(data, dict) and "requests" in data:  # knsd loadtest -o json
                times = [float(r["offset"]) for r in data["requests"]]
            else:
                items = data.get("arrivals", data) if isinstance(data, dict) else data
                times = [float(x) for x in items]
        elif text.startswith("response-time,"):
            times = [float(row["offset"]) for row in csv.DictReader(text.splitlines())]
        else:
            times = [
                float(line.split(",")[0])
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            ]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            "--trace", f"{path}: expected arrival times in seconds, knsd loadtest CSV or JSON ({exc})"
        ) from None
    if not times:
        raise UsageError("--trace", f"{path} has no arrivals")
    times.sort()
    start = times[0] if times[0] < 0 else 0.0
    times = [t - start for t in times]
    return Workload(times, times[-1], f"trace {path.name} ({len(times)} requests)")
