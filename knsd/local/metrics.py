"""Prometheus metrics of the local runtime (served at `/.knsd/metrics`), named after Knative's own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from knsd.local.revision import Revision


class RuntimeMetrics:
    """Prometheus metrics of the runtime (served at /.knsd/metrics)."""

    def __init__(
        self, revisions: Callable[[], list[Revision]], serving: Callable[[], Revision | None]
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "knsd_runtime_requests_total", "Requests through the route", ["code"], registry=r
        )
        # Per revision, for a gray release (Knative's old `revision_request_count` by revision_name).
        self.by_revision = Counter(
            "knsd_runtime_revision_requests_total",
            "Requests through the route by revision",
            ["revision", "code"],
            registry=r,
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
            rev = serving()
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
            lambda: sum(rev.activator.buffered for rev in revisions())
        )
        Gauge("knsd_runtime_inflight_requests", "Requests at pods", registry=r).set_function(
            lambda: sum(rev.activator.inflight for rev in revisions())
        )
        pods = Gauge("knsd_runtime_pods", "Pods by state", ["state"], registry=r)
        for state in ("pending", "ready", "terminating"):

            def in_state(s: str = state) -> float:
                return sum(1 for rev in revisions() for p in rev.pods.pods.values() if p.state == s)

            pods.labels(state).set_function(in_state)
