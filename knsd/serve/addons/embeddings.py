"""Textual-inversion embeddings from `--embeddings-dir`: trigger word = file stem (A1111).

Loaded the way diffusers' `load_textual_inversion` does it: the word (and `word_1` … for more vectors) is
added to the tokenizer and its vectors to the text encoder's token table, so every tokenizer-based
conditioning path sees it; diffusers' `maybe_convert_prompt` expands `word` to `word word_1 …`.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.serve.addons.files import EMBEDDING_SUFFIXES, AddonFile, file_sha256, scan
from knsd.serve.addons.lora import read_state_dict

log = logging.getLogger("knsd.serve")


@dataclass(frozen=True, slots=True)
class Embedding:
    """One embedding file as A1111 lists it; `vectors` per text encoder (clip_l first)."""

    item: AddonFile
    shape: int
    vectors: int
    step: int | None
    loaded: bool

    def api(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": self.shape,
            "vectors": self.vectors,
        }


def embedding_tensors(state: dict[str, Any]) -> list[Any]:
    """The vectors (n x width) per text encoder, from A1111, SDXL (`clip_l`/`clip_g`) or diffusers files."""
    if "clip_l" in state and "clip_g" in state:
        return [state["clip_l"], state["clip_g"]]
    if "emb_params" in state:
        return [state["emb_params"]]
    params = state.get("string_to_param")
    if isinstance(params, dict) and len(params) == 1:
        return [next(iter(params.values()))]
    tensors = [v for v in state.values() if hasattr(v, "shape")]
    if len(tensors) == 1:
        return tensors  # a diffusers "concept" file: {token: vector}
    raise ValueError("neither a textual inversion embedding nor a diffusers concept")


def _read(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".safetensors":
        return read_state_dict(path)
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError("not a dict")
    return data


def token_names(name: str, count: int) -> list[str]:
    return [name, *(f"{name}_{i}" for i in range(1, count))]


class EmbeddingStore:
    """The embeddings of one folder, installed into a pipeline's tokenizers and text encoders."""

    def __init__(self, folder: Path, tokenizers: list[Any], text_encoders: list[Any]) -> None:
        self.folder = folder
        self._pairs = list(zip(tokenizers, text_encoders, strict=False))
        self.loaded: dict[str, Embedding] = {}
        self.skipped: dict[str, Embedding] = {}
        self._hashes: dict[tuple[str, float, int], str] = {}
        self._pending: dict[str, list[Any]] = {}
        self._mtime: float | None = None
        # refresh-embeddings runs on the event loop, install on the pipeline thread
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read new and changed files (a width unlike the model's is skipped); `install` puts them in."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        found = scan(self.folder, EMBEDDING_SUFFIXES)
        try:
            self._mtime = self.folder.stat().st_mtime
        except OSError:
            self._mtime = None
        loaded: dict[str, Embedding] = {}
        skipped: dict[str, Embedding] = {}
        widths = [enc.get_input_embeddings().weight.shape[1] for _, enc in self._pairs]
        for name, item in found.items():
            old = self.loaded.get(name)
            if old is not None and old.item.key == item.key:
                loaded[name] = old
                continue
            try:
                raw = embedding_tensors(_read(item.path))
                tensors = [t.detach().float().reshape(-1, t.shape[-1]) for t in raw]
            except (ValueError, OSError, RuntimeError) as exc:
                log.warning("embedding %s: cannot read %s: %s", name, item.path, exc)
                continue
            shape = sum(t.shape[1] for t in tensors)
            fits = len(tensors) == len(self._pairs) and [t.shape[1] for t in tensors] == widths
            emb = Embedding(item, shape, tensors[0].shape[0], None, fits)
            if not fits:
                skipped[name] = emb
                continue
            loaded[name] = emb
            self._pending[name] = tensors
        self.loaded = dict(sorted(loaded.items(), key=lambda kv: kv[0].lower()))
        self.skipped = skipped

    def changed(self) -> bool:
        """Whether the folder's mtime moved since the last scan (A1111 re-reads then)."""
        try:
            return self.folder.stat().st_mtime != self._mtime
        except OSError:
            return self._mtime is not None

    def install(self) -> None:
        """Put the vectors read by `refresh` into the tokenizers and text encoders (pipeline thread only)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for name, tensors in pending.items():
            for (tokenizer, encoder), vectors in zip(self._pairs, tensors, strict=True):
                self._install(name, tokenizer, encoder, vectors)

    @staticmethod
    def _install(name: str, tokenizer: Any, encoder: Any, vectors: Any) -> None:
        import torch

        tokens = token_names(name, vectors.shape[0])
        tokenizer.add_tokens([t for t in tokens if t not in tokenizer.get_vocab()])
        if len(tokenizer) > encoder.get_input_embeddings().weight.shape[0]:
            encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        table = encoder.get_input_embeddings().weight
        ids = tokenizer.convert_tokens_to_ids(tokens)
        with torch.no_grad():
            table[ids] = vectors.to(device=table.device, dtype=table.dtype)

    def used(self, texts: list[str]) -> list[str]:
        """Names of loaded embeddings that occur in any of `texts` (case-insensitive, as CLIP lowercases)."""
        joined = "\n".join(texts).lower()
        return [n for n in self.loaded if re.search(rf"(?<![\w-]){re.escape(n.lower())}(?![\w-])", joined)]

    def shorthash(self, name: str) -> str:
        """A1111's `TI hashes` value: SHA-256 of the whole file, 12 hex digits."""
        item = self.loaded[name].item
        if item.key not in self._hashes:
            self._hashes[item.key] = file_sha256(item.path)[:12]
        return self._hashes[item.key]

    def expand(self, text: str) -> str:
        """`name` -> `name name_1 …` for multi-vector embeddings (diffusers' `maybe_convert_prompt`)."""
        for name, emb in self.loaded.items():
            if emb.vectors > 1:
                pattern = rf"(?<![\w-]){re.escape(name)}(?![\w-])"
                text = re.sub(pattern, " ".join(token_names(name, emb.vectors)), text, flags=re.IGNORECASE)
        return text
