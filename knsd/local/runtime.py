"""The local runtime: one service's revisions, their activators, autoscalers and pods, and the traffic
split between them (`knsd.local.daemon` serves it over HTTP)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import aiohttp

from knsd.errors import UsageError
from knsd.knative.config import AutoscalerConfig
from knsd.knative.controller import TICK
from knsd.local.frontend import Frontend
from knsd.local.metrics import RuntimeMetrics
from knsd.local.pods import Pod, PodSet, pod_command, pod_env
from knsd.local.redact import public, public_spec
from knsd.local.revision import Revision
from knsd.local.split import Table, resolve, wanted
from knsd.local.state import ServiceDir
from knsd.service.spec import ServiceSpec

log = logging.getLogger("knsd.local")
INTERNAL = "/.knsd/"
DEFAULT_GATEWAY_ADDRESS = "127.0.0.1:8000"
# Spec fields of the gateway in front of the route: not part of a revision's template.
GATEWAY_FIELDS = (
    "gateway",
    "gateway_replicas",
    "gateway_args",
    "gateway_keys_secret",
    "redis_url",
    "redis_storage",
)


class Runtime:
    """The service: its revisions (the latest ready one serves), the route and the loops."""

    def __init__(
        self,
        directory: ServiceDir,
        spec: ServiceSpec,
        config: AutoscalerConfig,
        address: str,
        gateway_address: str = DEFAULT_GATEWAY_ADDRESS,
    ) -> None:
        self.dir = directory
        self.spec = spec
        self.config = config
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.revisions: list[Revision] = []
        self.latest: Revision | None = None
        self.session: aiohttp.ClientSession
        self.metrics = RuntimeMetrics(lambda: self.revisions, lambda: self.serving_revision() or self.latest)
        self.started = time.time()
        self.tick_origin = self.started
        self.stop = asyncio.Event()  # set by a signal or POST /.knsd/shutdown
        self._generation = 0
        self.latest_ready: str | None = None
        self.wanted: list[dict[str, Any]] = wanted(spec)
        self.table: Table | None = None  # the programmed split (None until something can serve)
        self.traffic_reason: str | None = None  # why the wanted split is not programmed yet
        self._retiring: set[Revision] = set()
        self.token = ""  # the control secret (knsd.local.control), set when the route starts
        self.frontend = Frontend(directory.root, gateway_address, self._answers)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _answers(self, url: str) -> bool:
        """A readiness probe: 200 from `url`."""
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    def serving_revision(self) -> Revision | None:
        """The latest ready revision (what `@latest` routes to)."""
        return self.find(self.latest_ready) if self.latest_ready else None

    def find(self, name: str | None) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)

    def pick(self, tag: str | None, pinned_pod: str | None) -> Revision | None:
        """The revision for a request: its tag's, its affinity pod's (while routed), else the split's."""
        if self.table is None:
            return None
        if tag and tag in self.table.tags:
            return self.find(self.table.tags[tag])
        if pinned_pod:
            for rev in self.revisions:
                if pinned_pod in rev.pods.pods and self.table.percent(rev.name):
                    return rev
        return self.find(self.table.pick())

    def count(self, status: int, started: float, revision: str | None = None) -> None:
        self.metrics.requests.labels(str(status)).inc()
        if revision is not None:
            self.metrics.by_revision.labels(revision, str(status)).inc()
        self.metrics.latency.observe(time.monotonic() - started)

    # revisions

    def _new_revision(self, spec: ServiceSpec, config: AutoscalerConfig, name: str) -> Revision:
        drain = float(spec.timeout or 300)
        # What Knative sets in every user container (K_CONFIGURATION is the Service's Configuration).
        knative_env = {"K_SERVICE": spec.name, "K_CONFIGURATION": spec.name, "K_REVISION": name}

        def pods(rev: Revision) -> PodSet:
            return PodSet(
                rev.name,
                pod_command(spec.model, spec.concurrency_limit, drain),
                # `knsd serve` reads KNSD_QUANTIZE when --quantize is not on its command line
                pod_env(
                    {"KNSD_QUANTIZE": spec.quantize, **dict(spec.env), **knative_env},
                    spec.scale_max or os.cpu_count() or 1,
                ),
                self.dir.pods_dir,
                on_ready=lambda pod: self._pod_ready(rev, pod),
                on_gone=lambda pod: self._pod_gone(rev, pod),
            )

        return Revision(name, spec, config, pods)

    def _pod_ready(self, rev: Revision, pod: Pod) -> None:
        self.metrics.startup.observe((pod.ready_at or pod.created) - pod.created)
        rev.pod_ready(pod)
        if rev.ready and rev in self.revisions:
            newer = self.find(self.latest_ready)
            if newer is None or self.revisions.index(rev) > self.revisions.index(newer):
                self.latest_ready = rev.name  # only ever forward, to a newer Ready revision
            self._program()

    def _pod_gone(self, rev: Revision, pod: Pod) -> None:
        rev.activator.remove_pod(pod)
        if (
            pod.state == "failed"
            and rev in self.revisions
            and rev not in self._retiring
            and not self.stop.is_set()
        ):
            asyncio.create_task(rev.replace_failed(pod))

    def _program(self) -> None:
        """Program the wanted split if every target can serve (all or nothing); retire unrouted revisions."""
        ready = {r.name: r.ready for r in self.revisions}
        programmed, self.traffic_reason = resolve(self.wanted, ready, self.latest_ready, self.spec.name)
        if programmed is None:
            return
        if self.table is None or self.table.targets != programmed:
            self.table = Table(programmed)
            log.info("traffic: %s", ", ".join(f"{t.revision}={t.percent}%" for t in programmed))
        keep = self.table.revisions() | {self.latest.name if self.latest else ""}
        keep |= {t["revisionName"] for t in self.wanted if t.get("revisionName")}
        for rev in self.revisions:
            rev.serving = rev.name in self.table.revisions()
        for rev in list(self.revisions):
            if rev.name not in keep and rev not in self._retiring:
                log.info("revision %s has no traffic any more; draining it", rev.name)
                self._retiring.add(rev)
                asyncio.create_task(self._retire(rev))
        self.write_state()

    async def _retire(self, rev: Revision) -> None:
        # Requests already buffered for or running on the old revision finish first (no SIGTERM while a
        # request is on its way to a pod: the pod would answer 503); then its pods drain and exit.
        deadline = time.monotonic() + float(rev.spec.timeout or 300)
        while (rev.activator.buffered or rev.activator.inflight) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await rev.pods.stop_all(timeout=float(rev.spec.timeout or 300))
        if rev in self.revisions:
            self.revisions.remove(rev)
        self._retiring.discard(rev)
        self.write_state()

    def _revision_for(self, spec: ServiceSpec, config: AutoscalerConfig) -> Revision | None:
        """The revision this spec's template needs: None for a new one, or the one it is (unchanged)."""
        template = _template_key(spec, config)
        if spec.revision_name:
            same = self.find(spec.revision_name)
            if same is not None and _template_key(same.spec, same.config) != template:
                raise UsageError(
                    "--revision-name",
                    f'The revision name "{spec.revision_name}" is taken by a conflicting Revision, '
                    "so traffic will not be migrated",
                )
            return same
        latest = self.latest
        if latest is not None and _template_key(latest.spec, latest.config) == template:
            return latest  # nothing in the template changed: a traffic-only update
        return None

    async def deploy(self, spec: ServiceSpec, config: AutoscalerConfig) -> Revision:
        """Apply a spec: a new revision when the template changed (the first one, or an update), then traffic."""
        rev = self._revision_for(spec, config)
        for target in wanted(spec):
            name = target.get("revisionName")
            if name and name != spec.revision_name and self.find(name) is None:
                raise UsageError("--traffic", f'Revision "{name}" referenced in traffic not found.')
        await self.frontend.apply(
            spec, self.url
        )  # the gateway first: a missing redis-server stops the deploy
        self.spec, self.config = spec, config
        self.wanted = wanted(spec)
        if rev is not None:
            self._program()
            return rev
        self._generation += 1  # the Configuration's generation: every template change, named or not
        rev = self._new_revision(spec, config, spec.revision_name or f"{spec.name}-{self._generation:05d}")
        self.revisions.append(rev)
        self.latest = rev
        self._program()
        await rev.start()
        if rev.ready and self.latest_ready != rev.name:  # Ready with no pods (initial scale 0)
            self.latest_ready = rev.name
        self._program()
        self.write_state()
        return rev

    # loops

    async def metric_loop(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            await asyncio.sleep(1.0 - (now % 1.0) + 0.001)  # on whole seconds, like the 1 s scrape
            now = time.time()
            for rev in list(self.revisions):
                rev.record(now)

    async def tick_loop(self) -> None:
        # A ticker on absolute times, like Knative's: slow ticks do not push the later ones back.
        self.tick_origin = time.time()
        next_tick = self.tick_origin + TICK
        while not self.stop.is_set():
            await asyncio.sleep(max(0.0, next_tick - time.time()))
            next_tick += TICK
            for rev in list(self.revisions):
                if rev in self._retiring:
                    continue  # its pods are going; the autoscaler must not bring them back
                try:
                    await rev.tick()
                except Exception:  # a bug in one tick must not stop the autoscaler
                    log.exception("tick of %s failed", rev.name)

    def status(self) -> dict[str, Any]:
        """Everything `knsd status --local` and `knsd loadtest --local` need; open to anyone who reaches the
        route, so the spec's environment shows names only and no secret-looking value appears."""
        serving = self.serving_revision()
        revisions = []
        for rev in self.revisions:
            snap = rev.snapshot()
            revisions.append(
                {
                    "name": rev.name,
                    "serving": rev.serving,
                    "traffic": self.table.percent(rev.name) if self.table else 0,
                    "tags": sorted(
                        t for t, r in (self.table.tags if self.table else {}).items() if r == rev.name
                    ),
                    "backoff": rev.backoff_json(),
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
        current = next((r for r in revisions if serving and r["name"] == serving.name), None)
        current = current or (revisions[-1] if revisions else None)
        shown: dict[str, Any] = public(
            {
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
                "traffic": self.table.to_json() if self.table else [],
                "traffic_pending": self.traffic_reason,
                "revisions": revisions,
                "spec": public_spec(self.spec.to_json()),
                "annotations": self.latest.annotations if self.latest else {},
                "gateway": self.frontend.status(),
            }
        )
        return shown

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


def _template_key(spec: ServiceSpec, config: AutoscalerConfig) -> str:
    """What makes a new revision: everything but the traffic (and the config it scales with)."""
    data = spec.to_json()
    for key in ("traffic", "tags", "revision_name", *GATEWAY_FIELDS):
        data.pop(key, None)
    return json.dumps([data, repr(config)], sort_keys=True)
