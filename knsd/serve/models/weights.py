"""Safetensors files through a private memory map: tensors are views of the file's pages, never a copy.

Reading a 2-7 GB checkpoint with `read()` copies every byte once into the process, and casting or
converting it copies it again. Here the file is mapped copy-on-write (`MAP_PRIVATE`): a tensor is a view of
the page cache, shared by every process on the node that maps the same file, and a write (a LoRA merged in
place) copies only the pages it touches. `populate` faults the pages in ahead of use on a background thread
(`MADV_POPULATE_READ`, or plain reads where the kernel lacks it) while the main thread imports torch.

Nothing here imports torch at module level: the map is opened and populated before torch is imported.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.errors import ModelError

MAX_HEADER = 100 << 20  # real headers are a few MB at most
# safetensors dtype names -> torch attribute names
DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}  # fmt: skip
NAMES = {v: k for k, v in DTYPES.items()}
_MADV_POPULATE_READ = 22  # Linux >= 5.14; Python < 3.13 lacks the constant
_CHUNK = 256 << 20


@dataclass(frozen=True, slots=True)
class Entry:
    """One tensor of the file: dtype (safetensors name), shape and byte range in the data section."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class MappedSafetensors:
    """A safetensors file mapped copy-on-write; `tensors()` returns views of its pages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as fh:
                stat = os.fstat(fh.fileno())
                self.size = stat.st_size
                self.mtime_ns = stat.st_mtime_ns
                self._map = mmap.mmap(fh.fileno(), self.size, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            raise ModelError(f"{path}: cannot map the file ({exc})") from exc
        self.header_bytes, self.entries, self.metadata = _parse(path, self._map, self.size)
        self._base = 8 + len(self.header_bytes)

    @property
    def header_digest(self) -> str:
        """sha256 of the JSON header: the tensors' names, dtypes, shapes and offsets (not their values)."""
        return hashlib.sha256(self.header_bytes).hexdigest()

    def populate(self) -> None:
        """Fault every page in now (blocking; call it on a thread): later reads of the weights never wait."""
        view = memoryview(self._map)
        try:
            address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        except TypeError:
            address = 0
        libc = _libc()
        for offset in range(0, self.size, _CHUNK):
            length = min(_CHUNK, self.size - offset)
            # ctypes releases the GIL for the call: the main thread keeps importing meanwhile.
            if (
                address
                and libc is not None
                and libc.madvise(address + offset, length, _MADV_POPULATE_READ) == 0
            ):
                continue
            _touch(view[offset : offset + length])
        del view

    def tensors(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Tensors viewing the map (no copy); misaligned ones (files from other writers) are copied."""
        import torch

        data = torch.frombuffer(self._map, dtype=torch.uint8)
        out: dict[str, Any] = {}
        for name in self.entries if names is None else names:
            e = self.entries[name]
            raw = data[self._base + e.start : self._base + e.end]
            dtype = getattr(torch, DTYPES[e.dtype])
            try:
                out[name] = raw.view(dtype).reshape(e.shape)
            except RuntimeError:  # an offset not a multiple of the element size
                out[name] = raw.clone().view(dtype).reshape(e.shape)
        return out

    def cast(self, names: Iterable[str], dtype: Any, chunk_bytes: int = 64 << 20) -> dict[str, Any]:
        """The named tensors in `dtype`: floating ones of another dtype cast in runs of neighbours (one op
        per run of up to `chunk_bytes` source bytes rather than one per tensor, so a thread casting beside
        an importing one waits for the GIL a few dozen times, not a thousand), the others as views."""
        import torch

        wanted = set(names)
        views = self.tensors(wanted)
        out: dict[str, Any] = {}
        run: list[str] = []

        def flush() -> None:
            if not run:
                return
            first, last = self.entries[run[0]], self.entries[run[-1]]
            source = getattr(torch, DTYPES[first.dtype])
            raw = torch.frombuffer(self._map, dtype=torch.uint8)[
                self._base + first.start : self._base + last.end
            ]
            try:
                cast = raw.view(source).to(dtype)
            except RuntimeError:  # misaligned: per tensor
                out.update({n: views[n].to(dtype) for n in run})
                run.clear()
                return
            offset = 0
            for n in run:
                numel = views[n].numel()
                out[n] = cast[offset : offset + numel].view(views[n].shape)
                offset += numel
            run.clear()

        for name in sorted(wanted, key=lambda n: self.entries[n].start):
            entry, tensor = self.entries[name], views[name]
            if not tensor.is_floating_point() or tensor.dtype == dtype:
                out[name] = tensor
                continue
            if run:
                prev, head = self.entries[run[-1]], self.entries[run[0]]
                if (
                    prev.end != entry.start
                    or prev.dtype != entry.dtype
                    or entry.end - head.start > chunk_bytes
                ):
                    flush()
            run.append(name)
        flush()
        return out


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def _touch(view: memoryview) -> None:
    """Read one byte per page (slicing a memoryview is free; bytes() copies 1 of every 4096 bytes)."""
    bytes(view[::4096])


def _parse(path: Path, data: mmap.mmap, size: int) -> tuple[bytes, dict[str, Entry], dict[str, str]]:
    if size < 8:
        raise ModelError(f"{path}: not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER or 8 + length > size:
        raise ModelError(f"{path}: not a safetensors file (header length {length})")
    header_bytes = bytes(data[8 : 8 + length])
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise ModelError(f"{path}: not a safetensors file (header is not JSON: {exc})") from exc
    metadata = header.pop("__metadata__", None) or {}
    room = size - 8 - length
    entries: dict[str, Entry] = {}
    for name, spec in header.items():
        try:
            start, end = (int(x) for x in spec["data_offsets"])
            entry = Entry(str(spec["dtype"]), tuple(int(x) for x in spec["shape"]), start, end)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: tensor {name!r} has a malformed header entry") from exc
        if entry.dtype not in DTYPES or not 0 <= start <= end <= room:
            raise ModelError(f"{path}: tensor {name!r} has an unknown dtype or lies outside the file")
        entries[name] = entry
    return header_bytes, entries, {str(k): str(v) for k, v in metadata.items()}


def write_safetensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write `tensors` (CPU, any dtype) as a safetensors file, streaming each tensor's bytes (no copy of
    the whole state in memory), larger elements first so every offset stays aligned for `tensors()`."""
    import torch

    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {
            "dtype": NAMES[str(t.dtype).removeprefix("torch.")],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for name in order:
            t = tensors[name].detach()
            if t.device.type != "cpu":
                t = t.cpu()
            flat = t.contiguous().reshape(-1)
            out.write(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
        out.flush()
        os.fsync(out.fileno())
