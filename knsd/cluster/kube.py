"""The Kubernetes adapter: the one module that imports `kubernetes`; ApiException becomes ClusterError here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from knsd.errors import ClusterError
from knsd.loadtest.watch import PodRecord


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
        except Exception as exc:  # urllib3 connection errors
            raise ClusterError(f"cannot reach the Kubernetes API server: {exc}") from exc
        for pod in listing.items:
            yield "ADDED", pod_record(pod)
        synced()
        version = listing.metadata.resource_version
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
                    version = listing.metadata.resource_version
                    for pod in listing.items:
                        yield "MODIFIED", pod_record(pod)
                    continue
                raise translate(exc, "watch", "pods") from exc
            finally:
                w.stop()


def translate(exc: Any, verb: str, resource: str) -> ClusterError:
    """An ApiException as a ClusterError with a clear message."""
    status = getattr(exc, "status", None)
    if status == 403:
        return ClusterError(f"Forbidden: cannot {verb} {resource} (check the RBAC of your kubeconfig user)")
    if status == 401:
        return ClusterError("Unauthorized: the API server rejected the credentials of your kubeconfig")
    return ClusterError(f"Kubernetes API error {status} on {verb} {resource}: {getattr(exc, 'reason', exc)}")
