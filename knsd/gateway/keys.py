"""Redis key names of one gateway deployment, all under the hash tag `{prefix}` (one Redis Cluster slot, so
every Lua script may touch any of them)."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"  # the stream's consumer group: every gateway replica reads through it


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def base(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def stream(self) -> str:
        """Entries `{job: ID}` in submission order; the consumer group hands each to one worker."""
        return f"{self.base}:stream"

    @property
    def delayed(self) -> str:
        """Jobs waiting for their retry, scored by when it is due (ms)."""
        return f"{self.base}:delayed"

    @property
    def stats(self) -> str:
        """Counts of queued and running jobs, kept by the scripts."""
        return f"{self.base}:stats"

    @property
    def breaker(self) -> str:
        return f"{self.base}:breaker"

    @property
    def slots(self) -> str:
        """Upstream requests in flight, by every replica: token -> lease expiry (ms)."""
        return f"{self.base}:slots"

    @property
    def cache_values(self) -> str:
        return f"{self.base}:cache:values"

    @property
    def cache_index(self) -> str:
        """Cache entry -> when it was stored (ms): the TTL and the oldest-first eviction."""
        return f"{self.base}:cache:index"

    @property
    def cache_bytes(self) -> str:
        return f"{self.base}:cache:bytes"

    @property
    def model(self) -> str:
        """The upstream's model as last seen (for cache keys), with a TTL."""
        return f"{self.base}:model"

    @property
    def events(self) -> str:
        """Pub/sub channel: `done ID`, `progress ID`, `cancel ID`, `slot`, `breaker`."""
        return f"{self.base}:events"

    def job(self, job_id: str) -> str:
        return f"{self.base}:job:{job_id}"

    def lease(self, job_id: str) -> str:
        """Present while a synchronous request still waits for its job."""
        return f"{self.base}:lease:{job_id}"

    def tenant(self, name: str) -> str:
        """A tenant's queued and running counts."""
        return f"{self.base}:tenant:{name}"

    def bucket(self, name: str) -> str:
        return f"{self.base}:bucket:{name}"
