"""Rendering a ServiceSpec to Kubernetes objects (pure): the Knative Service and the model PVC.

Keys come out in a fixed order (apiVersion, kind, metadata, spec; then as Knative documents them) so the
YAML diffs well in git.
"""

from __future__ import annotations

from typing import Any

import yaml

from knsd import __version__
from knsd.service.spec import ServiceSpec
from knsd.service.traffic import targets

GPU = "nvidia.com/gpu"
QGPU_CORE = "tke.cloud.tencent.com/qgpu-core"
QGPU_MEMORY = "tke.cloud.tencent.com/qgpu-memory"
ECI_USE_SPECS = "k8s.aliyun.com/eci-use-specs"
ECI_GPU_DRIVER = "k8s.aliyun.com/eci-gpu-driver-version"
# Alibaba Cloud's published Stable Diffusion on Knative example.
ACK_DEFAULT_SPECS = ("ecs.gn5-c4g1.xlarge", "ecs.gn5i-c8g1.2xlarge", "ecs.gn5-c8g1.2xlarge")
ACK_AFFINITY = "serving.knative.dev.alibabacloud/affinity"
ACK_COOKIE_NAME = "serving.knative.dev.alibabacloud/cookie-name"
ACK_COOKIE_TIMEOUT = "serving.knative.dev.alibabacloud/cookie-timeout"
MODELS_VOLUME = "models"
ADDONS_MOUNT = "/addons"  # add-on PVCs of their own are mounted at /addons/Lora, /addons/ControlNet, ...
LABELS = {"app.kubernetes.io/name": "knsd", "app.kubernetes.io/managed-by": "knsd"}


def _model_arg(spec: ServiceSpec) -> str:
    """The --model the pod's `knsd serve` gets: a path under the mount when a PVC holds the model."""
    if spec.model_pvc and spec.model == "tiny":
        return spec.model_mount
    return spec.model


def addon_pvcs(spec: ServiceSpec) -> list[tuple[str, str]]:
    """(folder, claim) for add-on kinds on a PVC of their own; the others stay next to the model."""
    pairs = (
        ("Lora", spec.lora_pvc),
        ("ControlNet", spec.controlnet_pvc),
        ("embeddings", spec.embeddings_pvc),
    )
    return [(kind, claim) for kind, claim in pairs if claim]


def addon_args(spec: ServiceSpec) -> list[str]:
    """`knsd serve` flags for the add-on folders mounted from their own PVCs, and the LoRA overlap."""
    flags = {"Lora": "--lora-dir", "ControlNet": "--controlnet-dir", "embeddings": "--embeddings-dir"}
    out = [a for kind, _ in addon_pvcs(spec) for a in (flags[kind], f"{ADDONS_MOUNT}/{kind}")]
    if spec.lora_overlap_steps:
        out += ["--lora-overlap-steps", str(spec.lora_overlap_steps)]
    return out


def template_annotations(spec: ServiceSpec) -> dict[str, str]:
    """Autoscaling annotations plus the cloud's scheduling ones, on the revision template."""
    out = dict(sorted(spec.autoscaling_annotations().items()))
    if spec.profile == "ack":
        out[ECI_USE_SPECS] = ",".join(spec.gpu_specs or ACK_DEFAULT_SPECS)
    elif spec.gpu_specs:
        out[ECI_USE_SPECS] = ",".join(spec.gpu_specs)
    if spec.gpu_driver:
        out[ECI_GPU_DRIVER] = spec.gpu_driver
    return out


