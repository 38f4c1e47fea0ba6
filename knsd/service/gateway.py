"""The gateway in front of a Service, rendered (pure): its `knsd gateway` flags, its Deployment and Service,
and, unless `redis_url` names an existing one, a Redis StatefulSet with a PersistentVolumeClaim.

Objects are checked here before anything is sent: names, ports, replicas, storage quantities, and that each
selector matches its pods' labels (`gateway_errors`).
"""

from __future__ import annotations

import re
from typing import Any

from knsd.errors import UsageError
from knsd.service.spec import NAME, ServiceSpec

GATEWAY_PORT = 8000
REDIS_PORT = 6379
REDIS_IMAGE = "redis:7.2"
KEYS_FILE = "/etc/knsd/api-keys"
# The flags a deploy sets itself; --gateway-arg may not set them again.
OWN_FLAGS = ("--upstream", "--redis", "--host", "--port", "--port-file", "--redis-prefix", "--api-keys-file")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def gateway_name(spec: ServiceSpec) -> str:
    return f"{spec.name}-gateway"


def redis_name(spec: ServiceSpec) -> str:
    return f"{spec.name}-redis"


def _user_bound(spec: ServiceSpec) -> int | None:
    """`--gateway-arg=--max-inflight=N`, when the user set the bound."""
    for i, arg in enumerate(spec.gateway_args):
        name, eq, value = arg.partition("=")
        if name == "--max-inflight":
            raw = value if eq else (spec.gateway_args[i + 1] if i + 1 < len(spec.gateway_args) else "")
            try:
                return int(raw)
            except ValueError:
                raise UsageError(
                    "--gateway-arg", f"--max-inflight takes a whole number, got {raw!r}"
                ) from None
    return None


def max_inflight(spec: ServiceSpec) -> int:
    """The gateway's bound on generations in flight: max-scale x containerConcurrency, so a burst is exactly
    enough to bring the route to max-scale and no more reaches the activator (or the user's own)."""
    own = _user_bound(spec)
    if own is not None:
        return own
    if spec.scale_max == 0:
        raise UsageError(
            "--gateway",
            "max-scale 0 (unlimited) gives the gateway no in-flight bound: set --scale-max, or "
            "--gateway-arg=--max-inflight=N",
        )
    return spec.scale_max * max(1, spec.concurrency_limit)


def gateway_flags(spec: ServiceSpec, upstream: str, redis_url: str) -> list[str]:
    """`knsd gateway` flags for this Service (listen address and port are added by who runs it)."""
    for arg in spec.gateway_args:
        if arg.split("=")[0] in OWN_FLAGS:
            raise UsageError("--gateway-arg", f"{arg.split('=')[0]} is set by knsd itself, got {arg!r}")
    flags = ["--upstream", upstream, "--redis", redis_url, "--redis-prefix", spec.name]
    if _user_bound(spec) is None:
        flags += ["--max-inflight", str(max_inflight(spec))]
    return flags + list(spec.gateway_args)


def cluster_upstream(spec: ServiceSpec) -> str:
    """The Knative Service's cluster-local address (Knative's route inside the cluster)."""
    return f"http://{spec.name}.{spec.namespace}.svc.cluster.local"


def cluster_redis_url(spec: ServiceSpec) -> str:
    return spec.redis_url or f"redis://{redis_name(spec)}.{spec.namespace}.svc.cluster.local:{REDIS_PORT}/0"


def _labels(spec: ServiceSpec, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "knsd",
        "app.kubernetes.io/managed-by": "knsd",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": component,
    }


