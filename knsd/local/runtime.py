"""The local runtime daemon: one service's route, activator, autoscaler and pods, until deleted.

Started in the background by `knsd deploy --local` as `python -m knsd.local.runtime STATE_DIR`; the
spec and config come from STATE_DIR/state.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from knsd.autoscaling.config import AutoscalerConfig, ConfigError, parse_config, validate_config
from knsd.autoscaling.controller import TICK
from knsd.errors import UsageError
from knsd.local.pods import Pod, PodSet, pod_command, pod_env
from knsd.local.proxy import forward, json_response
from knsd.local.revision import Revision
from knsd.local.state import ServiceDir
from knsd.spec import ServiceSpec

log = logging.getLogger("knsd.local")
INTERNAL = "/.knsd/"


class RuntimeMetrics:
    """Prometheus metrics of the runtime (served at /.knsd/metrics)."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "knsd_runtime_requests_total", "Requests through the route", ["code"], registry=r
        )
        self.latency = Histogram(
            "knsd_runtime_request_duration_seconds",
            "Latency through the route, buffering included",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, float("inf")),
            registry=r,
        )
        self.startup = Histogram(
            "knsd_runtime_pod_startup_seconds",
            "Pod creation to ready",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf")),
            registry=r,
        )

        def current(attr: str) -> float:
            rev = runtime.serving_revision() or runtime.latest
            return float(getattr(rev.snapshot(), attr)) if rev else 0.0

        Gauge("knsd_runtime_desired_pods", "Desired scale", registry=r).set_function(
            lambda: current("desired_scale")
        )
        Gauge("knsd_runtime_panic", "1 while in panic mode", registry=r).set_function(
            lambda: current("panic")
        )
        Gauge("knsd_runtime_stable_concurrency", "Stable-window concurrency", registry=r).set_function(
            lambda: current("stable_concurrency")
        )
        Gauge("knsd_runtime_panic_concurrency", "Panic-window concurrency", registry=r).set_function(
            lambda: current("panic_concurrency")
        )
        Gauge("knsd_runtime_buffered_requests", "Requests waiting at the activator", registry=r).set_function(
            lambda: sum(rev.activator.buffered for rev in runtime.revisions)
        )
        Gauge("knsd_runtime_inflight_requests", "Requests at pods", registry=r).set_function(
            lambda: sum(rev.activator.inflight for rev in runtime.revisions)
        )
        pods = Gauge("knsd_runtime_pods", "Pods by state", ["state"], registry=r)
        for state in ("pending", "ready", "terminating"):
            pods.labels(state).set_function(
                lambda s=state: sum(
                    1 for rev in runtime.revisions for p in rev.pods.pods.values() if p.state == s
                )
            )


