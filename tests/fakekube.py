"""A fake Kubernetes API server on loopback that speaks the real wire format.

Only what knsd uses: pods (list, watch with labelSelector and resourceVersion), PersistentVolumeClaims,
Deployments, StatefulSets and core Services (get, create, merge-patch; the gateway and its Redis), and
Knative Services (get, create, merge-patch, delete) with a small "controller" that moves their
conditions to Ready and creates labelled pods. Objects are plain JSON with apiVersion/kind/metadata/status;
errors are `Status` bodies; watch streams newline-delimited `{"type", "object"}` events. Requests are
recorded for assertions. The code under test is the real `kubernetes` client.
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
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.pvcs: dict[tuple[str, str], dict[str, Any]] = {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name)
        self.bodies: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of writes
        self.knative_installed = True
        self.forbidden: set[str] = set()  # verbs answered 403
        self.webhook_rejection: str | None = None  # the message Knative's webhook answers with
        self.image_pull_failure = False  # pods of new revisions fail to pull their image
        self.ready_delay = 0.3

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

    # Knative Services

    @staticmethod
    def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, "code": code}  # fmt: skip
        if details is not None:
            body["details"] = details
        return web.json_response(body, status=code)

    def _guard(self, request: web.Request, verb: str) -> web.Response | None:
        self.requests.append((request.method, request.path, dict(request.query)))
        if not self.knative_installed and "/apis/serving.knative.dev/" in request.path:
            return web.Response(status=404, text="404 page not found\n")
        if verb in self.forbidden:
            ns = request.match_info["namespace"]
            return self._status(403, "Forbidden", f'services.serving.knative.dev is forbidden: User "tester" cannot {verb} '
                                f'resource "services" in API group "serving.knative.dev" in the namespace "{ns}"')  # fmt: skip
        return None

    def _missing(self, name: str) -> web.Response:
        return self._status(404, "NotFound", f'services.serving.knative.dev "{name}" not found',
                            {"name": name, "group": "serving.knative.dev", "kind": "services"})  # fmt: skip

    async def get_service(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        denied = self._guard(request, "get")
        if denied is not None:
            return denied
        svc = self.services.get((ns, name))
        return web.json_response(svc) if svc is not None else self._missing(name)

    async def create_service(self, request: web.Request) -> web.Response:
        ns = request.match_info["namespace"]
        denied = self._guard(request, "create")
        if denied is not None:
            return denied
        body = await request.json()
        self.bodies.append(("POST", request.path, body))
        if self.webhook_rejection:
            return self._status(400, "BadRequest", 'admission webhook "validation.webhook.serving.knative.dev" denied '
                                f"the request: validation failed: {self.webhook_rejection}")  # fmt: skip
        name = body["metadata"]["name"]
        if (ns, name) in self.services:
            return self._status(409, "AlreadyExists", f'services.serving.knative.dev "{name}" already exists')
        svc = copy.deepcopy(body)
        svc["metadata"].update({"namespace": ns, "uid": f"uid-{name}", "generation": 1, "creationTimestamp": _now(),
                                "resourceVersion": self._bump()})  # fmt: skip
        self.services[(ns, name)] = svc
        self._reconcile(ns, name)
        return web.json_response(svc, status=201)

    async def patch_service(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        denied = self._guard(request, "patch")
        if denied is not None:
            return denied
        if request.content_type != "application/merge-patch+json":
            return self._status(415, "UnsupportedMediaType", f"unsupported patch type {request.content_type}")
        patch = await request.json()
        self.bodies.append(("PATCH", request.path, patch))
        svc = self.services.get((ns, name))
        if svc is None:
            return self._missing(name)
        if self.webhook_rejection:
            return self._status(400, "BadRequest", 'admission webhook "validation.webhook.serving.knative.dev" denied '
                                f"the request: validation failed: {self.webhook_rejection}")  # fmt: skip
        before = copy.deepcopy(svc["spec"])
        _merge(svc, patch)
        if svc["spec"] != before:
            svc["metadata"]["generation"] += 1
        svc["metadata"]["resourceVersion"] = self._bump()
        self._reconcile(ns, name)
        return web.json_response(svc)

    async def delete_service(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        denied = self._guard(request, "delete")
        if denied is not None:
            return denied
        if (ns, name) not in self.services:
            return self._missing(name)
        assert self.loop is not None
        # Finalizers: the object goes away a moment later, with its pods.
        self.loop.call_later(0.3, self._finish_delete, ns, name)
        return self._status(200, "", "", {"name": name, "kind": "services"})

    def _finish_delete(self, ns: str, name: str) -> None:
        self.services.pop((ns, name), None)
        for (pns, pname), pod in list(self.pods.items()):
            if pns == ns and pod["metadata"]["labels"].get("serving.knative.dev/service") == name:
                self._delete_pod(pname, ns)

    def _reconcile(self, ns: str, name: str) -> None:
        """Knative's controllers, in brief: not ready yet, then a pod, then Ready (or an image pull failure)."""
        svc = self.services[(ns, name)]
        generation = svc["metadata"]["generation"]
        revision = f"{name}-{generation:05d}"
        svc["status"] = {
            "observedGeneration": generation,
            "conditions": [
                {"type": "ConfigurationsReady", "status": "Unknown", "lastTransitionTime": _now(), "reason": "RevisionMissing",
                 "message": f'Configuration "{name}" is waiting for a Revision to become ready.'},
                {"type": "Ready", "status": "Unknown", "lastTransitionTime": _now(), "reason": "RevisionMissing",
                 "message": f'Configuration "{name}" is waiting for a Revision to become ready.'},
                {"type": "RoutesReady", "status": "Unknown", "lastTransitionTime": _now(), "reason": "RevisionMissing",
                 "message": f'Configuration "{name}" is waiting for a Revision to become ready.'},
            ],
            "latestCreatedRevisionName": revision,
        }  # fmt: skip
        assert self.loop is not None
        self.loop.call_later(self.ready_delay, self._progress, ns, name, generation)

    def _progress(self, ns: str, name: str, generation: int) -> None:
        svc = self.services.get((ns, name))
        if svc is None or svc["metadata"]["generation"] != generation:
            return
        revision = f"{name}-{generation:05d}"
        pod_name = f"{revision}-deployment-5d9c8-abcde"
        self._add_pod(pod_name, name, ns, ready=not self.image_pull_failure)
        self.pods[(ns, pod_name)]["metadata"]["labels"]["serving.knative.dev/revision"] = revision
        if self.image_pull_failure:
            image = svc["spec"]["template"]["spec"]["containers"][0]["image"]
            self.pods[(ns, pod_name)]["status"]["containerStatuses"] = [
                {"name": "knsd", "ready": False, "image": image, "imageID": "", "restartCount": 0,
                 "state": {"waiting": {"reason": "ImagePullBackOff",
                 "message": f'Back-off pulling image "{image}"'}}}
            ]  # fmt: skip
            for cond in svc["status"]["conditions"]:
                cond.update({"status": "False", "reason": "RevisionFailed",
                             "message": f'Revision "{revision}" failed with message: Unable to fetch image "{image}".'})  # fmt: skip
            return
        svc["status"].update(
            {
                "url": f"http://{name}.{ns}.example.com",
                "latestReadyRevisionName": revision,
                "traffic": [{"revisionName": revision, "latestRevision": True, "percent": 100}],
                "address": {"url": f"http://{name}.{ns}.svc.cluster.local"},
            }
        )
        for cond in svc["status"]["conditions"]:
            cond.update({"status": "True", "lastTransitionTime": _now()})
            cond.pop("reason", None)
            cond.pop("message", None)

    # PersistentVolumeClaims

    async def get_pvc(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        self.requests.append((request.method, request.path, dict(request.query)))
        pvc = self.pvcs.get((ns, name))
        if pvc is None:
            return self._status(404, "NotFound", f'persistentvolumeclaims "{name}" not found',
                                {"name": name, "kind": "persistentvolumeclaims"})  # fmt: skip
        return web.json_response(pvc)

    async def create_pvc(self, request: web.Request) -> web.Response:
        ns = request.match_info["namespace"]
        body = await request.json()
        self.requests.append((request.method, request.path, dict(request.query)))
        self.bodies.append(("POST", request.path, body))
        self.pvcs[(ns, body["metadata"]["name"])] = body
        return web.json_response(body, status=201)

    # Deployments, StatefulSets, core Services

    async def get_object(self, request: web.Request) -> web.Response:
        resource, ns, name = (
            request.match_info["resource"],
            request.match_info["namespace"],
            request.match_info["name"],
        )
        self.requests.append((request.method, request.path, dict(request.query)))
        found = self.objects.get((resource, ns, name))
        if found is None:
            return self._status(
                404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}
            )
        return web.json_response(found)

    async def create_object(self, request: web.Request) -> web.Response:
        resource, ns = request.match_info["resource"], request.match_info["namespace"]
        body = await request.json()
        self.requests.append((request.method, request.path, dict(request.query)))
        self.bodies.append(("POST", request.path, body))
        key = (resource, ns, body["metadata"]["name"])
        if key in self.objects:
            return self._status(409, "AlreadyExists", f'{resource} "{key[2]}" already exists')
        body["metadata"].update({"namespace": ns, "uid": f"uid-{len(self.objects)}", "generation": 1})
        self.objects[key] = body
        return web.json_response(body, status=201)

    async def patch_object(self, request: web.Request) -> web.Response:
        resource, ns, name = (
            request.match_info["resource"],
            request.match_info["namespace"],
            request.match_info["name"],
        )
        patch = await request.json()
        self.requests.append((request.method, request.path, dict(request.query)))
        self.bodies.append(("PATCH", request.path, patch))
        found = self.objects.get((resource, ns, name))
        if found is None:
            return self._status(
                404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}
            )
        if request.content_type != "application/merge-patch+json":
            return self._status(415, "UnsupportedMediaType", f"unsupported patch type {request.content_type}")
        _merge(found, patch)
        found["metadata"]["generation"] += 1
        return web.json_response(found)

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get("/api/v1/namespaces/{namespace}/pods", self.list_pods)
        services = "/apis/serving.knative.dev/v1/namespaces/{namespace}/services"
        application.router.add_get(services + "/{name}", self.get_service)
        application.router.add_post(services, self.create_service)
        application.router.add_patch(services + "/{name}", self.patch_service)
        application.router.add_delete(services + "/{name}", self.delete_service)
        application.router.add_get(
            "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}", self.get_pvc
        )
        application.router.add_post("/api/v1/namespaces/{namespace}/persistentvolumeclaims", self.create_pvc)
        for base in ("/apis/apps/v1/namespaces/{namespace}/{resource:deployments|statefulsets}",
                     "/api/v1/namespaces/{namespace}/{resource:services}"):  # fmt: skip
            application.router.add_get(base + "/{name}", self.get_object)
            application.router.add_post(base, self.create_object)
            application.router.add_patch(base + "/{name}", self.patch_object)

        async def capture_loop(_app: web.Application) -> None:
            self.loop = asyncio.get_running_loop()

        application.on_startup.append(capture_loop)
        return application


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


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
