"""Helpers for end-to-end tests of the local runtime through the real CLI."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers import free_port, knsd_env


def knsd(cache: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `knsd` CLI."""
    return subprocess.run(
        [sys.executable, "-m", "knsd", *args],
        env=knsd_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def local_service(cache: Path, name: str, *flags: str) -> Iterator[str]:
    """`knsd deploy --local` on a free port; always `knsd delete --local` afterwards."""
    address = f"127.0.0.1:{free_port()}"
    try:
        out = knsd(cache, "deploy", "--local", "--name", name, "--local-address", address, *flags)
        assert out.returncode == 0, out.stderr + out.stdout
        assert out.stdout.strip().splitlines()[-1] == f"http://{address}"
        yield f"http://{address}"
    finally:
        knsd(cache, "delete", name, "--local")


def status(url: str) -> dict:
    return httpx.get(url + "/.knsd/status", timeout=10).json()


def live_pods(url: str) -> list[dict]:
    return status(url)["current"]["pods"]


def wait_until(check: Callable[[], bool], timeout: float, what: str, period: float = 0.25) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Load:
    """N client threads sending requests back to back until stopped."""

    def __init__(self, url: str, clients: int, body: dict) -> None:
        self.url, self.body = url, body
        self.stop = threading.Event()
        self.results: list[tuple[int, str | None]] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=180) as client:
            while not self.stop.is_set():
                r = client.post(self.url + "/sdapi/v1/txt2img", json=self.body)
                self.results.append((r.status_code, r.headers.get("x-knsd-pod")))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(180)


def pod_peak(pod_url: str) -> float:
    """The pod's own count of the most requests it held at once."""
    text = httpx.get(pod_url + "/metrics", timeout=5).text
    return float(re.search(r"^knsd_peak_requests (\S+)$", text, re.M).group(1))
