"""The one typed spec of a knsd Service: flags, `knsd.yaml`, rendering and the local runtime all use it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from knsd.errors import UsageError
from knsd.knative import annotations as a
from knsd.knative.config import KPA_CLASS
from knsd.knative.goconv import go_float

Profile = Literal["generic", "ack", "tke"]
Affinity = Literal["cookie", "none"]
MIN_IDLE_TIMEOUT = 30  # twice knsd serve's keep-alive interval for streamed requests (15 s)
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
    # Knative's responseStartTimeoutSeconds and idleTimeoutSeconds; None: the request timeout (see below).
    response_start_timeout: int | None = None
    idle_timeout: int | None = None
    profile: Profile = "generic"
    affinity: Affinity | None = None  # None: the profile's default (cookie for ack)
    cookie_name: str = "sd"
    cookie_timeout: int = 1800
    service_annotations: tuple[tuple[str, str], ...] = ()
    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()
    gpu: int | None = None  # None: the profile's default (1 for generic and ack)
    gpu_specs: tuple[str, ...] = ()  # ACK ECI instance types; empty: Alibaba's published defaults for ack
    gpu_driver: str | None = None
    qgpu_core: int | None = None
    qgpu_memory: int | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[str, ...] = ()  # kubectl taint syntax: key[=value]:Effect
    runtime_class: str | None = None
    model_pvc_size: str = "20Gi"
    storage_class: str | None = None
    # Gray release (kn's flags): the revision's own name, the split and tags; see knsd/traffic.py.
    revision_name: str | None = None  # spec.template.metadata.name; must start with "<name>-"
    traffic: tuple[tuple[str, int], ...] = ()  # (REF, PERCENT); REF: @latest, a revision or a tag
    tags: tuple[tuple[str, str], ...] = ()  # (REF, TAG)
    quantize: str = "none"  # `knsd serve --quantize`: none, int8 or fp8 (fp8: CUDA compute capability >= 8.9)
    # Add-ons: by default `knsd serve` reads Lora/, ControlNet/ and embeddings/ next to the model (on the model
    # PVC); a PVC named here is mounted read-only at /addons/<kind> instead.
    lora_pvc: str | None = None
    controlnet_pvc: str | None = None
    embeddings_pvc: str | None = None
    lora_overlap_steps: int = 0  # `knsd serve --lora-overlap-steps`
    # `knsd gateway` in front of the route (async jobs, cache, tenants, breaker; state in Redis).
    gateway: bool = False
    gateway_replicas: int = 2
    gateway_args: tuple[str, ...] = ()  # more `knsd gateway` flags, e.g. "--rate=*=5/s"
    gateway_keys_secret: str | None = None  # a Secret whose key `api-keys` holds NAME=KEY lines
    redis_url: str | None = (
        None  # an existing Redis; None: a Redis StatefulSet (locally, Debian's redis-server)
    )
    redis_storage: str = "1Gi"

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
        for flag, value in (
            ("--response-start-timeout", self.response_start_timeout),
            ("--idle-timeout", self.idle_timeout),
        ):
            if value is not None and not 0 < value <= self.request_timeout:
                raise UsageError(
                    flag, f"must be between 1 and the request timeout ({self.request_timeout} s), got {value}"
                )
        if self.idle_timeout is not None and self.idle_timeout < MIN_IDLE_TIMEOUT:
            raise UsageError(
                "--idle-timeout",
                f"must be at least {MIN_IDLE_TIMEOUT} s: a streamed request is silent for up to "
                f"{MIN_IDLE_TIMEOUT // 2} s between keep-alive comments, got {self.idle_timeout}",
            )
        if self.cookie_timeout <= 0:
            raise UsageError(
                "--cookie-timeout", f"must be a positive number of seconds, got {self.cookie_timeout}"
            )
        if self.profile not in ("generic", "ack", "tke"):
            raise UsageError("--profile", f"must be generic, ack or tke, got {self.profile!r}")
        if not 1 <= self.port <= 65535:
            raise UsageError("--port", f"must be between 1 and 65535, got {self.port}")
        if self.gpu is not None and self.gpu < 0:
            raise UsageError("--gpu", f"must be 0 or more, got {self.gpu}")
        core = self.qgpu_core
        if core is not None and not (
            (5 <= core <= 100 and core % 5 == 0) or (core > 100 and core % 100 == 0)
        ):
            raise UsageError("--qgpu-core", f"must be 5-100 in steps of 5, or a multiple of 100, got {core}")
        if not 0 <= self.lora_overlap_steps <= 150:
            raise UsageError(
                "--lora-overlap-steps", f"must be between 0 and 150, got {self.lora_overlap_steps}"
            )
        if self.quantize not in ("none", "int8", "fp8"):
            raise UsageError("--quantize", f"must be none, int8 or fp8, got {self.quantize!r}")
        if self.gateway_replicas < 1:
            raise UsageError("--gateway-replicas", f"must be at least 1, got {self.gateway_replicas}")
        if self.qgpu_memory is not None and self.qgpu_memory < 1:
            raise UsageError("--qgpu-memory", f"must be at least 1 (GiB), got {self.qgpu_memory}")

    @property
    def effective_gpu(self) -> int:
        """`nvidia.com/gpu` limit: 1 by default for generic and ack (an ECI GPU pod needs it), 0 for tke."""
        if self.gpu is not None:
            return self.gpu
        return 0 if self.profile == "tke" else 1

    @property
    def request_timeout(self) -> int:
        """timeoutSeconds: the most a request may take, waiting included (Knative's default 300 s)."""
        return self.timeout or 300

    # Both timers of queue-proxy and the activator run from the moment a request arrives: a request waiting
    # behind others at containerConcurrency 1, or a plain (not streamed) one, sends nothing until its image
    # is done. So by default both equal the request timeout, set explicitly: Knative would otherwise cap the
    # response start at 300 s when timeoutSeconds is larger, and a cluster's revision-idle-timeout-seconds
    # would apply. A streamed request sends its first bytes when the pod admits it and then at least every
    # 15 s (keep-alive comments), so --idle-timeout can be lowered when every client streams.
    @property
    def effective_response_start_timeout(self) -> int:
        """responseStartTimeoutSeconds: --response-start-timeout, else the request timeout."""
        return self.response_start_timeout or self.request_timeout

    @property
    def effective_idle_timeout(self) -> int:
        """idleTimeoutSeconds: --idle-timeout, else the request timeout."""
        return self.idle_timeout or self.request_timeout

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
        for key in ("env", "annotations", "service_annotations", "requests", "limits", "node_selector"):
            data[key] = [list(kv) for kv in getattr(self, key)]
        data["gpu_specs"] = list(self.gpu_specs)
        data["tolerations"] = list(self.tolerations)
        data["traffic"] = [list(kv) for kv in self.traffic]
        data["tags"] = [list(kv) for kv in self.tags]
        data["gateway_args"] = list(self.gateway_args)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError("-f", f"unknown spec keys: {', '.join(unknown)}")
        values = dict(data)
        for key in ("env", "annotations", "service_annotations", "requests", "limits", "node_selector"):
            if key in values:
                values[key] = tuple(tuple(kv) for kv in values[key])
        for key in ("gpu_specs", "tolerations", "gateway_args"):
            if key in values:
                values[key] = tuple(values[key])
        if "traffic" in values:
            values["traffic"] = _traffic_pairs(values["traffic"])
        if "tags" in values:
            values["tags"] = tuple((str(ref), str(tag)) for ref, tag in _pairs(values["tags"], "--tag"))
        return cls(**values)


def _pairs(value: Any, flag: str) -> list[tuple[Any, Any]]:
    """`{REF: X}`, `[[REF, X]]` or `["REF=X"]` (knsd.yaml accepts all three)."""
    if isinstance(value, dict):
        return list(value.items())
    out = []
    for item in value or []:
        if isinstance(item, str):
            ref, sep, rest = item.rpartition("=")
            if not sep:
                raise UsageError(flag, f"expecting the value format in value1=value2, given {item}")
            out.append((ref, rest))
        else:
            ref, rest = item
            out.append((ref, rest))
    return out


def _traffic_pairs(value: Any) -> tuple[tuple[str, int], ...]:
    try:
        return tuple((str(ref), int(str(pct).removesuffix("%"))) for ref, pct in _pairs(value, "--traffic"))
    except (TypeError, ValueError) as exc:
        raise UsageError("--traffic", f"expected REF=PERCENT pairs, got {value!r}") from exc
