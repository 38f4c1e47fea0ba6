"""Where knsd keeps its cache (the tiny models, local runtime state, hashes), and a clear error when it
cannot take writes (a full disk, a read-only or foreign folder)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from knsd.errors import KnsdError


def cache_dir() -> Path:
    """`$KNSD_CACHE`, else `$XDG_CACHE_HOME/knsd`, else `~/.cache/knsd`."""
    explicit = os.environ.get("KNSD_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "knsd"


REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "it is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}
PROBE_BYTES = 64 * 1024  # a state file or a log line must fit; a full disk fails here, not half-way


class CacheError(KnsdError):
    """The knsd cache directory cannot be written."""


def cache_error(path: Path, exc: OSError) -> CacheError:
    """The error for an OSError met while writing under `path`."""
    reason = REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return CacheError(
        f"cannot write to the knsd cache directory {path}: {reason} ([Errno {exc.errno}] {exc.strerror}); "
        "free some space or set KNSD_CACHE to a writable folder"
    )


def check_writable(path: Path) -> None:
    """Create `path` if needed and write (and remove) a small probe file; CacheError naming it if not."""
    probe = path / f".knsd-write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as out:
            out.write(b"\0" * PROBE_BYTES)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise cache_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def build_once(target: Path, build: Callable[[Path], None], cache: Path) -> Path:
    """Build a folder into the cache unless it is there (it has a model_index.json); return it.

    The build goes to a staging folder beside `target` and is renamed into place: a concurrent builder
    either wins or finds it done. A full or read-only cache is a CacheError naming `cache`.
    """
    if (target / "model_index.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise cache_error(cache, exc) from None
    try:
        try:
            build(staging)
        except OSError as exc:  # a disk that fills up while the files are written
            raise cache_error(cache, exc) from None
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
