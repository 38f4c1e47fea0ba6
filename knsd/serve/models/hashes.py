"""A1111's checkpoint hash: the full-file sha256, cached by path, size and mtime like A1111's cache.json."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_BLOCK = 1 << 20  # A1111 reads 1 MiB blocks


def file_sha256(path: Path, cache: Path | None = None) -> str:
    """SHA-256 of the whole file (what `sha256sum` prints), reused from `cache/hashes.json` when unchanged."""
    stat = path.stat()
    key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    store = cache / "hashes.json" if cache is not None else None
    known: dict[str, list[object]] = {}
    if store is not None and store.is_file():
        try:
            known = json.loads(store.read_text())
        except ValueError:
            known = {}
    entry = known.get(key)
    if entry is not None and entry[:2] == stamp:
        return str(entry[2])
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    sha = digest.hexdigest()
    if store is not None:
        known[key] = [*stamp, sha]
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, store)
    return sha
