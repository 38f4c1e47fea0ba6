"""Converted single files: a checkpoint's weights in diffusers' layout and the served dtype, kept on disk.

Converting an original-layout checkpoint (key renames, the cast to the served dtype) is done once; the result
is written, after the server is ready, as a safetensors file that later starts map straight into the
modules (`weights.MappedSafetensors`): no conversion, no cast, no copy. It goes beside the model in a
`.knsd/` folder when that folder can be written (every pod on the volume profits), else in the knsd cache
(`$KNSD_CACHE/converted`, bounded in bytes: least recently used files are evicted). A file is found again by
the checkpoint's identity: its resolved path, size, mtime and header digest, the served dtype, the config
it was built with and this module's FORMAT.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.serve.models.weights import MappedSafetensors, write_safetensors

log = logging.getLogger("knsd.serve")
FORMAT = "1"  # bump when what a converted file holds changes
BESIDE = ".knsd"
SUFFIX = ".converted.safetensors"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a converted file must match: the source checkpoint, the served dtype, the config."""

    path: Path
    size: int
    mtime_ns: int
    header: str  # digest of the source's header (names, shapes, offsets)
    dtype: str
    config: str  # the config folder's tag (name and fingerprint)

    @property
    def key(self) -> str:
        fields = [FORMAT, str(self.path), self.size, self.mtime_ns, self.header, self.dtype, self.config]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:20]

    @property
    def series(self) -> str:
        """The start of the file name every conversion of this checkpoint (at this path, in this dtype) shares."""
        place = hashlib.sha256(str(self.path).encode()).hexdigest()[:8]
        return f"{self.path.stem}.{self.dtype}.{place}"

    def filename(self) -> str:
        return f"{self.series}.{self.key}{SUFFIX}"


def identity(source: MappedSafetensors, dtype: str, config: str) -> Identity:
    """The identity of `source` served in `dtype` with the config tagged `config`."""
    return Identity(source.path.resolve(), source.size, source.mtime_ns, source.header_digest, dtype, config)


def locations(source: Path, cache: Path) -> list[Path]:
    """Where converted files of `source` may be: beside it first, then the knsd cache."""
    return [source.resolve().parent / BESIDE, cache / "converted"]


def find(ident: Identity, cache: Path) -> Path | None:
    """The converted file for `ident`, if one was written and is complete."""
    for folder in locations(ident.path, cache):
        path = folder / ident.filename()
        if path.is_file():
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: last to be evicted
            return path
    return None


def save(
    ident: Identity, tensors: dict[str, Any], metadata: dict[str, str], cache: Path, max_bytes: int
) -> Path | None:
    """Write the converted file (beside the source, else in the cache); None when it does not fit."""
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size > max_bytes:
        log.info(
            "not keeping the converted weights: %.1f GB is over the limit of %.1f GB",
            size / 1e9,
            max_bytes / 1e9,
        )
        return None
    meta = {**metadata, "knsd.format": FORMAT, "knsd.key": ident.key, "knsd.dtype": ident.dtype}
    beside, in_cache = locations(ident.path, cache)
    for folder in (beside, in_cache):
        if folder == in_cache:
            _evict(folder, max_bytes - size)
        target = folder / ident.filename()
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_safetensors(tmp, tensors, meta)
            os.replace(tmp, target)
        except OSError as exc:  # a read-only model volume, a full disk: try the next place
            log.info("cannot keep the converted weights in %s: %s", folder, exc.strerror or exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            continue
        _remove_stale(folder, ident, target)
        return target
    return None


def _remove_stale(folder: Path, ident: Identity, keep: Path) -> None:
    """Older conversions of the same checkpoint and dtype (the file or the config changed since)."""
    for other in folder.glob(f"{ident.series}.*{SUFFIX}"):
        if other != keep:
            with contextlib.suppress(OSError):
                other.unlink()


def _evict(folder: Path, room: int) -> None:
    """Delete least recently used converted files until the rest take at most `room` bytes."""
    try:
        files = sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return
    total = sum(p.stat().st_size for p in files)
    for path in files:
        if total <= room:
            break
        with contextlib.suppress(OSError):
            total -= path.stat().st_size
            path.unlink()
            log.info("evicted converted weights %s", path.name)
