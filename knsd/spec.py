"""The one typed spec of a knsd Service: flags, `knsd.yaml`, rendering and the local runtime all use it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from knsd.autoscaling import annotations as a
from knsd.autoscaling.config import KPA_CLASS
from knsd.errors import UsageError
from knsd.goconv import go_float

Profile = Literal["generic", "ack", "tke"]
Affinity = Literal["cookie", "none"]
NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # a DNS-1035 label, as Knative requires of Service names


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Stable Diffusion Knative Service: what to run and how it scales."""

    name: str = "sd"
    namespace: str = "default"
    image: str = "knsd:latest"
    port: int = 7860
    env: tuple[tuple[str, str], ...] = ()
    model: str = "tiny"
    model_pvc: str | None = None
    model_mount: str = "/models"
    concurrency_limit: int = 1
    scale_min: int = 0
    scale_max: int = 10
    scale_init: int | None = None
    scale_target: float | None = None
    # 100 %: with containerConcurrency 1, Knative's default 70 % means two pods per request (and panic).
    scale_utilization: float = 100.0
    scale_window: str | None = None
    scale_down_delay: str | None = None
    scale_to_zero_retention: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    timeout: int | None = None
    profile: Profile = "generic"
    affinity: Affinity | None = None  # None: the profile's default (cookie for ack)
    cookie_name: str = "sd"
    cookie_timeout: int = 1800

    def __post_init__(self) -> None:
        if not NAME.match(self.name) or len(self.name) > 63:
            raise UsageError(
                "NAME",
                f"{self.name!r} is not a valid Service name: lowercase letters, digits and '-', "
                "starting with a letter, at most 63 characters",
            )
        if not 0 <= self.concurrency_limit <= 1000:
            raise UsageError(
                "--concurrency-limit", f"must be between 0 and 1000, got {self.concurrency_limit}"
            )
        if self.scale_min < 0:
            raise UsageError("--scale-min", f"must be 0 or more, got {self.scale_min}")
        if self.scale_max < 0:
            raise UsageError("--scale-max", f"must be 0 (unlimited) or more, got {self.scale_max}")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError("--timeout", f"must be a positive number of seconds, got {self.timeout}")
        if self.cookie_timeout <= 0:
            raise UsageError(
                "--cookie-timeout", f"must be a positive number of seconds, got {self.cookie_timeout}"
            )

    @property
    def effective_affinity(self) -> Affinity:
        if self.affinity is not None:
            return self.affinity
        return "cookie" if self.profile == "ack" else "none"

    def autoscaling_annotations(self) -> dict[str, str]:
        """The revision template's `autoscaling.knative.dev/*` annotations; `--annotation` wins."""
        out = {
            a.CLASS: KPA_CLASS,
            a.METRIC: "concurrency",
            a.MIN_SCALE: str(self.scale_min),
            a.MAX_SCALE: str(self.scale_max),
            a.TARGET_UTILIZATION: go_float(self.scale_utilization),
        }
        if self.scale_init is not None:
            out[a.INITIAL_SCALE] = str(self.scale_init)
        if self.scale_target is not None:
            out[a.TARGET] = go_float(self.scale_target)
        if self.scale_window is not None:
            out[a.WINDOW] = self.scale_window
        if self.scale_down_delay is not None:
            out[a.SCALE_DOWN_DELAY] = self.scale_down_delay
        if self.scale_to_zero_retention is not None:
            out[a.SCALE_TO_ZERO_POD_RETENTION] = self.scale_to_zero_retention
        out.update(dict(self.annotations))
        return out

    def template_annotations(self) -> dict[str, str]:
        """Every annotation on the revision template (autoscaling and the rest)."""
        return self.autoscaling_annotations()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["env"] = [list(kv) for kv in self.env]
        data["annotations"] = [list(kv) for kv in self.annotations]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError("-f", f"unknown spec keys: {', '.join(unknown)}")
        values = dict(data)
        for key in ("env", "annotations"):
            if key in values:
                values[key] = tuple(tuple(kv) for kv in values[key])
        return cls(**values)
