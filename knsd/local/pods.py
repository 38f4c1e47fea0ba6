"""Pods of the local runtime: `knsd serve` processes on free loopback ports.

A pod is Pending until its `/readyz` answers 200, then Ready; scale-down sends SIGTERM (Terminating: it
drains its requests and exits). A pod that exits on its own is Failed and gets replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp

from knsd.local.state import open_private, private_dir
from knsd.service.limits import MAX_BODY_MB

log = logging.getLogger("knsd.local")
PodState = Literal["pending", "ready", "terminating", "failed", "exited"]
PROBE_PERIOD = 0.1  # the activator probes new pods every 200 ms; locally a little faster


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the pod gets SIGTERM if the runtime dies, so no pod outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Pod:
    """One pod process and what the runtime knows of it."""

    name: str
    revision: str
    port: int
    process: asyncio.subprocess.Process
    created: float
    log_path: Path
    state: PodState = "pending"
    ready_at: float | None = None
    stopping_at: float | None = None  # when it was told to stop (SIGTERM)
    terminated_at: float | None = None
    exit_code: int | None = None
    inflight: int = 0
    max_inflight: int = 0
    served: int = 0
    waiter: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "revision": self.revision,
            "state": self.state,
            "url": self.url,
            "pid": self.process.pid,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "served": self.served,
            "created": self.created,
            "ready_at": self.ready_at,
            "startup_seconds": None if self.ready_at is None else round(self.ready_at - self.created, 3),
            "stopping_at": self.stopping_at,
            "terminated_at": self.terminated_at,
            "exit_code": self.exit_code,
        }


class PodSet:
    """The pods of one revision: start, probe to readiness, terminate, notice deaths."""

    def __init__(
        self,
        revision: str,
        command: list[str],
        env: dict[str, str],
        log_dir: Path,
        on_ready: Callable[[Pod], None],
        on_gone: Callable[[Pod], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.revision = revision
        self.command = command
        self.env = env
        self.log_dir = log_dir
        self.on_ready = on_ready
        self.on_gone = on_gone
        self.clock = clock
        self.pods: dict[str, Pod] = {}
        self.history: list[Pod] = []  # every pod this revision ever had, for status and tests
        self._seq = 0
        self._session: aiohttp.ClientSession | None = None

    def live(self) -> list[Pod]:
        """Pods that count toward the replica count: pending or ready."""
        return [p for p in self.pods.values() if p.state in ("pending", "ready")]

    def ready(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.state == "ready"]

    async def scale_to(self, replicas: int) -> None:
        """Start or terminate pods until `replicas` are pending or ready."""
        live = self.live()
        for _ in range(replicas - len(live)):
            await self._start()
        if len(live) > replicas:
            # Like a ReplicaSet: not-ready pods go first, then idle ones, newest first.
            victims = sorted(live, key=lambda p: (p.state == "ready", p.inflight > 0, -p.created))
            for pod in victims[: len(live) - replicas]:
                self.terminate(pod)

    async def _start(self) -> Pod:
        self._seq += 1
        name = f"{self.revision}-{self._seq:03d}"
        log_path = self.log_dir / f"{name}.log"
        port_file = self.log_dir / f"{name}.port"
        private_dir(log_path.parent)
        port_file.unlink(missing_ok=True)
        with open_private(log_path) as out:
            # Port 0: the pod's kernel picks a free port when it binds and the pod reports it, so no other
            # process can take the port between choosing and binding it.
            process = await asyncio.create_subprocess_exec(
                *self.command,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                env=self.env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        pod = Pod(name, self.revision, 0, process, self.clock(), log_path)
        self.pods[name] = pod
        self.history.append(pod)
        pod.waiter = asyncio.create_task(self._watch(pod, port_file))
        log.info("pod %s starting (pid %d)", name, process.pid)
        return pod

    async def _watch(self, pod: Pod, port_file: Path) -> None:
        """Learn the pod's port, probe until ready (or dead), then wait for the process to exit."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1))
        exit_task = asyncio.create_task(pod.process.wait())
        while not pod.port and not exit_task.done():
            with contextlib.suppress(OSError, ValueError):
                pod.port = int(port_file.read_text())
                log.info("pod %s listening on port %d", pod.name, pod.port)
            if not pod.port:
                await asyncio.wait([exit_task], timeout=PROBE_PERIOD / 2)
        while pod.state == "pending" and not exit_task.done():
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                async with self._session.get(pod.url + "/readyz") as r:
                    if r.status == 200 and pod.state == "pending":
                        pod.state = "ready"
                        pod.ready_at = self.clock()
                        log.info("pod %s ready after %.2fs", pod.name, pod.ready_at - pod.created)
                        self.on_ready(pod)
                        break
            await asyncio.wait([exit_task], timeout=PROBE_PERIOD)
        code = await exit_task
        pod.exit_code = code
        pod.terminated_at = self.clock()
        if pod.state != "terminating":
            log.warning("pod %s exited unexpectedly with code %s", pod.name, code)
            pod.state = "failed"
        else:
            pod.state = "exited"
        self.pods.pop(pod.name, None)
        self.on_gone(pod)

    def terminate(self, pod: Pod) -> None:
        """SIGTERM: the pod stops admitting, drains, and exits."""
        if pod.state in ("pending", "ready"):
            pod.state = "terminating"
            pod.stopping_at = self.clock()
            log.info("pod %s terminating (%d in flight)", pod.name, pod.inflight)
            with contextlib.suppress(ProcessLookupError):
                pod.process.send_signal(signal.SIGTERM)
            self.on_gone(pod)

    async def stop_all(self, timeout: float) -> None:
        """Terminate every pod and wait for them to exit (SIGKILL after `timeout`)."""
        for pod in list(self.pods.values()):
            self.terminate(pod)
        waiters = [p.waiter for p in self.pods.values() if p.waiter is not None]
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=timeout)
            for pod in list(self.pods.values()):
                with contextlib.suppress(ProcessLookupError):
                    pod.process.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._session is not None:
            await self._session.close()
            self._session = None


def pod_command(model: str, concurrency_limit: int, drain_timeout: float) -> list[str]:
    """The `knsd serve` command line of a pod (host and port are added per pod)."""
    # queue-proxy holds 10 x containerConcurrency waiting requests per pod.
    return [
        sys.executable,
        "-m",
        "knsd",
        "serve",
        "--model",
        model,
        "--max-queue",
        str(10 * max(concurrency_limit, 1)),
        "--drain-timeout",
        str(drain_timeout),
        "--max-body-mb",  # the route holds bodies to the same limit (knsd.local.proxy)
        str(MAX_BODY_MB),
        "--log-level",
        "warning",
    ]


def pod_env(extra: dict[str, str], max_pods: int) -> dict[str, str]:
    """The pods' environment; CPU threads are shared out so that pods on one machine do not oversubscribe it."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    # Several torch processes with a full OpenMP team each spin against each other on a small machine.
    threads = max(1, (os.cpu_count() or 1) // max(1, max_pods))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.update(extra)
    return env
