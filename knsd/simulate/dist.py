"""Durations as fixed values or distributions: "2s", "lognormal:2s,0.3", "uniform:1s,3s", "exp:2s"."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from knsd.errors import UsageError
from knsd.knative.goconv import SECOND, DurationError, parse_duration


def seconds(text: str, flag: str) -> float:
    """A Go duration ("2s", "1m30s") or plain seconds ("2.5")."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text) / SECOND
    except DurationError:
        raise UsageError(flag, f"expected a duration such as 2s or 1m30s, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class Distribution:
    """A non-negative duration distribution."""

    kind: str  # fixed, lognormal, uniform, exp, normal
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "lognormal":  # a = median, b = sigma of the log
            return self.a * math.exp(rng.gauss(0.0, self.b))
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.a)
        return max(0.0, rng.gauss(self.a, self.b))

    @property
    def mean(self) -> float:
        if self.kind == "lognormal":
            return self.a * math.exp(self.b**2 / 2)
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}s"
        if self.kind in ("lognormal", "normal"):
            return f"{self.kind}({self.a:g}s, {self.b:g})"
        if self.kind == "uniform":
            return f"uniform({self.a:g}s, {self.b:g}s)"
        return f"exp(mean {self.a:g}s)"


class Replay:
    """Measured values handed out in order (then again from the start): replaying a real run."""

    def __init__(self, values: list[float]) -> None:
        if not values:
            raise ValueError("Replay needs at least one value")
        self.values = list(values)
        self._next = 0

    def sample(self, rng: random.Random) -> float:
        value = self.values[self._next % len(self.values)]
        self._next += 1
        return value

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def describe(self) -> str:
        return "replay(" + ", ".join(f"{v:.2f}s" for v in self.values) + ")"


def parse_distribution(text: str, flag: str) -> Distribution:
    """`2s`, `lognormal:MEDIAN,SIGMA`, `uniform:LOW,HIGH`, `exp:MEAN`, `normal:MEAN,STDDEV`, or `BENCH.json`."""
    if text.endswith(".json"):  # measured numbers: the output of `knsd bench -o json`
        from knsd.simulate.benchreport import service_time_from_json

        return Distribution(*service_time_from_json(text, flag))
    kind, sep, args = text.partition(":")
    if not sep:
        value = seconds(text, flag)
        if value < 0:
            raise UsageError(flag, f"must not be negative, got {text!r}")
        return Distribution("fixed", value)
    parts = [p.strip() for p in args.split(",") if p.strip()]
    if kind == "lognormal" and len(parts) == 2:
        return Distribution("lognormal", seconds(parts[0], flag), float(parts[1]))
    if kind == "uniform" and len(parts) == 2:
        low, high = seconds(parts[0], flag), seconds(parts[1], flag)
        if not 0 <= low <= high:
            raise UsageError(flag, f"uniform needs 0 <= LOW <= HIGH, got {text!r}")
        return Distribution("uniform", low, high)
    if kind == "exp" and len(parts) == 1:
        return Distribution("exp", seconds(parts[0], flag))
    if kind == "normal" and len(parts) == 2:
        return Distribution("normal", seconds(parts[0], flag), seconds(parts[1], flag))
    raise UsageError(
        flag,
        f"expected 2s, lognormal:MEDIAN,SIGMA, uniform:LOW,HIGH, exp:MEAN or normal:MEAN,STDDEV; got {text!r}",
    )
