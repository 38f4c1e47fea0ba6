"""Helpers for hostile-input tests: a probe that keeps asking `/healthz`, the server's memory, raw clients."""

from __future__ import annotations

import base64
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

HEALTH_LIMIT = 1.0  # seconds: a Knative readiness/liveness probe's default timeout is 1 s


@dataclass
class HealthWatch:
    """What a concurrent client saw of `/healthz`: the slowest answer and any failure."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=0.0)

    def check(self) -> None:
        """Fail unless every probe answered 200 within HEALTH_LIMIT."""
        assert self.latencies, "the health probe never ran"
        assert not self.failures, self.failures[:3]
        assert self.slowest < HEALTH_LIMIT, f"/healthz took {self.slowest:.2f} s"


@contextmanager
def health_watched(url: str, interval: float = 0.1) -> Iterator[HealthWatch]:
    """Ask `url`/healthz every `interval` s on a fresh connection while the block runs; check on exit."""
    watch = HealthWatch()
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            try:
                r = httpx.get(url + "/healthz", timeout=HEALTH_LIMIT * 5)
                if r.status_code != 200:
                    watch.failures.append(f"/healthz {r.status_code}")
            except httpx.HTTPError as exc:
                watch.failures.append(f"/healthz {type(exc).__name__}")
            watch.latencies.append(time.perf_counter() - started)
            done.wait(interval)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        done.set()
        thread.join(30)
    watch.check()


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` (VmRSS from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match.group(1)) * 1024


def metric(url: str, name: str) -> float:
    """One sample of the server's /metrics, by its full name with labels (0 when absent)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


def hold_request(
    url: str, path: str, body: Any, missing: int = 0, headers: dict[str, str] | None = None
) -> socket.socket:
    """Send a JSON POST on a raw connection and return it unread: closing it is a client going away.
    With `missing`, the body is that many bytes short of its Content-Length (an upload cut off)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(data) + missing}\r\n\r\n"
    )
    conn = socket.create_connection((host, port))
    conn.sendall(head.encode() + data)
    return conn


def png_bomb(width: int, height: int, rows: int | None = None) -> str:
    """A grayscale PNG of `width` x `height` zeros, compressed as it is written (never held decoded):
    64 MP cost a few dozen KB. `rows` writes only that many (a truncated file with a true header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte 0, then the row's zeros
    data = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()
