"""The local runtime's gateway: `knsd gateway` in front of the route and Debian's `redis-server` behind it,
as child processes that are restarted when they die (as a Deployment's and a StatefulSet's pods would be).

Redis listens on a unix socket in the service's folder (no port to collide with, no other user can reach
it) with its append-only file there, so queued jobs outlive a Redis or runtime restart; `redis_url` in the
spec uses an existing Redis instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from knsd.errors import UsageError
from knsd.local.pods import die_with_parent
from knsd.local.revision import MAX_BACKOFF, log_tail
from knsd.local.state import open_private, private_dir
from knsd.service.gateway import gateway_flags
from knsd.service.spec import ServiceSpec

log = logging.getLogger("knsd.local")
SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes on Linux
REDIS_PACKAGE = "redis-server"


def redis_missing() -> str | None:
    """Why Debian's redis-server cannot be run here, or None."""
    if shutil.which("redis-server") is None:
        return (
            f"the gateway needs Redis: install Debian's {REDIS_PACKAGE} package (apt-get install {REDIS_PACKAGE}), "
            "or give --redis-url of a running Redis"
        )
    return None


class Child:
    """One supervised process: started, probed until ready, restarted with back-off when it exits."""

    def __init__(
        self, name: str, command: list[str], log_path: Path, probe: Callable[[], Awaitable[bool]]
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.probe = probe
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self.restarts = 0
        self.exit_code: int | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            private_dir(self.log_path.parent)
            with open_private(self.log_path) as out:
                self.process = await asyncio.create_subprocess_exec(
                    *self.command, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                    preexec_fn=die_with_parent if sys.platform == "linux" else None,
                )  # fmt: skip
            log.info("%s started (pid %d)", self.name, self.process.pid)
            exited = asyncio.create_task(self.process.wait())
            while not exited.done() and not self.ready:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    async with asyncio.timeout(2):
                        self.ready = await self.probe()
                if not self.ready:
                    await asyncio.wait([exited], timeout=0.1)
            if self.ready:
                log.info("%s ready", self.name)
            self.exit_code = await exited
            self.ready = False
            if self._stopping:
                return
            self.restarts += 1
            delay = min(MAX_BACKOFF, 2.0 ** (self.restarts - 1))
            log.warning("%s exited with code %s; restarting in %.0fs", self.name, self.exit_code, delay)
            await asyncio.sleep(delay)

    async def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def to_json(self) -> dict[str, Any]:
        alive = self.process is not None and self.process.returncode is None
        return {
            "ready": self.ready,
            "pid": self.process.pid if alive and self.process is not None else None,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "log_tail": log_tail(self.log_path) if self.restarts else [],
        }


class Frontend:
    """The gateway (and its own Redis) of one local service."""

    def __init__(self, root: Path, address: str, probe_http: Callable[[str], Awaitable[bool]]) -> None:
        self.root = root
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.probe_http = probe_http
        self.redis: Child | None = None
        self.gateway: Child | None = None
        self._key: tuple[str, ...] = ()
        self._redis_url = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    def _redis(self) -> tuple[list[str], str, Callable[[], Awaitable[bool]]]:
        """The command, URL and readiness probe of this service's own redis-server."""
        socket_path = self.redis_dir / "redis.sock"
        base = ["redis-server", "--dir", str(self.redis_dir), "--appendonly", "yes", "--appendfsync",
                "everysec", "--save", "", "--maxmemory-policy", "noeviction"]  # fmt: skip
        if len(str(socket_path)) <= SOCKET_PATH_MAX:
            command = base + ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
            return command, f"unix://{socket_path}", lambda: _redis_ping(socket_path, None)
        port = _free_port()  # a folder too deep for a unix socket: loopback TCP instead
        command = base + ["--port", str(port), "--bind", "127.0.0.1"]
        return command, f"redis://127.0.0.1:{port}/0", lambda: _redis_ping(None, port)

    async def apply(self, spec: ServiceSpec, route: str) -> None:
        """Run what the spec asks for: nothing, or the gateway (restarted when its flags change)."""
        if not spec.gateway:
            await self.stop()
            return
        if spec.redis_url is None and self.redis is None:
            missing = redis_missing()
            if missing:
                raise UsageError("--gateway", missing)
            private_dir(self.redis_dir)
            command, self._redis_url, probe = self._redis()
            self.redis = Child("redis", command, self.root / "redis.log", probe)
            self.redis.start()
        redis_url = spec.redis_url or self._redis_url
        flags = gateway_flags(spec, route, redis_url)
        command = [
            sys.executable,
            "-m",
            "knsd",
            "gateway",
            *flags,
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if tuple(command) == self._key and self.gateway is not None:
            return
        if self.gateway is not None:
            await self.gateway.stop(timeout=45)
        self._key = tuple(command)
        self.gateway = Child(
            "gateway", command, self.root / "gateway.log", lambda: self.probe_http(self.url + "/readyz")
        )
        self.gateway.start()

    async def stop(self) -> None:
        """The gateway first (its running jobs get its drain time), then Redis (its log is flushed)."""
        if self.gateway is not None:
            await self.gateway.stop(timeout=45)
            self.gateway = None
            self._key = ()
        if self.redis is not None:
            await self.redis.stop(timeout=15)
            self.redis = None

    def status(self) -> dict[str, Any] | None:
        if self.gateway is None:
            return None
        return {
            "url": self.url,
            **self.gateway.to_json(),
            "redis": None if self.redis is None else {"url": self._redis_url, **self.redis.to_json()},
        }


async def _redis_ping(socket_path: Path | None, port: int | None) -> bool:
    """PING in Redis's own protocol (no client library needed to know it is up)."""
    if socket_path is not None:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await reader.readline()).startswith(b"+PONG")
    finally:
        writer.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
