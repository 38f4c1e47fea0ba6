"""Deploying to a cluster: apply, wait for Ready with kn's progress lines, delete and wait until gone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from knsd.errors import ClusterError


class ServiceApi(Protocol):
    def get_service(self, name: str) -> dict[str, Any] | None: ...

    def service_pods(self, name: str) -> list[dict[str, Any]]: ...

    def delete_service(self, name: str) -> bool: ...


def condition(svc: dict[str, Any], kind: str = "Ready") -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = (svc.get("status") or {}).get("conditions") or []
    return next((cond for cond in conditions if cond.get("type") == kind), None)


def pod_problems(pods: list[dict[str, Any]]) -> list[str]:
    """Why pods are not running: image pull errors, crash loops, unschedulable (pure)."""
    out = []
    for pod in pods:
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                out.append(
                    f"pod {name}: {cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".rstrip(
                        ": "
                    )
                )
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") and waiting["reason"] not in ("ContainerCreating", "PodInitializing"):
                out.append(f"pod {name}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
    return out


def _failure(api: ServiceApi, name: str, head: str, cond: dict[str, Any] | None) -> ClusterError:
    lines = [head]
    if cond is not None and (cond.get("reason") or cond.get("message")):
        lines.append(f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": "))
    lines += pod_problems(api.service_pods(name))
    return ClusterError("\n".join(lines))


def wait_ready(
    api: ServiceApi,
    name: str,
    timeout: float,
    progress: Callable[[str], None],
    wait_window: float = 2.0,
    poll: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the Service is Ready at its latest generation; kn's `%7.3fs message` progress lines."""
    start = clock()
    last = None
    false_since: float | None = None
    cond: dict[str, Any] | None = None
    while True:
        svc = api.get_service(name)
        elapsed = clock() - start
        if svc is None:
            raise ClusterError(f"service '{name}' disappeared while waiting for it to become ready")
        current = (svc.get("status") or {}).get("observedGeneration") == (svc.get("metadata") or {}).get(
            "generation"
        )
        cond = condition(svc)
        if current and cond is not None:
            if cond.get("status") == "True":
                progress(f"{elapsed:7.3f}s Ready to serve.")
                return svc
            message = cond.get("message") or cond.get("reason")
            if message and message != last:
                progress(f"{elapsed:7.3f}s {message}")
                last = message
            if cond.get("status") == "False":
                false_since = false_since if false_since is not None else clock()
                if clock() - false_since >= wait_window:
                    raise _failure(api, name, f"service '{name}' failed to become ready", cond)
            else:
                false_since = None
        if elapsed > timeout:
            raise _failure(api, name, f"timeout: service '{name}' not ready after {timeout:g} seconds", cond)
        sleep(poll)


def delete_and_wait(api: ServiceApi, name: str, timeout: float, poll: float = 0.25,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> bool:  # fmt: skip
    """Delete and wait until the API server no longer has it; False if it did not exist."""
    if not api.delete_service(name):
        return False
    deadline = clock() + timeout
    while api.get_service(name) is not None:
        if clock() > deadline:
            raise ClusterError(f"timeout: service '{name}' still exists {timeout:g} seconds after deletion")
        sleep(poll)
    return True
