"""Reading a single-file checkpoint while the heavy imports run.

`Prefetch(...).start()` is called by `knsd serve` before torch is imported. On a thread it maps the file
(the converted file when one was kept for it, see `converted`), faults its pages in, then waits for torch
(imported by the main thread meanwhile) and hands over tensors already in the served dtype: views of the
converted file, or the original tensors cast on this thread while diffusers and transformers import on
the other core. The loader takes them with `result()`; anything unexpected here only costs the head
start: `result()` then gives None and the loader reads the file itself.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.serve.models import converted
from knsd.serve.models.families.detect import T5_KEY, Detected, detect
from knsd.serve.models.source import single_file_of
from knsd.serve.models.weights import MappedSafetensors
from knsd.serve.timeline import Timeline

log = logging.getLogger("knsd.serve")


@dataclass(slots=True)
class Prepared:
    """A single file's tensors in the served dtype: `converted` (diffusers layout) or original keys."""

    path: Path
    kind: str  # "converted" or "original"
    tensors: dict[str, Any]
    detected: Detected | None  # None with --model-config (the config folder decides)
    dtype: str
    identity: converted.Identity | None  # None when converted files are off
    source: MappedSafetensors
    sha256: str | None = None  # the source's, as recorded in its converted file


def guess_device(device: str) -> str:
    """The device before torch is imported: `auto` is CUDA when the NVIDIA driver is loaded."""
    if device != "auto":
        return device
    return "cuda" if os.path.exists("/proc/driver/nvidia/version") else "cpu"


def served_dtype(dtype: str, device: str) -> str:
    """`auto` is float16 on CUDA and float32 on CPU (as `loader.resolve_dtype`)."""
    if dtype != "auto":
        return dtype
    return "float16" if device == "cuda" else "float32"


def config_tag(detected: Detected | None, config: Path | None) -> str:
    """Names the config a conversion was made with, so another config never reuses it."""
    import hashlib

    if config is not None:
        digest = hashlib.sha256()
        for path in sorted(config.rglob("*.json")):
            digest.update(path.name.encode() + path.read_bytes())
        return f"custom-{digest.hexdigest()[:12]}"
    assert detected is not None
    from knsd.serve.models.tiny import BUILDERS

    if detected.variant in BUILDERS:
        return BUILDERS[detected.variant][0]
    from knsd.serve.models.families.standard import fingerprint

    return f"{detected.variant}-{fingerprint(detected.variant)}"


class Prefetch:
    """The head start on one model's weights; `start()` it early, `result()` it in the loader."""

    def __init__(
        self,
        model: str,
        cache: Path,
        device: str = "auto",
        dtype: str = "auto",
        config: Path | None = None,
        keep_converted: bool = True,
        timeline: Timeline | None = None,
    ) -> None:
        self.model, self.cache, self.device, self.dtype = model, cache, device, dtype
        self.config, self.keep_converted = config, keep_converted
        self.timeline = timeline or Timeline()
        self._result: Prepared | None = None
        self._thread = threading.Thread(target=self._run, name="knsd-prefetch", daemon=True)

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def result(self) -> Prepared | None:
        """The prepared tensors (waits for the thread), or None when there is no head start to give."""
        if self._thread.ident is None:
            self._thread.start()
        self._thread.join()
        return self._result

    def _run(self) -> None:
        try:
            self._result = self._prepare()
        except Exception as exc:  # the loader reads the file itself and reports any real problem
            log.debug("prefetch of %s skipped: %s", self.model, exc)

    def _identity(self, source: MappedSafetensors, detected: Detected | None, dtype: str) -> Any:
        if not self.keep_converted:
            return None
        return converted.identity(source, dtype, config_tag(detected, self.config))

    def _prepare(self) -> Prepared | None:
        path = single_file_of(self.model)
        if path is None or path.suffix.lower() != ".safetensors":
            return None
        began = self.timeline.now()
        source = MappedSafetensors(path)
        shapes = {name: entry.shape for name, entry in source.entries.items()}
        detected = None if self.config is not None else detect(path, shapes)
        if detected is None and self.config is not None:
            detected = Detected(_family_of_config(self.config), "custom", has_t5=T5_KEY in shapes)
        dtype = served_dtype(self.dtype, guess_device(self.device))
        ident = self._identity(source, detected, dtype)
        kept = converted.find(ident, self.cache) if ident is not None else None
        mapped = MappedSafetensors(kept) if kept is not None else source
        mapped.populate()
        self.timeline.add("read", began, self.timeline.now())
        import torch

        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda":  # the CUDA context takes seconds to create: here, beside the imports
            with self.timeline.phase("cuda init"):
                torch.cuda.init()  # type: ignore[no-untyped-call]
        if served_dtype(self.dtype, device) != dtype:  # the guess was wrong: start over in the right dtype
            dtype = served_dtype(self.dtype, device)
            ident = self._identity(source, detected, dtype)
            kept = converted.find(ident, self.cache) if ident is not None else None
            mapped = MappedSafetensors(kept) if kept is not None else source
        if kept is not None and ident is not None and mapped.metadata.get("knsd.key") == ident.key:
            sha = mapped.metadata.get("knsd.sha256")
            return Prepared(path, "converted", mapped.tensors(), detected, dtype, ident, source, sha)
        with self.timeline.phase("convert"):
            from knsd.serve.models.singlefile import wanted_names

            # One thread: the main thread is importing on the other core (an OpenMP team of two here would
            # take that core from it). The setting is this thread's own.
            torch.set_num_threads(1)
            tensors = source.cast(wanted_names(source.entries), getattr(torch, dtype))
        return Prepared(path, "original", tensors, detected, dtype, ident, source)


def _family_of_config(config: Path) -> Any:
    from knsd.serve.models.families.pipelines import folder_family

    return folder_family(config)
