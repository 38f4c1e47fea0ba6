"""`knsd render`, `knsd deploy`, `knsd status`, `knsd delete`: one spec, a cluster or the local runtime."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from knsd.cli.common import cli_errors
from knsd.cli.specflags import autoscaler_config_from, build_spec, with_spec
from knsd.errors import UsageError
from knsd.knative.config import AutoscalerConfig
from knsd.knative.webhook import check_service
from knsd.service.render import render_pvc, render_service, to_yaml
from knsd.service.spec import ServiceSpec

DEFAULT_ADDRESS = "127.0.0.1:8080"
DEFAULT_GATEWAY_ADDRESS = "127.0.0.1:8000"
KUBECONFIG = typer.Option(
    None, "--kubeconfig", help="Path to the kubeconfig [default: $KUBECONFIG or ~/.kube/config]"
)
CONTEXT = typer.Option(None, "--context", help="kubeconfig context")


def _checked(service: ServiceSpec, config: AutoscalerConfig) -> dict[str, Any]:
    """Render and check with Knative's rules; warnings go to stderr, errors stop here (exit 2)."""
    obj = render_service(service)
    findings = check_service(obj, config, service.model)
    for warning in findings.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if not findings.ok:
        raise UsageError(_flag_of(findings), "Knative would reject this Service:\n" + findings.message())
    return obj


def _flag_of(findings: Any) -> str:
    """Name the flag when every error is about traffic or the revision name; else the spec as a whole."""
    paths = {p for e in findings.errors for p in e.paths}
    if findings.schema or not paths:
        return "spec"
    if all(p.startswith("spec.traffic") for p in paths):
        return "--traffic/--tag"
    if all(p.startswith("spec.template.metadata.name") for p in paths):
        return "--revision-name"
    return "spec"


def _gateway_objects(service: ServiceSpec) -> list[dict[str, Any]]:
    """The gateway's manifests (and Redis's), checked: its flags parse, the objects are valid."""
    from knsd.cli.gateway import check_flags
    from knsd.service.gateway import gateway_errors, render_gateway

    objects = render_gateway(service)
    check_flags(
        objects[0]["spec"]["template"]["spec"]["containers"][0]["args"][1:], bool(service.gateway_keys_secret)
    )
    errors = gateway_errors(objects)
    if errors:
        raise UsageError("--gateway", "Kubernetes would reject the gateway:\n" + "\n".join(errors))
    return objects


@with_spec
def render(
    spec: dict[str, Any],
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the YAML here instead of stdout."),
    with_storage: bool = typer.Option(
        False, "--with-storage", help="Also render the model's PersistentVolumeClaim."
    ),
    autoscaler_config: list[str] = typer.Option(
        [], "--autoscaler-config", help="The cluster's config-autoscaler KEY=VALUE, for validation."
    ),
) -> None:
    """Render the Knative Service (and with --with-storage its PVC) as YAML, validated first."""
    with cli_errors("render"):
        service = build_spec(spec)
        config, _ = autoscaler_config_from(autoscaler_config)
        objects = [_checked(service, config)]
        if service.gateway:
            objects += _gateway_objects(service)
        if with_storage:
            pvc = render_pvc(service)
            if pvc is None:
                raise UsageError("--with-storage", "needs --model-pvc NAME")
            objects.append(pvc)
        text = to_yaml(objects)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            typer.echo(f"Service '{service.name}' rendered to '{output}'.", err=True)


