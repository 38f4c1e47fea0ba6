"""Prometheus metrics of the gateway (`GET /metrics`).

Counters and histograms are this replica's (sum them over replicas); the gauges read from Redis at scrape
time are the deployment's (every replica reports the same value: take the max).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, float("inf"))


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "knsd_gateway_requests_total",
            "HTTP requests answered, by tenant, route and status",
            ["tenant", "route", "code"],
            registry=r,
        )
        self.jobs = Counter(
            "knsd_gateway_jobs_total",
            "Jobs finished, by tenant and final status (sync requests included)",
            ["tenant", "status"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "knsd_gateway_job_duration_seconds",
            "Submission to final status: queue, retries and generation",
            ["status"],
            buckets=LATENCY,
            registry=r,
        )
        self.submitted = Counter(
            "knsd_gateway_jobs_submitted_total",
            "Jobs queued, by tenant and mode",
            ["tenant", "mode"],
            registry=r,
        )
        self.rejected = Counter(
            "knsd_gateway_rejected_total",
            "Requests refused before queueing, by tenant and reason (rate, queue, breaker, auth)",
            ["tenant", "reason"],
            registry=r,
        )
        self.cache = Counter(
            "knsd_gateway_cache_requests_total",
            "Generation requests by cache result: hit, miss, bypass (no-cache/no-store), uncacheable (random seed)",
            ["result"],
            registry=r,
        )
        self.attempts = Counter(
            "knsd_gateway_upstream_attempts_total",
            "Job attempts sent upstream, by outcome (ok, final, retry) and status",
            ["outcome", "code"],
            registry=r,
        )
        self.retries = Counter(
            "knsd_gateway_retries_total", "Jobs put back in line after a 502/503", registry=r
        )
        self.reclaimed = Counter(
            "knsd_gateway_reclaimed_total", "Jobs taken over from a worker that went silent", registry=r
        )
        self.running = Gauge("knsd_gateway_running_jobs", "Jobs this replica runs now", registry=r)
        # Read from Redis when scraped: the whole deployment's.
        self.queued = Gauge(
            "knsd_gateway_queued_jobs", "Jobs waiting (all replicas), by tenant", ["tenant"], registry=r
        )
        self.queue_depth = Gauge(
            "knsd_gateway_queue_depth", "Jobs waiting in Redis (all replicas)", registry=r
        )
        self.inflight = Gauge(
            "knsd_gateway_inflight_requests",
            "Upstream generation requests in flight (all replicas)",
            registry=r,
        )
        self.inflight_limit = Gauge("knsd_gateway_inflight_limit", "The in-flight bound", registry=r)
        self.breaker = Gauge(
            "knsd_gateway_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", registry=r
        )
        self.cache_bytes = Gauge("knsd_gateway_cache_bytes", "Bytes held by the result cache", registry=r)
        self.cache_entries = Gauge("knsd_gateway_cache_entries", "Entries in the result cache", registry=r)
        self.redis_up = Gauge("knsd_gateway_redis_up", "1 when Redis answered the scrape", registry=r)
