"""Files of the local runtime under the knsd cache: state, pid and logs, one folder per service.

They hold the spec (its environment may carry tokens) and the control token, so the folder is created
0700 and every file in it 0600 from the moment it exists (never chmod-ed after being written).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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

    def ensure(self) -> Path:
        """The folder, made owner-only (0700); a folder left by an older knsd is tightened."""
        private_dir(self.root.parent)
        return private_dir(self.root)

    def write_state(self, state: dict[str, Any]) -> None:
        self.ensure()
        fd, tmp = tempfile.mkstemp(prefix="state.", suffix=".tmp", dir=self.root)  # 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(state, indent=2))
            os.replace(tmp, self.state_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def write_pid(self) -> None:
        self.ensure()
        with open_private(self.pid_file, "w") as out:
            out.write(str(os.getpid()))

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


def private_dir(path: Path) -> Path:
    """`path` created 0700 (its missing parents as usual); an existing one is made owner-only too."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def open_private(path: Path, mode: str = "ab") -> IO[Any]:
    """Open `path` for writing ("w", "wb", "a" or "ab"), created 0600 (an existing file is made 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, mode)


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