@with_spec
def deploy(
    spec: dict[str, Any],
    local_runtime: bool = typer.Option(
        False, "--local", help="Run on this machine: the embedded local runtime."
    ),
    local_address: str = typer.Option(
        DEFAULT_ADDRESS, "--local-address", help="Where the local route listens."
    ),
    gateway_address: str = typer.Option(
        DEFAULT_GATEWAY_ADDRESS, "--gateway-address", help="Where the local gateway listens (with --gateway)."
    ),
    autoscaler_config: list[str] = typer.Option(
        [], "--autoscaler-config", help="config-autoscaler KEY=VALUE (repeatable)"
    ),
    kubeconfig: str | None = KUBECONFIG,
    context: str | None = CONTEXT,
    with_storage: bool = typer.Option(False, "--with-storage", help="Also create the model's PVC."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the Service is Ready."),
    wait_timeout: float = typer.Option(600.0, "--wait-timeout", min=1, help="Seconds to wait for Ready."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be sent, send nothing."),
) -> None:
    """Create or update a Stable Diffusion Service and wait until it is Ready; print its URL."""
    with cli_errors("deploy"):
        service = build_spec(spec)
        config, pairs = autoscaler_config_from(autoscaler_config)
        obj = _checked(service, config)
        front = _gateway_objects(service) if service.gateway else []
        pvc = render_pvc(service) if with_storage else None
        if with_storage and pvc is None:
            raise UsageError("--with-storage", "needs --model-pvc NAME")
        if dry_run:
            sys.stdout.write(to_yaml([o for o in (pvc, obj) if o is not None] + front))
            return
        if local_runtime:
            _deploy_local(service, pairs, local_address, wait_timeout, gateway_address)
        else:
            _deploy_cluster(service, obj, pvc, kubeconfig, context, wait, wait_timeout, front)


def _deploy_local(
    service: ServiceSpec, pairs: dict[str, str], address: str, wait_timeout: float, gateway_address: str
) -> None:
    from knsd.local import client as local

    if (
        service.model not in ("tiny", "tiny-sdxl", "tiny-sd3", "tiny-inpaint")
        and not Path(service.model).expanduser().exists()
    ):
        raise UsageError(
            "--model",
            f"{service.model!r} not found: use tiny, tiny-sdxl, tiny-sd3, tiny-inpaint, a diffusers folder or a "
            "checkpoint file",
        )
    started = time.monotonic()
    status = local.deploy(
        service, pairs, address, wait_timeout, progress=typer.echo, gateway_address=gateway_address
    )
    typer.echo(f"Service '{service.name}' is Ready ({time.monotonic() - started:.1f}s): revision "
               f"{status['latest_ready_revision']}")  # fmt: skip
    front = status.get("gateway")
    if front:
        redis = (front.get("redis") or {}).get("url") or service.redis_url
        typer.echo(f"Gateway: {front['url']} (Redis {redis}), in front of the route:")
    typer.echo(status["url"])


def _deploy_cluster(
    service: ServiceSpec,
    obj: dict[str, Any],
    pvc: dict[str, Any] | None,
    kubeconfig: str | None,
    context: str | None,
    wait: bool,
    wait_timeout: float,
    front: list[dict[str, Any]],
) -> None:
    from knsd.cluster.deploy import wait_ready
    from knsd.cluster.kube import Cluster, KubeClient

    cluster = Cluster(KubeClient.connect(kubeconfig=kubeconfig, context=context, namespace=service.namespace))
    if pvc is not None:
        typer.echo(f"PersistentVolumeClaim '{pvc['metadata']['name']}': {cluster.apply_pvc(pvc)}.")
    for item in front:
        typer.echo(f"{item['kind']} '{item['metadata']['name']}': {cluster.apply_object(item)}.")
    verb, _ = cluster.apply_service(obj)
    ns = cluster.namespace
    if not wait:
        typer.echo(f"Service '{service.name}' {verb} in namespace '{ns}'.")
        return
    typer.echo(
        f"{'Creating' if verb == 'created' else 'Updating'} service '{service.name}' in namespace '{ns}':\n"
    )
    ready = wait_ready(cluster, service.name, wait_timeout, progress=typer.echo)
    status = ready.get("status") or {}
    typer.echo(f"\nService '{service.name}' {verb} to latest revision '{status.get('latestReadyRevisionName')}' "
               f"is available at URL:\n{status.get('url', '')}")  # fmt: skip


def status(
    name: str = typer.Argument(..., help="Service name."),
    local_runtime: bool = typer.Option(False, "--local", help="A service of the local runtime."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Kubernetes namespace"),
    kubeconfig: str | None = KUBECONFIG,
    context: str | None = CONTEXT,
    as_json: bool = typer.Option(False, "--json", help="The full status as JSON."),
) -> None:
    """Show a Service: URL, revision, traffic, conditions and pods (locally also the autoscaler's state)."""
    with cli_errors("status"):
        if local_runtime:
            from knsd.local import client as local

            st = local.status(name)
            typer.echo(json.dumps(st, indent=2) if as_json else format_local_status(st))
            return
        from knsd.cluster.describe import describe
        from knsd.cluster.kube import Cluster, KubeClient

        cluster = Cluster(KubeClient.connect(kubeconfig=kubeconfig, context=context, namespace=namespace))
        svc = cluster.get_service(name)
        if svc is None:
            raise UsageError("NAME", f"service '{name}' not found in namespace '{cluster.namespace}'")
        pods = cluster.service_pods(name)
        typer.echo(json.dumps({"service": svc, "pods": pods}, indent=2) if as_json else describe(svc, pods))


def format_local_status(st: dict[str, Any]) -> str:
    """kn-describe-like text for a local service (pure)."""
    cur = st.get("current") or {}
    lines = [
        f"Name:       {st['name']}",
        f"URL:        {st['url']}",
        f"Revision:   {st.get('latest_ready_revision') or '-'} (latest {st.get('latest_revision')})",
        f"Ready:      {'True' if st['ready'] else 'False'}",
        *gateway_lines(st.get("gateway")),
        *traffic_lines(st),
        "",
        "Autoscaler:",
        f"  Desired scale:        {cur.get('desired_scale')} (decider {cur.get('decider_desired')})",
        f"  Panic:                {'yes' if cur.get('panic') else 'no'}",
        f"  Concurrency stable:   {cur.get('stable_concurrency', 0):.2f}",
        f"  Concurrency panic:    {cur.get('panic_concurrency', 0):.2f}",
        f"  Buffered / in flight: {cur.get('buffered', 0)} / {cur.get('inflight', 0)}",
        f"  PA / SKS:             {cur.get('active')} / {cur.get('sks_mode')}",
        "",
        "Pods:",
    ]
    pods = [p for rev in st.get("revisions") or [cur] for p in rev.get("pods") or []]  # every revision's
    if not pods:
        lines.append("  (none)")
    now = st.get("now", time.time())
    for pod in pods:
        age = now - pod["created"]
        startup = f"{pod['startup_seconds']:.1f}s" if pod.get("startup_seconds") is not None else "-"
        lines.append(
            f"  {pod['name']:<22} {pod['state']:<12} inflight {pod['inflight']}  age {age:5.0f}s  startup {startup}"
        )
    return "\n".join(lines)


def gateway_lines(front: dict[str, Any] | None) -> list[str]:
    """The local gateway and its Redis, one line each (pure)."""
    if not front:
        return []

    def state(part: dict[str, Any]) -> str:
        word = "ready" if part.get("ready") else "not ready"
        return f"{word} (pid {part.get('pid') or '-'}, {part.get('restarts', 0)} restarts)"

    lines = [f"Gateway:    {front['url']} {state(front)}"]
    if front.get("redis"):
        lines.append(f"Redis:      {front['redis']['url']} {state(front['redis'])}")
    return lines


def traffic_lines(st: dict[str, Any]) -> list[str]:
    """The traffic as `kn service describe` prints its revisions, plus crash-loop back-off (pure)."""
    out = ["", "Traffic:"]
    for t in st.get("traffic") or []:
        header = f"@latest ({t['revisionName']})" if t.get("latestRevision") else t["revisionName"]
        if t.get("tag"):
            header += f" #{t['tag']}"
        bullet = f"{t['percent']:3d}%" if t.get("percent") else "   +"
        out.append(f"  {bullet}  {header}")
    if st.get("traffic_pending"):
        out.append(f"  (not yet applied: {st['traffic_pending']})")
    for rev in st.get("revisions") or []:
        backoff = rev.get("backoff")
        if backoff:
            out.append(f"  !! {rev['name']}: {backoff['reason']}: pod {backoff['pod']} exited with code "
                       f"{backoff['exit_code']}, {backoff['restarts']} restart(s); its last log lines:")  # fmt: skip
            out += [f"       {line}" for line in backoff.get("log_tail") or []]
    return out


def delete(
    name: str = typer.Argument(..., help="Service name."),
    local_runtime: bool = typer.Option(False, "--local", help="A service of the local runtime."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Kubernetes namespace"),
    kubeconfig: str | None = KUBECONFIG,
    context: str | None = CONTEXT,
    timeout: float = typer.Option(330.0, "--timeout", min=1, help="Seconds to wait until it is gone."),
) -> None:
    """Delete a Service and wait until it (and, locally, its pods) is gone."""
    with cli_errors("delete"):
        if local_runtime:
            from knsd.local import client as local

            typer.echo(
                f"Service '{name}' deleted."
                if local.delete(name, timeout)
                else f"Service '{name}' was not running."
            )
            return
        from knsd.cluster.deploy import delete_and_wait
        from knsd.cluster.kube import Cluster, KubeClient

        cluster = Cluster(KubeClient.connect(kubeconfig=kubeconfig, context=context, namespace=namespace))
        if not delete_and_wait(cluster, name, timeout):
            raise UsageError("NAME", f"service '{name}' not found in namespace '{cluster.namespace}'")
        typer.echo(f"Service '{name}' successfully deleted in namespace '{cluster.namespace}'.")
