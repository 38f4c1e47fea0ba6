"""The ServiceSpec flags, defined once and added to every command that takes a spec (deploy, render, ...).

Flags follow `kn service create` where it has one. `-f knsd.yaml` gives a base spec; flags override it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml

from knsd.errors import UsageError
from knsd.knative.config import AutoscalerConfig, ConfigError, parse_config, validate_config
from knsd.service.spec import ServiceSpec
from knsd.service.traffic import parse_tags, parse_traffic, untag


def _pairs(flag: str, values: list[str] | None) -> tuple[tuple[str, str], ...]:
    out = []
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(flag, f"expected KEY=VALUE, got {item!r}")
        out.append((key, value))
    return tuple(out)


# name -> (annotation, typer.Option); defaults are None so a knsd.yaml value is not overridden silently.
SPEC_OPTIONS: dict[str, tuple[Any, Any]] = {
    "name": (str | None, typer.Option(None, "--name", help="Service name [default: sd]")),
    "file": (Path | None, typer.Option(None, "-f", "--file", help="A knsd.yaml spec; flags override it.")),
    "model": (
        str | None,
        typer.Option(None, "--model", help="'tiny', a diffusers folder or a checkpoint file [default: tiny]"),
    ),
    "concurrency_limit": (
        int | None,
        typer.Option(None, "--concurrency-limit", help="containerConcurrency, 0-1000 [default: 1]"),
    ),
    "scale_min": (int | None, typer.Option(None, "--scale-min", help="min-scale [default: 0]")),
    "scale_max": (
        int | None,
        typer.Option(None, "--scale-max", help="max-scale, 0 = unlimited [default: 10]"),
    ),
    "scale_init": (
        int | None,
        typer.Option(None, "--scale-init", help="initial-scale [default: cluster's, 1]"),
    ),
    "scale_target": (float | None, typer.Option(None, "--scale-target", help="per-pod concurrency target")),
    "scale_utilization": (
        float | None,
        typer.Option(None, "--scale-utilization", help="target-utilization-percentage, 1-100 [default: 100]"),
    ),
    "scale_window": (
        str | None,
        typer.Option(None, "--scale-window", help="stable window, e.g. 60s (6s-1h)"),
    ),
    "scale_down_delay": (str | None, typer.Option(None, "--scale-down-delay", help="e.g. 30s (0s-1h)")),
    "scale_to_zero_retention": (
        str | None,
        typer.Option(None, "--scale-to-zero-retention", help="scale-to-zero-pod-retention-period"),
    ),
    "annotation": (
        list[str] | None,
        typer.Option(None, "--annotation", help="K=V on the revision template (repeatable)"),
    ),
    "env": (list[str] | None, typer.Option(None, "--env", help="K=V environment variable (repeatable)")),
    "timeout": (
        int | None,
        typer.Option(None, "--timeout", help="request timeout in seconds [default: 300]"),
    ),
    "affinity": (str | None, typer.Option(None, "--affinity", help="cookie or none [default: profile's]")),
    "cookie_name": (str | None, typer.Option(None, "--cookie-name", help="affinity cookie [default: sd]")),
    "cookie_timeout": (
        int | None,
        typer.Option(None, "--cookie-timeout", help="affinity cookie max-age, seconds [default: 1800]"),
    ),
    "namespace": (
        str | None,
        typer.Option(None, "--namespace", "-n", help="Kubernetes namespace [default: default]"),
    ),
    "image": (
        str | None,
        typer.Option(None, "--image", help="container image running knsd serve [default: knsd:latest]"),
    ),
    "port": (int | None, typer.Option(None, "--port", help="container port [default: 7860]")),
    "profile": (str | None, typer.Option(None, "--profile", help="generic, ack or tke [default: generic]")),
    "gpu": (
        int | None,
        typer.Option(None, "--gpu", help="nvidia.com/gpu limit [default: 1 for generic and ack]"),
    ),
    "gpu_specs": (
        str | None,
        typer.Option(None, "--gpu-specs", help="ACK k8s.aliyun.com/eci-use-specs, comma-separated"),
    ),
    "gpu_driver": (
        str | None,
        typer.Option(None, "--gpu-driver", help="ACK k8s.aliyun.com/eci-gpu-driver-version, e.g. tesla=535"),
    ),
    "qgpu_core": (
        int | None,
        typer.Option(None, "--qgpu-core", help="TKE qGPU compute, percent of a card (5-100 step 5)"),
    ),
    "qgpu_memory": (int | None, typer.Option(None, "--qgpu-memory", help="TKE qGPU memory, GiB")),
    "node_selector": (
        list[str] | None,
        typer.Option(None, "--node-selector", help="K=V (repeatable; needs a config-features flag)"),
    ),
    "toleration": (
        list[str] | None,
        typer.Option(None, "--toleration", help="key[=value]:Effect (repeatable; needs a flag)"),
    ),
    "runtime_class": (
        str | None,
        typer.Option(None, "--runtime-class", help="runtimeClassName (needs a flag)"),
    ),
    "request": (list[str] | None, typer.Option(None, "--request", help="cpu=1,memory=8Gi (repeatable)")),
    "limit": (list[str] | None, typer.Option(None, "--limit", help="cpu=4,memory=16Gi (repeatable)")),
    "model_pvc": (
        str | None,
        typer.Option(None, "--model-pvc", help="PersistentVolumeClaim holding the model"),
    ),
    "model_mount": (
        str | None,
        typer.Option(None, "--model-mount", help="where the PVC is mounted [default: /models]"),
    ),
    "model_pvc_size": (
        str | None,
        typer.Option(None, "--model-pvc-size", help="PVC size with --with-storage [default: 20Gi]"),
    ),
    "quantize": (
        str | None,
        typer.Option(None, "--quantize", help="knsd serve --quantize: none, int8 or fp8 [default: none]"),
    ),
    "storage_class": (
        str | None,
        typer.Option(None, "--storage-class", help="PVC storage class with --with-storage"),
    ),
    "lora_pvc": (
        str | None,
        typer.Option(None, "--lora-pvc", help="PVC of LoRA files [default: Lora/ next to the model]"),
    ),
    "controlnet_pvc": (
        str | None,
        typer.Option(
            None, "--controlnet-pvc", help="PVC of ControlNet models [default: ControlNet/ next to the model]"
        ),
    ),
    "embeddings_pvc": (
        str | None,
        typer.Option(
            None, "--embeddings-pvc", help="PVC of embeddings [default: embeddings/ next to the model]"
        ),
    ),
    "lora_overlap_steps": (
        int | None,
        typer.Option(None, "--lora-overlap-steps", help="knsd serve --lora-overlap-steps [default: 0]"),
    ),
    "gateway": (
        bool | None,
        typer.Option(
            None, "--gateway/--no-gateway", help="knsd gateway in front of the route, Redis behind it"
        ),
    ),
    "gateway_replicas": (
        int | None,
        typer.Option(None, "--gateway-replicas", help="gateway Deployment replicas [default: 2]"),
    ),
    "gateway_arg": (
        list[str] | None,
        typer.Option(
            None, "--gateway-arg", help="a knsd gateway flag, e.g. --gateway-arg=--rate=*=5/s (repeatable)"
        ),
    ),
    "gateway_keys_secret": (
        str | None,
        typer.Option(None, "--gateway-keys-secret", help="Secret with NAME=KEY lines under key api-keys"),
    ),
    "redis_url": (
        str | None,
        typer.Option(None, "--redis-url", help="an existing Redis for the gateway [default: one of its own]"),
    ),
    "redis_storage": (
        str | None,
        typer.Option(None, "--redis-storage", help="the Redis StatefulSet's PVC size [default: 1Gi]"),
    ),
    "annotation_service": (
        list[str] | None,
        typer.Option(None, "--annotation-service", help="K=V on the Service's own metadata"),
    ),
    "response_start_timeout": (
        int | None,
        typer.Option(
            None,
            "--response-start-timeout",
            help="responseStartTimeoutSeconds: seconds until the first byte [default: --timeout]",
        ),
    ),
    "idle_timeout": (
        int | None,
        typer.Option(
            None,
            "--idle-timeout",
            help="idleTimeoutSeconds: seconds without a byte [default: --timeout; >= 30 when lowered]",
        ),
    ),
    "revision_name": (
        str | None,
        typer.Option(
            None, "--revision-name", help="the new revision's name, starting with NAME- (kn's flag)"
        ),
    ),
    "traffic": (
        list[str] | None,
        typer.Option(None, "--traffic", help="REF=PERCENT, REF a revision, a tag or @latest (repeatable)"),
    ),
    "tag": (list[str] | None, typer.Option(None, "--tag", help="REF=TAG: tag a revision (repeatable)")),
    "untag": (list[str] | None, typer.Option(None, "--untag", help="TAG: remove a tag (repeatable)")),
}


def _resource_pairs(flag: str, values: list[str]) -> tuple[tuple[str, str], ...]:
    """kn's `--request cpu=100m,memory=256Mi` (comma-separated, repeatable)."""
    items = [item for value in values for item in value.split(",") if item]
    return _pairs(flag, items)


