"""Watching a service's pods during a load test: ready pods over time, new pods' start-up, checks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from knsd.cluster.podrecord import PodRecord


class PodSource(Protocol):
    async def pods(self) -> dict[str, PodRecord]: ...

    async def close(self) -> None: ...


@dataclass
class ScaleReport:
    """Ready pods over a run and the checks against expectations."""

    started: float
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds from start, ready pods)
    pods: dict[str, PodRecord] = field(default_factory=dict)
    ready_at_start: int = 0
    cold_start: float | None = None
    load_ended: float | None = None
    zero_after: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def max_ready(self) -> int:
        return max((ready for _, ready in self.samples), default=0)

    def observe(self, now: float, pods: dict[str, PodRecord]) -> None:
        for name, pod in pods.items():
            old = self.pods.get(name)
            if old is not None and old.ready_at is not None and pod.ready_at is None:
                pod = replace(pod, ready_at=old.ready_at)  # keep when it became ready
            self.pods[name] = pod
        for name, pod in self.pods.items():
            if name not in pods and pod.gone_at is None:
                self.pods[name] = replace(pod, gone_at=now)
        ready = sum(1 for p in pods.values() if p.ready)
        if not self.samples or self.samples[-1][1] != ready:
            self.samples.append((round(now - self.started, 3), ready))

    def new_pods(self) -> list[PodRecord]:
        return sorted(
            (p for p in self.pods.values() if p.created >= self.started - 1), key=lambda p: p.created
        )

    def timeline_text(self) -> str:
        """Compact: the ready count at each change, e.g. "0s:0 2.1s:1 9.8s:3 41.0s:0"."""
        return " ".join(f"{t:.1f}s:{ready}" for t, ready in self.samples) or "-"

    def check(self, expect_pods: int | None, expect_zero_after: float | None) -> None:
        if expect_pods is not None and self.max_ready < expect_pods:
            self.failures.append(
                f"at most {self.max_ready} pods were ready at once; expected at least {expect_pods}"
            )
        if expect_zero_after is not None and self.zero_after is None:
            self.failures.append(
                f"the service did not return to zero pods within {expect_zero_after:g}s after the load"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "timeline": [{"t": t, "ready": ready} for t, ready in self.samples],
            "max_ready": self.max_ready,
            "ready_at_start": self.ready_at_start,
            "cold_start": self.cold_start,
            "new_pods": [
                {"name": p.name, "startup": p.startup, "created": p.created, "ready_at": p.ready_at}
                for p in self.new_pods()
            ],  # fmt: skip
            "zero_after": self.zero_after,
            "failures": list(self.failures),
        }


class LocalPods:
    """Pods of a local-runtime service, from its `/.knsd/status`."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.status_url = f"{parts.scheme}://{parts.netloc}/.knsd/status"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def pods(self) -> dict[str, PodRecord]:
        async with self._session.get(self.status_url) as r:
            status = await r.json()
        out = {}
        for rev in status["revisions"]:
            for p in rev["pods"]:
                gone = p["terminated_at"] or (status["now"] if p["state"] == "terminating" else None)
                out[p["name"]] = PodRecord(p["name"], p["created"], p["ready_at"], gone)
        return out

    async def close(self) -> None:
        await self._session.close()


class KubePods:
    """Pods labelled serving.knative.dev/service=NAME, from a Kubernetes watch (in a thread)."""

    def __init__(
        self, service: str, namespace: str | None, kubeconfig: str | None, context: str | None
    ) -> None:
        from knsd.cluster.kube import KubeClient

        self.client = KubeClient.connect(kubeconfig=kubeconfig, context=context, namespace=namespace)
        self.selector = f"serving.knative.dev/service={service}"
        self._pods: dict[str, PodRecord] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for kind, pod in self.client.watch_pods(self.selector, self._stop, self._synced.set):
                with self._lock:
                    if kind == "DELETED":
                        self._pods.pop(pod.name, None)
                    else:
                        self._pods[pod.name] = pod
        except Exception as exc:  # reported by the next pods() call
            self._error = exc
            self._synced.set()

    async def pods(self) -> dict[str, PodRecord]:
        await asyncio.get_running_loop().run_in_executor(None, self._synced.wait, 30)
        if self._error is not None:
            raise self._error
        with self._lock:
            return {name: pod for name, pod in self._pods.items() if pod.gone_at is None}

    async def close(self) -> None:
        self._stop.set()


async def watch(
    source: PodSource, report: ScaleReport, done: asyncio.Event, period: float = 0.25,
    clock: Callable[[], float] = time.time,
) -> None:  # fmt: skip
    """Sample the pods until `done` is set."""
    while not done.is_set():
        report.observe(clock(), await source.pods())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(period):
                await done.wait()
    report.observe(clock(), await source.pods())
