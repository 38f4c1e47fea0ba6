"""How often a name that is not installed may rescan its add-on folder: at most once per interval, so a
flood of requests naming unknown LoRAs or ControlNet models costs one folder walk, not one each.
Explicit refreshes (`POST /sdapi/v1/refresh-loras`, ...) always scan."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

RESCAN_INTERVAL = 5.0  # seconds; a file copied onto the volume is found by the next request after it


class Rescans:
    """`due()` is true for the first miss, then at most once per `interval` seconds."""

    def __init__(self, interval: float = RESCAN_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                return False
            self._last = now
            return True
