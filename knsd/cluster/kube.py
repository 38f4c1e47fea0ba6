"""The Kubernetes adapter: the one module that imports `kubernetes`; ApiException becomes ClusterError here."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from knsd.cluster.podrecord import PodRecord
from knsd.errors import ClusterError


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def pod_record(pod: Any) -> PodRecord:
    """A V1Pod as the load tester's PodRecord (Ready = the Ready condition is True)."""
    ready_at = None
    conditions = (pod.status.conditions or []) if pod.status else []
    for condition in conditions:
        if condition.type == "Ready" and condition.status == "True":
            ready_at = _ts(condition.last_transition_time)
    return PodRecord(
        name=pod.metadata.name,
        created=_ts(pod.metadata.creation_timestamp) or 0.0,
        ready_at=ready_at,
        gone_at=_ts(pod.metadata.deletion_timestamp),
    )


@dataclass
class KubeClient:
    """An API client for one namespace."""

    api: Any  # kubernetes.client.ApiClient
    namespace: str

    @classmethod
    def connect(
        cls, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> KubeClient:
        """From a kubeconfig (or in-cluster config); a missing or bad config is a ClusterError."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        configuration = client.Configuration()
        try:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = active if context is None else next(c for c in contexts if c["name"] == context)
            default_ns = chosen.get("context", {}).get("namespace") or "default"
        except (ConfigException, FileNotFoundError, StopIteration, TypeError) as exc:
            if kubeconfig is None and context is None:
                try:
                    config.load_incluster_config(client_configuration=configuration)
                    default_ns = "default"
                except ConfigException:
                    raise ClusterError(
                        f"no usable kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG"
                    ) from exc
            else:
                raise ClusterError(f"cannot use kubeconfig {kubeconfig or '~/.kube/config'}: {exc}") from exc
        return cls(client.ApiClient(configuration), namespace or default_ns)

    def watch_pods(
        self, selector: str, stop: threading.Event, synced: Callable[[], None]
    ) -> Iterator[tuple[str, PodRecord]]:
        """List, then watch, the pods matching `selector` until `stop` is set."""
        from kubernetes import client, watch
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api)
        try:
            listing = core.list_namespaced_pod(self.namespace, label_selector=selector)
        except ApiException as exc:
            raise translate(exc, "list", "pods") from exc
        except Exception as exc:
            raise unreachable(exc) from exc
        for pod in listing.items:
            yield "ADDED", pod_record(pod)
        synced()
        version = listing.metadata.resource_version if listing.metadata else None
        while not stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    core.list_namespaced_pod, self.namespace, label_selector=selector,
                    resource_version=version, timeout_seconds=5,
                ):  # fmt: skip
                    pod = event["object"]
                    version = pod.metadata.resource_version or version
                    yield event["type"], pod_record(pod)
                    if stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:  # resource version too old: list again
                    listing = core.list_namespaced_pod(self.namespace, label_selector=selector)
                    version = listing.metadata.resource_version if listing.metadata else None
                    for pod in listing.items:
                        yield "MODIFIED", pod_record(pod)
                    continue
                raise translate(exc, "watch", "pods") from exc
            finally:
                w.stop()


def _status_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(getattr(exc, "body", "") or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def translate(exc: Any, verb: str, resource: str, namespace: str | None = None) -> ClusterError:
    """An ApiException as a ClusterError with a clear message (the one place this happens)."""
    status = getattr(exc, "status", None)
    body = _status_body(exc)
    message = body.get("message") or getattr(exc, "reason", "") or str(exc)
    where = f" in namespace {namespace!r}" if namespace else ""
    if status == 403:
        return ClusterError(f"Forbidden: cannot {verb} {resource}{where}: {message}")
    if status == 401:
        return ClusterError("Unauthorized: the API server rejected the credentials of your kubeconfig")
    if status == 404 and resource.endswith(KNATIVE_GROUP) and not (body.get("details") or {}).get("name"):
        return ClusterError(
            f"Knative Serving is not installed: the API server has no {KNATIVE_GROUP}/{KNATIVE_VERSION} API "
            "(install Knative Serving, or use --local)"
        )
    if status in (400, 422) and "admission webhook" in message:
        return ClusterError(f"Knative rejected the Service: {message}")
    return ClusterError(f"Kubernetes API error {status} on {verb} {resource}{where}: {message}")


KNATIVE_GROUP = "serving.knative.dev"
KNATIVE_VERSION = "v1"
SERVICES = f"services.{KNATIVE_GROUP}"


def unreachable(exc: Exception) -> ClusterError:
    """A transport failure, or an answer the client could not read, as a ClusterError."""
    import urllib3

    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return ClusterError(f"cannot reach the Kubernetes API server: {exc}")
    return ClusterError(f"unexpected answer from the Kubernetes API server: {type(exc).__name__}: {exc}")


def _call(
    fn: Callable[..., Any],
    verb: str,
    resource: str,
    namespace: str,
    *args: Any,
    missing_ok: bool = False,
    **kwargs: Any,
) -> Any:
    """Call the API; errors become ClusterError here. With `missing_ok`, a missing object gives None."""
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if missing_ok and _is_missing(exc):
            return None
        raise translate(exc, verb, resource, namespace) from exc
    except ClusterError:
        raise
    except Exception as exc:
        raise unreachable(exc) from exc


def _is_missing(exc: Any) -> bool:
    """A 404 for a missing object (not for a missing API group)."""
    return getattr(exc, "status", None) == 404 and bool((_status_body(exc).get("details") or {}).get("name"))


class Cluster:
    """Knative Services, their pods and PVCs in one namespace."""

    def __init__(self, kube: KubeClient) -> None:
        from kubernetes import client

        self.kube = kube
        self.namespace = kube.namespace
        self.custom = client.CustomObjectsApi(kube.api)
        self.core = client.CoreV1Api(kube.api)

    def get_service(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = _call(
            self.custom.get_namespaced_custom_object, "get", SERVICES, self.namespace,
            KNATIVE_GROUP, KNATIVE_VERSION, self.namespace, "services", name, missing_ok=True,
        )  # fmt: skip
        return found

    def apply_service(self, obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Create, or update an existing Service in place; returns ("created"|"updated", the object)."""
        name = obj["metadata"]["name"]
        existing = self.get_service(name)
        if existing is None:
            created = _call(self.custom.create_namespaced_custom_object, "create", SERVICES, self.namespace,
                            KNATIVE_GROUP, KNATIVE_VERSION, self.namespace, "services", obj)  # fmt: skip
            return "created", created
        patch = {"metadata": {"labels": obj["metadata"].get("labels"), "annotations": obj["metadata"].get("annotations")},
                 "spec": _declarative(obj["spec"])}  # fmt: skip
        patched = _call(self.custom.patch_namespaced_custom_object, "patch", SERVICES, self.namespace,
                        KNATIVE_GROUP, KNATIVE_VERSION, self.namespace, "services", name, patch,
                        _content_type="application/merge-patch+json")  # fmt: skip
        return "updated", patched

    def delete_service(self, name: str) -> bool:
        """Delete; False if there was nothing to delete."""
        gone = _call(self.custom.delete_namespaced_custom_object, "delete", SERVICES, self.namespace,
                     KNATIVE_GROUP, KNATIVE_VERSION, self.namespace, "services", name, missing_ok=True)  # fmt: skip
        return gone is not None

    def service_pods(self, name: str) -> list[dict[str, Any]]:
        listing = _call(self.core.list_namespaced_pod, "list", "pods", self.namespace, self.namespace,
                        label_selector=f"{KNATIVE_GROUP}/service={name}")  # fmt: skip
        return [self.kube.api.sanitize_for_serialization(p) for p in listing.items]

    def apply_pvc(self, obj: dict[str, Any]) -> str:
        """Create the PVC unless it exists (a claim's spec is immutable)."""
        name = obj["metadata"]["name"]
        found = _call(self.core.read_namespaced_persistent_volume_claim, "get", "persistentvolumeclaims",
                      self.namespace, name, self.namespace, missing_ok=True)  # fmt: skip
        if found is not None:
            return "exists"
        _call(self.core.create_namespaced_persistent_volume_claim, "create", "persistentvolumeclaims", self.namespace,
              self.namespace, obj)  # fmt: skip
        return "created"

    def apply_object(self, obj: dict[str, Any]) -> str:
        """Create a Deployment, StatefulSet or Service, or merge-patch the one that exists."""
        from kubernetes import client

        api_name, read, create, patch, resource = _KINDS[obj["kind"]]
        api = getattr(client, api_name)(self.kube.api)
        name = obj["metadata"]["name"]
        found = _call(
            getattr(api, read), "get", resource, self.namespace, name, self.namespace, missing_ok=True
        )
        if found is None:
            _call(getattr(api, create), "create", resource, self.namespace, self.namespace, obj)
            return "created"
        body = {"metadata": {"labels": obj["metadata"].get("labels")}, "spec": obj["spec"]}
        if obj["kind"] == "StatefulSet":  # its claim templates cannot change once created
            body["spec"] = {k: v for k, v in obj["spec"].items() if k != "volumeClaimTemplates"}
        _call(getattr(api, patch), "patch", resource, self.namespace, name, self.namespace, body,
              _content_type="application/merge-patch+json")  # fmt: skip
        return "updated"


# kind -> (API class, read, create, patch, resource name for messages)
_KINDS = {
    "Deployment": ("AppsV1Api", "read_namespaced_deployment", "create_namespaced_deployment",
                   "patch_namespaced_deployment", "deployments.apps"),
    "StatefulSet": ("AppsV1Api", "read_namespaced_stateful_set", "create_namespaced_stateful_set",
                    "patch_namespaced_stateful_set", "statefulsets.apps"),
    "Service": ("CoreV1Api", "read_namespaced_service", "create_namespaced_service",
                "patch_namespaced_service", "services"),
}  # fmt: skip


def _declarative(spec: dict[str, Any]) -> dict[str, Any]:
    """A merge patch keeps what it does not mention: clear an earlier deploy's traffic split and revision
    name unless this spec sets them (Knative then defaults the traffic to 100 % @latest and names the
    revision; a kept name with a changed template would be rejected)."""
    out = {"traffic": None, **spec}
    template = dict(out["template"])
    template["metadata"] = {"name": None, **(template.get("metadata") or {})}
    out["template"] = template
    return out