def service_annotations(spec: ServiceSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    if spec.profile == "ack" and spec.effective_affinity == "cookie":
        out[ACK_AFFINITY] = "cookie"
        out[ACK_COOKIE_NAME] = spec.cookie_name
        out[ACK_COOKIE_TIMEOUT] = str(spec.cookie_timeout)
    out.update(dict(spec.service_annotations))
    return out


def _resources(spec: ServiceSpec) -> dict[str, dict[str, str]]:
    limits = dict(spec.limits)
    if spec.effective_gpu and GPU not in limits:
        limits[GPU] = str(spec.effective_gpu)
    if spec.profile == "tke" or spec.qgpu_core is not None or spec.qgpu_memory is not None:
        if spec.qgpu_core is not None or spec.profile == "tke":
            limits.setdefault(QGPU_CORE, str(spec.qgpu_core if spec.qgpu_core is not None else 50))
        if spec.qgpu_memory is not None or spec.profile == "tke":
            limits.setdefault(QGPU_MEMORY, str(spec.qgpu_memory if spec.qgpu_memory is not None else 8))
    out: dict[str, dict[str, str]] = {}
    if spec.requests:
        out["requests"] = dict(spec.requests)
    if limits:
        out["limits"] = limits
    return out


def _toleration(text: str) -> dict[str, str]:
    """kubectl taint syntax: key[=value]:Effect (no value: operator Exists)."""
    rest, _, effect = text.rpartition(":")
    if not rest:
        rest, effect = effect, ""
    key, eq, value = rest.partition("=")
    out = {"key": key, "operator": "Equal" if eq else "Exists"}
    if eq:
        out["value"] = value
    if effect:
        out["effect"] = effect
    return out


def render_service(spec: ServiceSpec) -> dict[str, Any]:
    """The `serving.knative.dev/v1` Service for this spec."""
    container: dict[str, Any] = {
        "name": "knsd",
        "image": spec.image,
        "args": ["--host", "0.0.0.0", "--port", str(spec.port), "--model", _model_arg(spec)]
        + (["--quantize", spec.quantize] if spec.quantize != "none" else [])
        + addon_args(spec),
        "ports": [{"name": "http1", "containerPort": spec.port}],
    }
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in spec.env]
    # An HTTP probe on /readyz: a bare TCP check passes while a 4 GB checkpoint is still loading.
    container["readinessProbe"] = {"httpGet": {"path": "/readyz"}, "periodSeconds": 1, "failureThreshold": 3,
                                   "timeoutSeconds": 1}  # fmt: skip
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    if spec.model_pvc:
        container["volumeMounts"] = [{"name": MODELS_VOLUME, "mountPath": spec.model_mount, "readOnly": True}]
    for kind, _claim in addon_pvcs(spec):
        mount = {"name": f"addons-{kind.lower()}", "mountPath": f"{ADDONS_MOUNT}/{kind}", "readOnly": True}
        container.setdefault("volumeMounts", []).append(mount)
    pod: dict[str, Any] = {
        "containerConcurrency": spec.concurrency_limit,
        "timeoutSeconds": spec.request_timeout,
        "responseStartTimeoutSeconds": spec.effective_response_start_timeout,
        "idleTimeoutSeconds": spec.effective_idle_timeout,
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [_toleration(t) for t in spec.tolerations]
    if spec.runtime_class:
        pod["runtimeClassName"] = spec.runtime_class
    pod["containers"] = [container]
    if spec.model_pvc:
        pod["volumes"] = [
            {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": spec.model_pvc, "readOnly": True}}
        ]
    for kind, claim in addon_pvcs(spec):
        volume = {
            "name": f"addons-{kind.lower()}",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        pod.setdefault("volumes", []).append(volume)
    metadata: dict[str, Any] = {"name": spec.name, "namespace": spec.namespace, "labels": dict(LABELS)}
    annotations = service_annotations(spec)
    if annotations:
        metadata["annotations"] = annotations
    template_meta: dict[str, Any] = {"labels": dict(LABELS), "annotations": template_annotations(spec)}
    if spec.revision_name:
        template_meta = {"name": spec.revision_name, **template_meta}
    service_spec: dict[str, Any] = {"template": {"metadata": template_meta, "spec": pod}}
    traffic = targets(spec.traffic, spec.tags)
    if traffic:
        service_spec["traffic"] = traffic
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": service_spec,
    }


def render_pvc(spec: ServiceSpec) -> dict[str, Any] | None:
    """The PersistentVolumeClaim for the model volume (`--with-storage`), if the spec names one."""
    if not spec.model_pvc:
        return None
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadOnlyMany"],
        "resources": {"requests": {"storage": spec.model_pvc_size}},
    }
    if spec.storage_class:
        pvc_spec["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": spec.model_pvc, "namespace": spec.namespace, "labels": dict(LABELS)},
        "spec": pvc_spec,
    }


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in the order rendered, with a header saying where it came from."""
    header = f"# Rendered by knsd {__version__} (knsd render); edit the spec, not this file.\n"
    docs = [yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120) for obj in objects]
    return header + "---\n".join(docs)