def autoscaler_config_from(pairs: list[str]) -> tuple[AutoscalerConfig, dict[str, str]]:
    """`--autoscaler-config KEY=VALUE` pairs, parsed and validated with Knative's rules and messages."""
    data = dict(_pairs("--autoscaler-config", pairs))
    try:
        return validate_config(parse_config(data)), data
    except ConfigError as exc:
        raise UsageError("--autoscaler-config", str(exc)) from exc


def build_spec(values: dict[str, Any]) -> ServiceSpec:
    """Spec from `-f` (if given) with the flags that were set on top."""
    base: dict[str, Any] = {}
    path = values.pop("file", None)
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError("-f", f"cannot read {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise UsageError("-f", f"{path} must hold a mapping of spec fields")
        base = ServiceSpec.from_json({k.replace("-", "_"): v for k, v in loaded.items()}).to_json()
    overrides: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == []:
            continue
        if key == "annotation":
            overrides["annotations"] = tuple(base.get("annotations", ())) + _pairs("--annotation", value)
        elif key == "annotation_service":
            overrides["service_annotations"] = tuple(base.get("service_annotations", ())) + _pairs(
                "--annotation-service", value
            )
        elif key == "env":
            overrides["env"] = tuple(base.get("env", ())) + _pairs("--env", value)
        elif key == "node_selector":
            overrides["node_selector"] = _pairs("--node-selector", value)
        elif key == "toleration":
            overrides["tolerations"] = tuple(value)
        elif key in ("request", "limit"):
            overrides[key + "s"] = _resource_pairs(f"--{key}", value)
        elif key == "gateway_arg":
            overrides["gateway_args"] = tuple(base.get("gateway_args", ())) + tuple(value)
        elif key == "gpu_specs":
            overrides["gpu_specs"] = tuple(v.strip() for v in value.split(",") if v.strip())
        elif key == "traffic":
            overrides["traffic"] = parse_traffic(value)
        elif key in ("tag", "untag"):
            continue  # below: untag first, then tag, as kn does
        elif key == "affinity" and value not in ("cookie", "none"):
            raise UsageError("--affinity", f"must be cookie or none, got {value!r}")
        else:
            overrides[key] = value
    if values.get("tag") or values.get("untag"):
        tags = tuple((str(r), str(t)) for r, t in base.get("tags", ()))
        name = overrides.get("name", base.get("name", "sd"))
        overrides["tags"] = untag(tags, values.get("untag") or [], name) + parse_tags(values.get("tag") or [])
    return ServiceSpec.from_json({**base, **overrides})


def with_spec(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the spec flags to a Typer command; it receives `spec: ServiceSpec` instead of them."""
    signature = inspect.signature(command)
    own = [p for name, p in signature.parameters.items() if name != "spec"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        for name, (annotation, option) in SPEC_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        spec_values = {name: kwargs.pop(name) for name in SPEC_OPTIONS}
        return command(spec=spec_values, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
    )
    return wrapper
