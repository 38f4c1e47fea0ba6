"""A1111's checkpoint hash: the full-file sha256, cached by path, size and mtime like A1111's cache.json.

Hashing a 2-7 GB file takes seconds of CPU, so it is never on the start-up path: `known_sha256` answers from
the cache at once, and `file_sha256` runs on a low-priority thread after the server is ready.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_BLOCK = 1 << 20  # A1111 reads 1 MiB blocks
_LOCK = threading.Lock()


def _store(cache: Path | None) -> Path | None:
    return cache / "hashes.json" if cache is not None else None


def _key(path: Path) -> tuple[str, list[int]]:
    stat = path.stat()
    return str(path.resolve()), [stat.st_size, stat.st_mtime_ns]


def _read(store: Path | None) -> dict[str, list[object]]:
    if store is None or not store.is_file():
        return {}
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def known_sha256(path: Path, cache: Path | None) -> str | None:
    """The cached sha256 of `path` when the file is unchanged since it was hashed, else None (no hashing)."""
    key, stamp = _key(path)
    entry = _read(_store(cache)).get(key)
    if isinstance(entry, list) and entry[:2] == stamp and len(entry) == 3:
        return str(entry[2])
    return None


def remember_sha256(path: Path, cache: Path | None, sha: str) -> None:
    """Record the sha256 of `path` (as it is now) in the cache."""
    store = _store(cache)
    if store is None:
        return
    key, stamp = _key(path)
    with _LOCK:
        known = _read(store)
        known[key] = [*stamp, sha]
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, store)


def file_sha256(path: Path, cache: Path | None = None) -> str:
    """SHA-256 of the whole file (what `sha256sum` prints), reused from `cache/hashes.json` when unchanged."""
    found = known_sha256(path, cache)
    if found is not None:
        return found
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    sha = digest.hexdigest()
    remember_sha256(path, cache, sha)
    return sha