def _meta(spec: ServiceSpec, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": _labels(spec, component)}


def render_gateway(spec: ServiceSpec) -> list[dict[str, Any]]:
    """The gateway's Deployment and Service, then Redis's StatefulSet and Service unless `redis_url`."""
    name = gateway_name(spec)
    args = ["gateway", *gateway_flags(spec, cluster_upstream(spec), cluster_redis_url(spec))]
    args += ["--host", "0.0.0.0", "--port", str(GATEWAY_PORT)]
    container: dict[str, Any] = {
        "name": "gateway",
        "image": spec.image,
        "command": ["knsd"],
        "args": args,
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": GATEWAY_PORT}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": GATEWAY_PORT}, "periodSeconds": 10},
        # Small and always on: one CPU core's worth of asyncio; no GPU.
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    pod: dict[str, Any] = {"terminationGracePeriodSeconds": 45, "containers": [container]}
    if spec.gateway_keys_secret:
        container["args"] += ["--api-keys-file", KEYS_FILE]
        container["volumeMounts"] = [{"name": "api-keys", "mountPath": "/etc/knsd", "readOnly": True}]
        pod["volumes"] = [{"name": "api-keys", "secret": {"secretName": spec.gateway_keys_secret,
                                                           "items": [{"key": "api-keys", "path": "api-keys"}]}}]  # fmt: skip
    labels = _labels(spec, "gateway")
    out = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(spec, name, "gateway"),
            "spec": {
                "replicas": spec.gateway_replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(spec, name, "gateway"),
            "spec": {
                "selector": dict(labels),
                "ports": [{"name": "http", "port": 80, "targetPort": GATEWAY_PORT}],
            },
        },
    ]
    if spec.redis_url is None:
        out += _redis(spec)
    return out


def _redis(spec: ServiceSpec) -> list[dict[str, Any]]:
    """One Redis with its append-only file on a PVC (fsync every second), never evicting: jobs are data."""
    name = redis_name(spec)
    labels = _labels(spec, "redis")
    container = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "args": [
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            "/data",
        ],  # fmt: skip
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    claim: dict[str, Any] = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.redis_storage}},
        },
    }
    if spec.storage_class:
        claim["spec"]["storageClassName"] = spec.storage_class
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(spec, name, "redis"),
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": dict(labels)},
                "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}},
                "volumeClaimTemplates": [claim],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(spec, name, "redis"),
            "spec": {
                "clusterIP": "None",
                "selector": labels,
                "ports": [{"name": "redis", "port": REDIS_PORT}],
            },
        },
    ]


def gateway_errors(objects: list[dict[str, Any]]) -> list[str]:
    """What the API server would refuse in these objects, as `Kind/name path: message` lines."""
    out: list[str] = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        name = obj["metadata"]["name"]
        if not NAME.match(name) or len(name) > 63:
            out.append(f"{where} metadata.name: must be a DNS-1035 label of at most 63 characters")
        spec = obj["spec"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            if spec["replicas"] < 1:
                out.append(f"{where} spec.replicas: must be at least 1, got {spec['replicas']}")
            template_labels = spec["template"]["metadata"]["labels"]
            if any(template_labels.get(k) != v for k, v in spec["selector"]["matchLabels"].items()):
                out.append(f"{where} spec.selector: does not match the template's labels")
            pod = spec["template"]["spec"]
            for i, container in enumerate(pod["containers"]):
                for port in container.get("ports", []):
                    if not 1 <= port["containerPort"] <= 65535:
                        out.append(
                            f"{where} spec.template.spec.containers[{i}].ports: {port['containerPort']}"
                        )
                for kind, values in (container.get("resources") or {}).items():
                    out += [f"{where} resources.{kind}.{k}: {v!r} is not a quantity"
                            for k, v in values.items() if not _QUANTITY.match(str(v))]  # fmt: skip
            for volume in pod.get("volumes", []):
                secret = (volume.get("secret") or {}).get("secretName", "")
                if secret and (not _SUBDOMAIN.match(secret) or len(secret) > 253):
                    out.append(
                        f"{where} volumes.{volume['name']}.secret.secretName: {secret!r} is not a valid name"
                    )
            for claim in spec.get("volumeClaimTemplates", []):
                size = claim["spec"]["resources"]["requests"]["storage"]
                if not _QUANTITY.match(str(size)):
                    out.append(
                        f"{where} volumeClaimTemplates.{claim['metadata']['name']}: {size!r} is not a quantity"
                    )
        if obj["kind"] == "Service":
            out += [f"{where} spec.ports: {p['port']}" for p in spec["ports"] if not 1 <= p["port"] <= 65535]
    return out
