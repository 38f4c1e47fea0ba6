"""Start-up phases (imports, read, convert, build, to device, warm-up, ready), timed from process start.

Phases overlap (the file is read on one thread while the main thread imports torch), so each phase keeps
the seconds it took in total and when it first began and last ended, counted from the moment the process
was spawned (Linux: its start time in /proc; elsewhere: when this module was imported).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass


def process_start() -> float:
    """The process's start on the `time.monotonic()` clock (spawn, before the interpreter ran)."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of proc(5), counted after the command name
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        age = since_boot - ticks / os.sysconf("SC_CLK_TCK")
        if 0 <= age < 3600:
            return time.monotonic() - age
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return _IMPORTED


_IMPORTED = time.monotonic()


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase: total seconds spent in it, and the span it covered since process start."""

    seconds: float
    began: float
    ended: float


class Timeline:
    """Thread-safe record of start-up phases; `origin` is the process start on the monotonic clock."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = process_start() if origin is None else origin
        self._lock = threading.Lock()
        self._phases: dict[str, Phase] = {}

    def now(self) -> float:
        """Seconds since the process started."""
        return time.monotonic() - self.origin

    def add(self, name: str, began: float, ended: float) -> None:
        """Record `ended - began` seconds of phase `name` (times since process start)."""
        with self._lock:
            old = self._phases.get(name)
            if old is None:
                self._phases[name] = Phase(ended - began, began, ended)
            else:
                self._phases[name] = Phase(
                    old.seconds + ended - began, min(old.began, began), max(old.ended, ended)
                )

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as (part of) phase `name`."""
        began = self.now()
        try:
            yield
        finally:
            self.add(name, began, self.now())

    def mark(self, name: str) -> None:
        """A moment rather than a span (e.g. "ready"): a zero-length phase ending now."""
        moment = self.now()
        self.add(name, moment, moment)

    def phases(self) -> dict[str, Phase]:
        """The phases recorded so far, in the order they first began."""
        with self._lock:
            return dict(sorted(self._phases.items(), key=lambda item: item[1].began))
