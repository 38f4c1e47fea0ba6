"""One revision of the local runtime: the shared autoscaling loop driving real pods."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from knsd.knative.config import AutoscalerConfig
from knsd.knative.controller import ScalingController, Snapshot
from knsd.local.activator import Activator
from knsd.local.pods import Pod, PodSet
from knsd.service.spec import ServiceSpec

log = logging.getLogger("knsd.local")
MAX_BACKOFF = 30.0

__all__ = ["Revision", "Snapshot"]


def log_tail(path: Path, lines: int = 10) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


class Revision:
    """A revision's controller, pods and activator."""

    def __init__(
        self,
        name: str,
        spec: ServiceSpec,
        config: AutoscalerConfig,
        pods_factory: Callable[[Revision], PodSet],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.spec = spec
        self.config = config
        self.clock = clock
        self.annotations = spec.template_annotations()
        self.controller = ScalingController(self.annotations, spec.concurrency_limit, config, clock())
        self.activator = Activator(spec.concurrency_limit)
        self.pods = pods_factory(self)
        self.serving = False  # the route sends traffic here
        self._tick_lock = asyncio.Lock()
        self._failures = 0
        self.last_failed: Pod | None = None
        self.restart_at: float | None = None

    @property
    def ready(self) -> bool:
        return self.controller.initialized

    @property
    def replicas(self) -> int:
        return self.controller.replicas

    async def start(self) -> None:
        """Create the pods for the initial scale, as the revision reconciler does."""
        await self.pods.scale_to(self.controller.start())
        self._note_ready()

    def _note_ready(self) -> None:
        if self.controller.note_ready(len(self.pods.ready())):
            log.info("revision %s is Ready (%d ready pods)", self.name, len(self.pods.ready()))

    def record(self, now: float) -> None:
        concurrency, requests = self.activator.meter.report()
        self.controller.record(now, concurrency, requests, bool(self.pods.ready()))

    def poke_needed(self) -> bool:
        return self.controller.poke_needed()

    def poke(self) -> None:
        """Report the first request at zero at once (synchronously, so concurrent requests report it once)."""
        self.controller.poke(self.clock())

    async def tick(self) -> None:
        async with self._tick_lock:
            before = self.controller.replicas
            replicas = self.controller.tick(self.clock(), len(self.pods.ready()))
            if replicas is not None:
                if replicas != before:
                    log.info("revision %s: scale %d -> %d", self.name, before, replicas)
                await self.pods.scale_to(replicas)

    async def replace_failed(self, pod: Pod) -> None:
        """A pod died: replace it after a crash-loop backoff (1 s, 2 s, 4 s, ... up to 30 s)."""
        self._failures += 1
        self.last_failed = pod
        delay = min(MAX_BACKOFF, 2.0 ** (self._failures - 1)) if self._failures > 1 else 0.0
        self.restart_at = self.clock() + delay
        if delay:
            log.warning("revision %s: pod %s failed; restarting in %.0fs", self.name, pod.name, delay)
            await asyncio.sleep(delay)
        await self.pods.scale_to(self.controller.replicas)

    def backoff_json(self) -> dict[str, object] | None:
        """Kubernetes' CrashLoopBackOff as status shows it: restarts, the next start, the last pod's log."""
        pod = self.last_failed
        if not self._failures or pod is None:
            return None
        return {
            "reason": "CrashLoopBackOff",
            "restarts": self._failures,
            "restart_at": self.restart_at,
            "pod": pod.name,
            "exit_code": pod.exit_code,
            "log_tail": log_tail(pod.log_path),
        }

    def pod_ready(self, pod: Pod) -> None:
        self._failures = 0
        self.last_failed = None
        self.activator.add_pod(pod)
        self._note_ready()

    def snapshot(self) -> Snapshot:
        return self.controller.snapshot()
