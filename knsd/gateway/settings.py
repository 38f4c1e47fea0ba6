"""The gateway's settings: one frozen spec, built from the flags and checked up front (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from knsd.errors import UsageError
from knsd.gateway.tenants import Tenants

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything `knsd gateway` is told; the defaults are the CLI's."""

    upstream: str  # the Knative route (or the local route), e.g. http://sd.default.svc.cluster.local
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "0.0.0.0"
    port: int = 8000
    prefix: str = "knsd"  # Redis keys live under {prefix}: (one hash slot, so Redis Cluster works too)
    tenants: Tenants = field(default_factory=Tenants)
    # max-scale x containerConcurrency of the Service: a burst becomes pods up to max-scale and a queue
    # in Redis, never the activator's or queue-proxy's 503s.
    max_inflight: int = 10
    max_body_bytes: int = 32 * MIB
    max_result_bytes: int = 128 * MIB
    result_ttl: float = 3600.0
    cache_ttl: float = 3600.0
    cache_max_bytes: int = 256 * MIB
    cache_item_max_bytes: int = 16 * MIB
    max_attempts: int = 5  # attempts that failed with 502/503 or a broken connection, breaker closed
    retry_base: float = 1.0
    retry_max: float = 30.0
    reclaim_after: float = 30.0  # a job's worker silent this long is presumed dead; another takes it
    breaker_failures: int = 5  # consecutive upstream failures that open the breaker
    breaker_open: float = 10.0  # seconds open before a half-open probe
    probe_path: str = "/readyz"
    probe_timeout: float = 300.0  # the probe may wake a scaled-to-zero route: allow for a cold start
    sync_timeout: float = 600.0  # a synchronous request's whole wait: queue, retries and generation
    upstream_timeout: float = 600.0
    model_ttl: float = 60.0  # how long the upstream's model (for cache keys) is trusted
    upstream_headers: tuple[tuple[str, str], ...] = ()
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        check_url("--upstream", self.upstream, ("http", "https"))
        check_url("--redis", self.redis_url, ("redis", "rediss", "unix"))
        if not 0 <= self.port < 65536:
            raise UsageError("--port", f"expected 0-65535, got {self.port}")
        if not self.prefix or any(c in self.prefix for c in "{}: \t\n"):
            raise UsageError(
                "--redis-prefix", f"expected a name without braces, colons or spaces, got {self.prefix!r}"
            )
        for flag, value in (("--max-inflight", self.max_inflight), ("--max-attempts", self.max_attempts),
                            ("--breaker-failures", self.breaker_failures)):  # fmt: skip
            if value < 1:
                raise UsageError(flag, f"expected a whole number >= 1, got {value}")
        for flag, number in (
            ("--result-ttl", self.result_ttl), ("--cache-ttl", self.cache_ttl), ("--retry-base", self.retry_base),
            ("--retry-max", self.retry_max), ("--reclaim-after", self.reclaim_after),
            ("--breaker-open", self.breaker_open), ("--probe-timeout", self.probe_timeout),
            ("--sync-timeout", self.sync_timeout), ("--upstream-timeout", self.upstream_timeout),
            ("--model-ttl", self.model_ttl),
        ):  # fmt: skip
            if not number > 0:
                raise UsageError(flag, f"expected a positive number of seconds, got {number}")
        if self.reclaim_after < 1:
            raise UsageError("--reclaim-after", f"expected at least 1 second, got {self.reclaim_after}")
        if not self.probe_path.startswith("/"):
            raise UsageError("--probe-path", f"expected a path starting with '/', got {self.probe_path!r}")
        if self.cache_item_max_bytes > self.cache_max_bytes:
            raise UsageError("--cache-item-max-mb", "must not exceed --cache-max-mb")

    @property
    def heartbeat(self) -> float:
        """How often a worker proves it is alive (and learns of a cancel): well inside reclaim_after."""
        return min(1.0, self.reclaim_after / 3)


def check_url(flag: str, url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or (parts.scheme != "unix" and not parts.hostname):
        raise UsageError(flag, f"expected a {'/'.join(schemes)} URL with a host, got {url!r}")


def parse_header(item: str) -> tuple[str, str]:
    """`--upstream-header 'Authorization=Bearer T'` -> (name, value)."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip() or any(c in name for c in " :\r\n") or any(c in value for c in "\r\n"):
        raise UsageError("--upstream-header", f"expected NAME=VALUE, got {item!r}")
    return name.strip(), value.strip()
