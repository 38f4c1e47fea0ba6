"""The local runtime's dashboard at `/.knsd/` (read-only): the page, and the history it charts.

Every second the runtime's state is sampled: pods by state, desired scale, stable and panic concurrency,
panic mode, buffered and in-flight requests, requests per second and mean latency through the route. The
page (`knsd/local/web/`) polls `/.knsd/status` for the pods and `/.knsd/history?since=T` for the charts.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from knsd.web.assets import HEADERS, assets, not_found

PAGE = "dashboard"
HISTORY_SECONDS = 3600  # one sample a second: an hour of history in memory (a few hundred KiB)


@dataclass(frozen=True, slots=True)
class Totals:
    """Counters of the route since the runtime started."""

    requests: float = 0.0
    latency_sum: float = 0.0
    latency_count: float = 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The runtime at one moment (wall-clock seconds), as the dashboard charts it."""

    t: float
    ready: int
    pending: int
    terminating: int
    desired: int
    stable_concurrency: float
    panic_concurrency: float
    panic: bool
    buffered: int
    inflight: int
    rps: float
    latency: float | None  # mean of the requests that finished since the previous sample


def totals(registry: CollectorRegistry) -> Totals:
    """The route's request count and latency sum/count from the runtime's Prometheus registry."""
    values: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            values[s.name] = values.get(s.name, 0.0) + s.value
    return Totals(
        values.get("knsd_runtime_requests_total", 0.0),
        values.get("knsd_runtime_request_duration_seconds_sum", 0.0),
        values.get("knsd_runtime_request_duration_seconds_count", 0.0),
    )


def sample(status: dict[str, Any], now: Totals, before: Totals, seconds: float) -> Sample:
    """One sample from `Runtime.status()` and the counters now and one interval ago (pure)."""
    states: dict[str, int] = {}
    desired = 0
    for rev in status["revisions"]:
        desired += max(0, int(rev["desired_scale"]))
        for pod in rev["pods"]:
            states[pod["state"]] = states.get(pod["state"], 0) + 1
    current = status.get("current") or {}
    finished = now.latency_count - before.latency_count
    return Sample(
        t=round(status["now"], 3),
        ready=states.get("ready", 0),
        pending=states.get("pending", 0),
        terminating=states.get("terminating", 0),
        desired=desired,
        stable_concurrency=round(float(current.get("stable_concurrency", 0.0)), 3),
        panic_concurrency=round(float(current.get("panic_concurrency", 0.0)), 3),
        panic=bool(current.get("panic", False)),
        buffered=sum(int(rev["buffered"]) for rev in status["revisions"]),
        inflight=sum(int(rev["inflight"]) for rev in status["revisions"]),
        rps=round((now.requests - before.requests) / seconds, 3) if seconds > 0 else 0.0,
        latency=round((now.latency_sum - before.latency_sum) / finished, 4) if finished > 0 else None,
    )


class Dashboard:
    """Samples the runtime every second and answers the dashboard's routes under `/.knsd/`."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        registry: CollectorRegistry,
        limit: int = HISTORY_SECONDS,
    ) -> None:
        self.status = status
        self.registry = registry
        self.samples: deque[Sample] = deque(maxlen=limit)
        self._last = (Totals(), time.monotonic())

    def record(self) -> Sample:
        before, then = self._last
        now, at = totals(self.registry), time.monotonic()
        s = sample(self.status(), now, before, at - then)
        self._last = (now, at)
        self.samples.append(s)
        return s

    async def run(self, stop: asyncio.Event) -> None:
        """Record one sample a second until `stop` is set."""
        while not stop.is_set():
            self.record()
            await asyncio.sleep(1.0 - (time.time() % 1.0) + 0.05)  # just after the runtime's 1 s tick

    def history(self, since: float) -> dict[str, Any]:
        return {"now": time.time(), "samples": [asdict(s) for s in self.samples if s.t > since]}

    def respond(self, request: web.Request, what: str) -> web.Response | None:
        """The dashboard's answer for `/.knsd/<what>`, or None when it is not one of its routes."""
        if request.method != "GET":
            return None
        if what in ("", "dashboard"):
            return _file("dashboard.html")
        if what.startswith("ui/"):
            return _file(what[3:])
        if what == "history":
            try:
                since = float(request.query.get("since", "0"))
            except ValueError:
                detail = f"since must be a number of seconds (Unix time), got {request.query['since']!r}"
                return web.json_response(
                    {"error": "InvalidField", "field": "since", "detail": detail}, status=422
                )
            return web.json_response(self.history(since))
        return None


def _file(name: str) -> web.Response:
    asset = assets(PAGE).get(name)
    if asset is None:
        return web.json_response(not_found(name), status=404)
    return web.Response(body=asset.body, headers={**HEADERS, "Content-Type": asset.media_type})
