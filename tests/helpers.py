"""Test helpers: real uvicorn servers on loopback, in a thread or as a `knsd serve` subprocess."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

REPO = Path(__file__).resolve().parent.parent


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_ports() -> tuple[int, int]:
    """This pytest-xdist worker's share of the ports from 20000 to the ephemeral floor (all of them serially)."""
    low, high = 20000, max(20001, _ephemeral_floor())
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count <= 1:
        return low, high
    span = (high - low) // count
    low += int(worker[2:]) * span
    return low, low + span


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, in this test worker's own share of it.

    A port from bind(0) comes from the ephemeral range, where outgoing connections also take their local
    ports; on a busy machine one of them can grab it before the server binds. Below that range only
    listeners compete, and the bind check sees them; parallel workers draw from disjoint ranges.
    """
    low, high = _worker_ports()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


@contextmanager
def running(app: ASGIApp, ready_path: str | None = None, timeout: float = 60) -> Iterator[str]:
    """Serve `app` with a real uvicorn on a free loopback port in a thread; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(url + (ready_path or "/"), timeout, any_status=ready_path is None)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for(url: str, timeout: float, any_status: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            if any_status or r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def knsd_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"KNSD_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def start_serve(cache: Path, *args: str, log: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start `knsd serve` as a real process on a free port; returns the process and its URL."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "knsd", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=knsd_env(cache),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


@contextmanager
def served(cache: Path, *args: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`knsd serve` as a real process, ready; stopped on exit (SIGINT twice: no drain wait, else killed)."""
    proc, url = start_serve(cache, *args, log=log)
    try:
        wait_for(url + "/readyz", 180)
        yield proc, url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
