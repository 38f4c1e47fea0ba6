"""A fake Kubernetes API server on loopback that speaks the real wire format.

Only what knsd uses: pods (list, watch with labelSelector and resourceVersion). Objects are plain JSON
with apiVersion/kind/metadata/status; watch streams newline-delimited `{"type", "object"}` events.
Requests are recorded for assertions. The code under test is the real `kubernetes` client.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.servers import aiohttp_server


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


class FakeKube:
    """The cluster state, changed by tests, observed by knsd through HTTP."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 1
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._watchers: list[
            tuple[asyncio.Queue[dict[str, Any]], asyncio.AbstractEventLoop, str, str | None]
        ] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    # test-side API (thread-safe: runs on the server's loop)

    def _call(self, fn: Any, *args: Any) -> None:
        assert self.loop is not None
        done = asyncio.run_coroutine_threadsafe(self._run(fn, *args), self.loop)
        done.result(5)

    async def _run(self, fn: Any, *args: Any) -> None:
        fn(*args)

    def add_pod(self, name: str, service: str, namespace: str = "default", ready: bool = False) -> None:
        self._call(self._add_pod, name, service, namespace, ready)

    def set_ready(self, name: str, namespace: str = "default") -> None:
        self._call(self._set_ready, name, namespace)

    def delete_pod(self, name: str, namespace: str = "default") -> None:
        self._call(self._delete_pod, name, namespace)

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def _emit(self, kind: str, pod: dict[str, Any]) -> None:
        namespace = pod["metadata"]["namespace"]
        for queue, _, ns, selector in self._watchers:
            if ns == namespace and _matches(pod["metadata"].get("labels", {}), selector):
                queue.put_nowait({"type": kind, "object": copy.deepcopy(pod)})

    def _add_pod(self, name: str, service: str, namespace: str, ready: bool) -> None:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}",
                "resourceVersion": self._bump(),
                "creationTimestamp": _now(),
                "labels": {"serving.knative.dev/service": service, "app": name},
            },
            "spec": {"containers": [{"name": "user-container", "image": "knsd:latest"}]},
            "status": {
                "phase": "Running" if ready else "Pending",
                "conditions": [
                    {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _now()}
                ],
            },
        }
        self.pods[(namespace, name)] = pod
        self._emit("ADDED", pod)

    def _set_ready(self, name: str, namespace: str) -> None:
        pod = self.pods[(namespace, name)]
        pod["status"] = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}],
        }
        pod["metadata"]["resourceVersion"] = self._bump()
        self._emit("MODIFIED", pod)

    def _delete_pod(self, name: str, namespace: str) -> None:
        pod = self.pods.pop((namespace, name))
        pod["metadata"]["resourceVersion"] = self._bump()
        self._emit("DELETED", pod)

    # HTTP

    async def list_pods(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        selector = request.query.get("labelSelector")
        self.requests.append((request.method, request.path, dict(request.query)))
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, namespace, selector)
        items = [
            copy.deepcopy(p)
            for (ns, _), p in sorted(self.pods.items())
            if ns == namespace and _matches(p["metadata"].get("labels", {}), selector)
        ]
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(self.version)},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, namespace: str, selector: str | None) -> web.StreamResponse:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        entry = (queue, asyncio.get_running_loop(), namespace, selector)
        self._watchers.append(entry)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        timeout = float(request.query.get("timeoutSeconds", "30"))
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self._watchers.remove(entry)
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get("/api/v1/namespaces/{namespace}/pods", self.list_pods)

        async def capture_loop(_app: web.Application) -> None:
            self.loop = asyncio.get_running_loop()

        application.on_startup.append(capture_loop)
        return application


def kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    """A kubeconfig for the fake server, with a bearer token like a real one."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "fake-token"}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}
                ],
                "current-context": "fake",
            }
        )
    )
    return path


@contextmanager
def fake_kube(tmp: Path) -> Iterator[tuple[FakeKube, Path]]:
    """A running fake API server and a kubeconfig pointing at it."""
    fake = FakeKube()
    with aiohttp_server(fake.app()) as url:
        yield fake, kubeconfig(tmp / "kubeconfig", url)
