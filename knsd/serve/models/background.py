"""Work kept off the start-up path, done on one low-priority thread once the server is ready:
A1111's sha256 of the checkpoint, then keeping the converted weights for later starts (`converted.save`).

The converted weights written are the served modules' own tensors. A LoRA merged in place would leak into
the file, so the write is checked against the LoRA patcher: it starts only when no LoRA is merged, and is
thrown away and tried again later when one was merged while it ran.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.serve.models import converted
from knsd.serve.models.hashes import file_sha256

log = logging.getLogger("knsd.serve")
NICE = 10  # below the request path, above nothing: it must finish on a busy node too
RETRY_SECONDS = 30.0
ATTEMPTS = 5


@dataclass(slots=True)
class PendingConversion:
    """Converted weights to keep once the server is ready: identity, tensors and file metadata."""

    identity: converted.Identity
    tensors: dict[str, Any]
    metadata: dict[str, str]


# () -> (weights patched right now, count of patch operations so far)
PatchState = Callable[[], tuple[bool, int]]


def _lower_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


def save_unpatched(
    pending: PendingConversion,
    cache: Path,
    max_bytes: int,
    patch_state: PatchState,
    retry_seconds: float = RETRY_SECONDS,
) -> Path | None:
    """Write the converted file while no LoRA is merged into the weights; retried a few times."""
    for _ in range(ATTEMPTS):
        patched, before = patch_state()
        if not patched:
            path = converted.save(pending.identity, pending.tensors, pending.metadata, cache, max_bytes)
            if path is None or patch_state() == (False, before):
                return path
            with contextlib.suppress(OSError):  # a LoRA was merged meanwhile: the file may hold it
                path.unlink()
        time.sleep(retry_seconds)
    log.info("gave up keeping the converted weights: LoRA requests kept the weights patched")
    return None


class AfterReady:
    """The hash and the converted file of one loaded model, computed on a background thread."""

    def __init__(
        self,
        hash_path: Path | None,
        cache: Path,
        sha256: str | None,
        pending: PendingConversion | None,
        max_bytes: int,
    ) -> None:
        self.hash_path, self.cache, self.sha256 = hash_path, cache, sha256
        self.pending, self.max_bytes = pending, max_bytes
        self.patch_state: PatchState = lambda: (False, 0)
        self.saved: Path | None = None
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the work (once); returns at once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="knsd-after-ready", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Start the work if needed and wait for it; True when it finished."""
        self.start()
        return self.done.wait(timeout)

    def _run(self) -> None:
        _lower_priority()
        try:
            if self.sha256 is None and self.hash_path is not None:
                started = time.perf_counter()
                self.sha256 = file_sha256(self.hash_path, self.cache)
                log.info(
                    "sha256 of %s: %s (%.1fs)",
                    self.hash_path.name,
                    self.sha256[:10],
                    time.perf_counter() - started,
                )
            pending, self.pending = self.pending, None  # the tensors are released once written
            if pending is not None:
                if self.sha256 is not None:
                    pending.metadata["knsd.sha256"] = self.sha256
                started = time.perf_counter()
                self.saved = save_unpatched(pending, self.cache, self.max_bytes, self.patch_state)
                if self.saved is not None:
                    log.info("kept the converted weights in %s (%.1fs): later starts load them as they are",
                             self.saved, time.perf_counter() - started)  # fmt: skip
        except Exception as exc:  # best effort: the server serves either way
            log.warning("background work after start-up failed: %s", exc)
        finally:
            self.done.set()
