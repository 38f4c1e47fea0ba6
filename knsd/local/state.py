"""Files of the local runtime under the knsd cache: state, pid and logs, one folder per service."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.cache import cache_dir


@dataclass(frozen=True, slots=True)
class ServiceDir:
    """`<cache>/local/<name>/`: runtime.pid, state.json, runtime.log and pods/*.log."""

    root: Path

    @classmethod
    def for_name(cls, name: str, cache: Path | None = None) -> ServiceDir:
        return cls((cache or cache_dir()) / "local" / name)

    @property
    def pid_file(self) -> Path:
        return self.root / "runtime.pid"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def log_file(self) -> Path:
        return self.root / "runtime.log"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"

    def write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)

    def read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def running_pid(self) -> int | None:
        """The runtime's pid if it is alive; a stale pid file (a crash) is removed."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _is_runtime(pid):
            return pid
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _is_runtime(pid: int) -> bool:
    """Alive, and a knsd local runtime (not a recycled pid of another program)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the signal check
    if b"knsd.local.daemon" not in cmdline:
        return False
    # A zombie (exited, not yet reaped) is not running.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True
