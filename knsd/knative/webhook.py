"""What Knative's admission webhook would say about a Service, checked before anything is sent.

Errors use Knative's wording and paths (via `FieldError`); warnings point at the traps that Knative
accepts silently. The rendered object is also validated against the Service CRD's published schema.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from knsd.knative import annotations as a
from knsd.knative.config import AutoscalerConfig
from knsd.knative.fielderror import FieldError, generic, invalid_value, out_of_bounds, render, with_prefix
from knsd.knative.goconv import parse_float
from knsd.knative.trafficrules import template_name_errors, traffic_errors
from knsd.knative.validation import annotation_errors

RESERVED_PORTS = (8012, 8013, 8022, 9090, 9091)  # queue-proxy's and the autoscaler's
PORT_NAMES = ("", "h2c", "http1")
# Fields Knative rejects unless the matching config-features flag is enabled.
FEATURE_FLAGS = {
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "tolerations": "kubernetes.podspec-tolerations",
    "affinity": "kubernetes.podspec-affinity",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
}


@dataclass
class Findings:
    errors: list[FieldError] = field(default_factory=list)
    schema: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.schema

    def message(self) -> str:
        parts = [f"schema: {line}" for line in self.schema]
        if self.errors:
            parts.append(render(self.errors))
        return "\n".join(parts)


@functools.cache
def _schema() -> dict[str, Any]:
    data = json.loads(resources.files("knsd").joinpath("data/service_crd_schema.json").read_text())
    schema: dict[str, Any] = data["openAPIV3Schema"]
    return schema


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Validation against the Service CRD's openAPIV3Schema (structural: types, required, enums)."""
    import jsonschema

    validator = jsonschema.Draft7Validator(_schema())
    out = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        out.append(f"{path}: {error.message}")
    return out


def check_service(
    obj: dict[str, Any], config: AutoscalerConfig | None = None, model: str = "tiny"
) -> Findings:
    """Knative's rules for a Service, plus the CRD schema and knsd's warnings."""
    config = config or AutoscalerConfig()
    found = Findings(schema=schema_errors(obj))
    meta = obj.get("metadata") or {}
    for key in sorted(meta.get("annotations") or {}):
        if key.startswith(a.GROUP):
            found.errors.append(
                FieldError(
                    f'invalid key name "{key}"',
                    ("metadata.annotations",),
                    'autoscaling annotations must be put under "spec.template.metadata.annotations" to work',
                )
            )
    template = (obj.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    found.errors += [
        with_prefix(e, "spec.template.metadata.annotations") for e in annotation_errors(annotations, config)
    ]
    template_name = (template.get("metadata") or {}).get("name")
    if template_name:
        found.errors += template_name_errors(template_name, meta.get("name", ""))
    if "traffic" in (obj.get("spec") or {}):
        found.errors += traffic_errors(obj["spec"]["traffic"] or [])
    pod = template.get("spec") or {}
    found.errors += _pod_errors(pod)
    found.warnings += _warnings(pod, annotations, config, model)
    return found


def _pod_errors(pod: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    base = "spec.template.spec"
    cc = pod.get("containerConcurrency")
    if isinstance(cc, int) and not 0 <= cc <= 1000:
        errors.append(out_of_bounds(cc, 0, 1000, f"{base}.containerConcurrency"))
    timeout = pod.get("timeoutSeconds")
    if isinstance(timeout, int) and not 0 <= timeout <= 600:
        errors.append(out_of_bounds(timeout, 0, 600, f"{base}.timeoutSeconds"))
    for i, container in enumerate(pod.get("containers") or []):
        path = f"{base}.containers[{i}]"
        ports = container.get("ports") or []
        if len(ports) > 1:
            errors.append(generic("more than one container port is set", f"{path}.ports"))
        for port in ports[:1]:
            number = port.get("containerPort")
            if number in RESERVED_PORTS:
                errors.append(invalid_value(number, f"{path}.ports.containerPort"))
            if isinstance(number, int) and not 0 <= number <= 65535:
                errors.append(out_of_bounds(number, 0, 65535, f"{path}.ports.containerPort"))
            if port.get("name", "") not in PORT_NAMES:
                errors.append(
                    FieldError(
                        f"Port name {port['name']} is not allowed",
                        (f"{path}.ports",),
                        "Name must be empty, or one of: 'h2c', 'http1'",
                    )  # fmt: skip
                )
        probe = container.get("readinessProbe") or {}
        if probe and not probe.get("periodSeconds"):
            for name in ("timeoutSeconds", "failureThreshold"):
                if probe.get(name):
                    errors.append(
                        generic(
                            f"{name} is disallowed when periodSeconds is zero",
                            f"{path}.readinessProbe.{name}",
                        )
                    )
    return errors


def _warnings(
    pod: dict[str, Any], annotations: dict[str, str], config: AutoscalerConfig, model: str
) -> list[str]:
    out = []
    cc = pod.get("containerConcurrency")
    utilization = config.container_concurrency_target_fraction * 100
    if a.TARGET_UTILIZATION in annotations:
        with contextlib.suppress(ValueError):
            utilization = parse_float(annotations[a.TARGET_UTILIZATION])
    if cc == 1 and utilization < 100:
        out.append(
            f"containerConcurrency 1 with target utilization {utilization:g}%: Knative wants "
            f"ceil(1/{utilization / 100:g}) = 2 pods for one request and enters panic mode; use --scale-utilization 100"
        )
    timeout = pod.get("timeoutSeconds")
    if isinstance(timeout, int) and timeout > 300 and not pod.get("responseStartTimeoutSeconds"):
        out.append(
            f"timeoutSeconds {timeout} without responseStartTimeoutSeconds: Knative defaults the response start "
            "timeout to 300 s, so a request that has not started answering by then gets a silent 504"
        )
    start = pod.get("responseStartTimeoutSeconds")
    if isinstance(timeout, int) and isinstance(start, int) and 0 < start < timeout:
        out.append(
            f"responseStartTimeoutSeconds {start} below timeoutSeconds {timeout}: a request that waits behind "
            f"others or is not streamed gets a 504 when it has sent nothing for {start} s"
        )
    for name, flag in FEATURE_FLAGS.items():
        if pod.get(name):
            out.append(
                f"spec.template.spec.{name} needs config-features {flag}: enabled (Knative rejects it by default)"
            )
    if any("persistentVolumeClaim" in v for v in pod.get("volumes") or []):
        out.append(
            "a persistentVolumeClaim volume needs config-features kubernetes.podspec-persistent-volume-claim: enabled"
        )
    limits: dict[str, Any] = {}
    for container in pod.get("containers") or []:
        limits.update((container.get("resources") or {}).get("limits") or {})
    has_gpu = any(
        k in limits for k in ("nvidia.com/gpu", "tke.cloud.tencent.com/qgpu-core", "aliyun.com/gpu-mem")
    )
    if model != "tiny" and not has_gpu:
        out.append(
            f"no GPU is requested for model {model!r}: Stable Diffusion on CPU takes minutes per image"
        )
    return out
