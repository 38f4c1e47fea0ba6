"""What a pod watcher knows of one pod: the plain type shared by the cluster client and the load tester."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PodRecord:
    """What is known of one pod; times are wall-clock seconds."""

    name: str
    created: float
    ready_at: float | None = None
    gone_at: float | None = None

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and self.gone_at is None

    @property
    def startup(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.created
