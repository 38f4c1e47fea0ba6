"""Where a model comes from: `--model tiny|tiny-sdxl|tiny-sd3|FOLDER|FILE` (no torch imported here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from knsd.errors import ModelError
from knsd.serve.models.tiny import TINY_NAMES, ensure_tiny_model

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model comes from: `kind` is "folder" or "single_file"."""

    kind: str
    path: Path
    name: str


def _volume_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SINGLE_FILE_SUFFIXES)


def single_file_of(model: str) -> Path | None:
    """The checkpoint file `--model` names (itself, or the one file of a model volume), else None."""
    if model in TINY_NAMES:
        return None
    path = Path(model).expanduser()
    try:
        if path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            return path
        if path.is_dir() and not (path / "model_index.json").is_file():
            files = _volume_files(path)
            return files[0] if len(files) == 1 else None
    except OSError:
        return None
    return None


def resolve_source(model: str, cache: Path) -> ModelSource:
    """Turn `--model tiny|tiny-sdxl|tiny-sd3|PATH` into a source; a missing or unrecognised path is a ModelError."""
    if model in TINY_NAMES:
        return ModelSource("folder", ensure_tiny_model(cache, model), "tiny-sd" if model == "tiny" else model)
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return ModelSource("folder", path, path.name)
        # A model volume holding one checkpoint file (e.g. /models/v1-5-pruned-emaonly.safetensors).
        files = _volume_files(path)
        if len(files) == 1:
            return ModelSource("single_file", files[0], files[0].stem)
        found = ", ".join(p.name for p in files) or "none"
        raise ModelError(
            f"{path} has no model_index.json and not exactly one .safetensors/.ckpt file (found: {found}); "
            "pass --model with the folder of a diffusers model or the checkpoint file itself"
        )
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelError(f"{path}: a single-file checkpoint must end in .safetensors or .ckpt")
        return ModelSource("single_file", path, path.stem)
    raise ModelError(
        f"model {model!r} not found: expected {', '.join(TINY_NAMES)}, a diffusers folder or a .safetensors file"
    )
