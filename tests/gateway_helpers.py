"""Helpers for the gateway's tests: a real `redis-server`, a real `knsd gateway` process, and polling jobs."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, knsd_env, start_serve, wait_for

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}


def redis_binary() -> str:
    """Debian's redis-server; the gateway tests skip with the reason when it is missing (`.ci/run` installs it)."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    return found


class Redis:
    """A `redis-server` process on a free loopback port; `aof` keeps its data in `directory` across restarts."""

    def __init__(self, directory: Path, aof: bool = False) -> None:
        self.directory = directory
        self.aof = aof
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir",
             str(self.directory), *persistence],
            stdout=open(self.directory / "redis.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not answer PING")

    def cli(self, *args: str) -> str:
        """A command through redis-cli (the tests' independent view of what the gateway stored)."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # with AOF on, the log is flushed first
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def redis_server(directory: Path, aof: bool = False) -> Iterator[Redis]:
    server = Redis(directory, aof)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Gateway:
    """A `knsd gateway` process (port 0, reported through --port-file)."""

    def __init__(self, cache: Path, upstream: str, redis_url: str, log: Path, *flags: str) -> None:
        self.port_file = log.with_suffix(".port")
        self.port_file.unlink(missing_ok=True)
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "knsd", "gateway", "--upstream", upstream, "--redis", redis_url,
             "--host", "127.0.0.1", "--port", "0", "--port-file", str(self.port_file), *flags],
            env=knsd_env(cache),
            stdout=open(log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{log.read_text()}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}"
        wait_for(self.url + "/readyz", 30)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of the gateway's /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
        match = re.search(pattern, text, re.M)
        return float(match.group(1)) if match else 0.0


@contextmanager
def gateway(cache: Path, upstream: str, redis_url: str, log: Path, *flags: str) -> Iterator[Gateway]:
    gw = Gateway(cache, upstream, redis_url, log, *flags)
    try:
        yield gw
    finally:
        gw.kill(signal.SIGTERM)


def serve_on(cache: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`knsd serve --model tiny` on a given port (so it can come back on the same one), once ready."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "knsd",
            "serve",
            "--model",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=knsd_env(cache),
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", 120)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """One redis-server for a test module (a fixture's body); each test keeps to its own keys (`prefix()`)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def module_upstream(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `knsd serve --model tiny` for a test module (a fixture's body)."""
    proc, url = start_serve(cache, "--model", "tiny", log=tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        wait_for(url + "/readyz", 120)
        yield url
    finally:
        proc.kill()
        proc.wait(30)


def prefix() -> str:
    """Keys of one test's gateway in the module's shared Redis."""
    return "t" + uuid.uuid4().hex[:8]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(url: str, body: dict, headers: dict[str, str] | None = None) -> str:
    """POST with `Prefer: respond-async`; the job's id (asserting the 202's shape)."""
    r = httpx.post(
        url + "/sdapi/v1/txt2img",
        json=body,
        headers={"Prefer": "respond-async", **(headers or {})},
        timeout=60,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    return str(job["id"])


def job(url: str, job_id: str, headers: dict[str, str] | None = None) -> dict:
    r = httpx.get(f"{url}/jobs/{job_id}", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(
    url: str,
    job_id: str,
    headers: dict[str, str] | None = None,
    timeout: float = 180,
    until: tuple[str, ...] = (),
) -> dict:
    """Poll until the job is final (or in one of `until`); tolerates a gateway that is restarting."""
    states = until or ("succeeded", "failed", "cancelled")
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            last = job(url, job_id, headers)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if last["status"] in states:
            return last
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {states} after {timeout}s: {last}")
