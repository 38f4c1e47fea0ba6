"""Add-on folders on the model volume: discovery by file stem, A1111's hashes, safetensors metadata."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
CONTROLNET_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True, slots=True)
class AddonFile:
    """One add-on on disk: `name` is the file stem (A1111: the subfolder is not part of the name)."""

    name: str
    path: Path
    mtime: float
    size: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, float, int]:
        """Identity for caches: a changed file (mtime or size) is a new entry."""
        return (str(self.path), self.mtime, self.size)


@dataclass(frozen=True, slots=True)
class Folders:
    """Where `knsd serve` looks for add-ons (A1111: `models/Lora`, `models/ControlNet`, `embeddings`)."""

    lora: Path
    controlnet: Path
    embeddings: Path
    annotators: Path | None = None  # ControlNet preprocessors' weights (`<annotator>/<file>`)

    @property
    def annotator_dir(self) -> Path:
        """Where the ControlNet preprocessors' weights are; by default `annotator/downloads` beside
        `ControlNet/` (the extension keeps them in its own `annotator/downloads`)."""
        return self.annotators or self.controlnet.parent / "annotator" / "downloads"


def default_folders(model_path: Path) -> Folders:
    """`Lora/`, `ControlNet/`, `embeddings/`, `annotator/downloads/` next to the model (the folder holding
    the checkpoint)."""
    base = model_path.parent
    return Folders(base / "Lora", base / "ControlNet", base / "embeddings", base / "annotator" / "downloads")


def _natural_key(path: Path) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", str(path))]


def walk(folder: Path, suffixes: tuple[str, ...], dirs_too: bool = False) -> list[Path]:
    """Files under `folder` (recursive, symlinks followed, hidden folders skipped), natural order.

    With `dirs_too`, a folder holding `config.json` (a diffusers model) is returned as one entry.
    """
    found: list[Path] = []
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        here = Path(root)
        if dirs_too and here != folder and "config.json" in files:
            found.append(here)
            dirs[:] = []
            continue
        found.extend(here / f for f in files if f.lower().endswith(suffixes) and not f.startswith("."))
    return sorted(found, key=_natural_key)


def scan(folder: Path, suffixes: tuple[str, ...], dirs_too: bool = False) -> dict[str, AddonFile]:
    """Name -> file for every add-on under `folder`; a later file with the same stem wins (as A1111)."""
    result: dict[str, AddonFile] = {}
    for path in walk(folder, suffixes, dirs_too):
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file() and st.st_size == 0:
            continue
        name = path.name if path.is_dir() else path.stem
        meta = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
        result[name] = AddonFile(name, path, st.st_mtime, st.st_size, meta)
    return result


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            return 0, {}
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(length))
        except (ValueError, UnicodeDecodeError):
            return length, {}
    return length, header if isinstance(header, dict) else {}


def read_metadata(path: Path) -> dict[str, Any]:
    """A safetensors file's `__metadata__`; JSON-looking strings decoded (as A1111's `/sdapi/v1/loras`)."""
    try:
        _, header = _header(path)
    except OSError:
        return {}
    meta = header.get("__metadata__") or {}
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, str) and value.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[key] = value
    return out


def addnet_hash(path: Path) -> str:
    """kohya's / A1111's LoRA hash: SHA-256 of a safetensors file after its header (metadata-proof)."""
    length, _ = _header(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(8 + length)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of the whole file (A1111's hash for `.pt` LoRAs and for embeddings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lora_shorthash(item: AddonFile) -> str:
    """The 12-digit hash in `Lora hashes`: metadata `sshs_model_hash`, else addnet (safetensors), else file."""
    full = item.metadata.get("sshs_model_hash")
    if not isinstance(full, str) or not full:
        full = (
            addnet_hash(item.path) if item.path.suffix.lower() == ".safetensors" else file_sha256(item.path)
        )
    return full[:12]


def legacy_hash(path: Path) -> str:
    """A1111's old model hash (ControlNet names): SHA-256 of 64 KiB at offset 1 MiB, 8 hex digits."""
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        path = weights[0] if weights else path / "config.json"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        chunk = fh.read(0x10000)
        if not chunk:  # A1111 hashes an empty read for small files; keep names distinct instead
            fh.seek(0)
            chunk = fh.read(0x10000)
        digest.update(chunk)
    return digest.hexdigest()[:8]