class Runtime:
    """The service: its revisions (the latest ready one serves), the route and the loops."""

    def __init__(
        self, directory: ServiceDir, spec: ServiceSpec, config: AutoscalerConfig, address: str
    ) -> None:
        self.dir = directory
        self.spec = spec
        self.config = config
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.revisions: list[Revision] = []
        self.latest: Revision | None = None
        self.session: aiohttp.ClientSession
        self.metrics = RuntimeMetrics(self)
        self.started = time.time()
        self.tick_origin = self.started
        self._stop = asyncio.Event()
        self._generation = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serving_revision(self) -> Revision | None:
        for rev in reversed(self.revisions):
            if rev.serving:
                return rev
        return None

    def count(self, status: int, started: float) -> None:
        self.metrics.requests.labels(str(status)).inc()
        self.metrics.latency.observe(time.monotonic() - started)

    # revisions

    def _new_revision(self, spec: ServiceSpec, config: AutoscalerConfig) -> Revision:
        self._generation += 1
        name = f"{spec.name}-{self._generation:05d}"
        drain = float(spec.timeout or 300)

        def pods(rev: Revision) -> PodSet:
            return PodSet(
                rev.name,
                pod_command(spec.model, spec.concurrency_limit, drain),
                # `knsd serve` reads KNSD_QUANTIZE when --quantize is not on its command line
                pod_env(
                    {"KNSD_QUANTIZE": spec.quantize, **dict(spec.env)}, spec.scale_max or os.cpu_count() or 1
                ),
                self.dir.pods_dir,
                on_ready=lambda pod: self._pod_ready(rev, pod),
                on_gone=lambda pod: self._pod_gone(rev, pod),
            )

        return Revision(name, spec, config, pods)

    def _pod_ready(self, rev: Revision, pod: Pod) -> None:
        self.metrics.startup.observe((pod.ready_at or pod.created) - pod.created)
        rev.pod_ready(pod)
        self._maybe_promote(rev)

    def _pod_gone(self, rev: Revision, pod: Pod) -> None:
        rev.activator.remove_pod(pod)
        if pod.state == "failed" and rev in self.revisions and not self._stop.is_set():
            asyncio.create_task(rev.replace_failed(pod))

    def _maybe_promote(self, rev: Revision) -> None:
        """Route traffic to the newest Ready revision; older ones drain and go."""
        if not rev.ready or rev.serving or rev is not self.latest:
            return
        rev.serving = True
        for old in list(self.revisions):
            if old is not rev:
                old.serving = False
                log.info("revision %s retired; %s serves", old.name, rev.name)
                asyncio.create_task(self._retire(old))
        self.write_state()

    async def _retire(self, rev: Revision) -> None:
        # Requests still buffered for the old revision would be lost; let them reach a pod first.
        while rev.activator.buffered:
            await asyncio.sleep(0.1)
        await rev.pods.stop_all(timeout=float(rev.spec.timeout or 300))
        if rev in self.revisions:
            self.revisions.remove(rev)

    async def deploy(self, spec: ServiceSpec, config: AutoscalerConfig) -> Revision:
        """Create a new revision (the first one, or an update)."""
        self.spec, self.config = spec, config
        rev = self._new_revision(spec, config)
        self.revisions.append(rev)
        self.latest = rev
        await rev.start()
        self._maybe_promote(rev)
        self.write_state()
        return rev

    # loops

    async def _metric_loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            await asyncio.sleep(1.0 - (now % 1.0) + 0.001)  # on whole seconds, like the 1 s scrape
            now = time.time()
            for rev in list(self.revisions):
                rev.record(now)

    async def _tick_loop(self) -> None:
        # A ticker on absolute times, like Knative's: slow ticks do not push the later ones back.
        self.tick_origin = time.time()
        next_tick = self.tick_origin + TICK
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, next_tick - time.time()))
            next_tick += TICK
            for rev in list(self.revisions):
                try:
                    await rev.tick()
                except Exception:  # a bug in one tick must not stop the autoscaler
                    log.exception("tick of %s failed", rev.name)

    # HTTP

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(INTERNAL):
            return await self._internal(request, path[len(INTERNAL) :])
        return await forward(request, self)

    async def _internal(self, request: web.Request, what: str) -> web.StreamResponse:
        if what == "status" and request.method == "GET":
            return json_response(self.status())
        if what == "metrics" and request.method == "GET":
            return web.Response(
                body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )
        if what == "update" and request.method == "POST":
            try:
                data = await request.json()
                spec = ServiceSpec.from_json(data["spec"])
                config = validate_config(parse_config(data.get("config", {})))
            except (ValueError, KeyError, TypeError, UsageError, ConfigError) as exc:
                return json_response({"error": "BadRequest", "detail": str(exc)}, status=400)
            rev = await self.deploy(spec, config)
            return json_response({"revision": rev.name})
        if what == "shutdown" and request.method == "POST":
            self._stop.set()
            return json_response({"status": "stopping"})
        return json_response(
            {"error": "NotFound", "detail": f"no such endpoint {INTERNAL}{what}"}, status=404
        )

    def status(self) -> dict[str, Any]:
        """Everything `knsd status --local` and `knsd loadtest --local` need."""
        serving = self.serving_revision()
        revisions = []
        for rev in self.revisions:
            snap = rev.snapshot()
            revisions.append(
                {
                    "name": rev.name,
                    "serving": rev.serving,
                    "ready": rev.ready,
                    "desired_scale": snap.desired_scale,
                    "decider_desired": snap.decider_desired,
                    "excess_burst_capacity": snap.excess_burst_capacity,
                    "panic": snap.panic,
                    "panic_since": snap.panic_since,
                    "stable_concurrency": snap.stable_concurrency,
                    "panic_concurrency": snap.panic_concurrency,
                    "active": snap.active,
                    "sks_mode": snap.sks_mode,
                    "buffered": rev.activator.buffered,
                    "inflight": rev.activator.inflight,
                    "pods": [
                        p.to_json()
                        for p in rev.pods.history
                        if p.state in ("pending", "ready", "terminating")
                    ],
                    "pod_history": [p.to_json() for p in rev.pods.history],
                }
            )
        current = next((r for r in revisions if r["serving"]), revisions[-1] if revisions else None)
        return {
            "name": self.spec.name,
            "url": self.url,
            "pid": os.getpid(),
            "started": self.started,
            "tick_origin": self.tick_origin,
            "now": time.time(),
            "ready": serving is not None,
            "latest_revision": self.latest.name if self.latest else None,
            "latest_ready_revision": serving.name if serving else None,
            "current": current,
            "revisions": revisions,
            "spec": self.spec.to_json(),
            "annotations": self.latest.annotations if self.latest else {},
        }

    def write_state(self) -> None:
        previous = self.dir.read_state() or {}
        self.dir.write_state(
            {
                **previous,
                "name": self.spec.name,
                "url": self.url,
                "address": f"{self.host}:{self.port}",
                "pid": os.getpid(),
                "latest_revision": self.latest.name if self.latest else None,
                "spec": self.spec.to_json(),
            }
        )

    async def run(self) -> int:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.host, self.port, exc)
            await self.session.close()
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.dir.pid_file.write_text(str(os.getpid()))
        log.info("route listening on %s", self.url)
        loops = [asyncio.create_task(self._metric_loop()), asyncio.create_task(self._tick_loop())]
        await self.deploy(self.spec, self.config)
        await self._stop.wait()
        log.info("shutting down: draining pods")
        for task in loops:
            task.cancel()
        await site.stop()  # no new connections; in-flight requests finish below
        deadline = time.monotonic() + float(self.spec.timeout or 300)
        while time.monotonic() < deadline and any(
            r.activator.buffered and r.pods.ready() for r in self.revisions
        ):
            await asyncio.sleep(0.1)  # buffered requests still have pods to go to
        for rev in self.revisions:
            rev.activator.fail_waiters(ConnectionAbortedError("runtime shutting down"))
        await asyncio.gather(
            *(rev.pods.stop_all(timeout=float(rev.spec.timeout or 300)) for rev in self.revisions)
        )
        await runner.cleanup()
        await self.session.close()
        with contextlib.suppress(OSError):
            self.dir.pid_file.unlink()
        log.info("stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m knsd.local.runtime STATE_DIR`."""
    args = argv if argv is not None else sys.argv[1:]
    directory = ServiceDir(Path(args[0]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = directory.read_state()
    if state is None:
        log.error("no state in %s", directory.root)
        return 1
    spec = ServiceSpec.from_json(state["spec"])
    config = validate_config(parse_config(state.get("config", {})))
    runtime = Runtime(directory, spec, config, state["address"])
    return asyncio.run(runtime.run())


if __name__ == "__main__":
    sys.exit(main())
