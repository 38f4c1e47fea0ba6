"""`knsd deploy --local`, `knsd status --local`, `knsd delete --local`: the embedded local runtime."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from knsd.cli.common import cli_errors
from knsd.cli.specflags import build_spec, with_spec
from knsd.errors import UsageError
from knsd.local import client


@with_spec
def deploy(
    spec: dict[str, Any],
    local: bool = typer.Option(False, "--local", help="Run on this machine: the embedded local runtime."),
    local_address: str = typer.Option(
        client.DEFAULT_ADDRESS, "--local-address", help="Where the local route listens."
    ),
    autoscaler_config: list[str] = typer.Option(
        [], "--autoscaler-config", help="config-autoscaler KEY=VALUE (repeatable), e.g. stable-window=20s"
    ),
    wait_timeout: float = typer.Option(600.0, "--wait-timeout", min=1, help="Seconds to wait for Ready."),
) -> None:
    """Create or update a Stable Diffusion Service and wait until it is Ready; print its URL."""
    with cli_errors("deploy"):
        service = build_spec(spec)
        if not local:
            raise UsageError("--local", "deploying to a Kubernetes cluster is not available yet; use --local")
        config, pairs = client.autoscaler_config(autoscaler_config)
        client.check_spec(service, config)
        started = time.monotonic()
        status = client.deploy(service, pairs, local_address, wait_timeout, progress=typer.echo)
        typer.echo(f"Service '{service.name}' is Ready ({time.monotonic() - started:.1f}s): revision "
                   f"{status['latest_ready_revision']}")  # fmt: skip
        typer.echo(status["url"])


def status(
    name: str = typer.Argument(..., help="Service name."),
    local: bool = typer.Option(False, "--local", help="A service of the local runtime."),
    as_json: bool = typer.Option(False, "--json", help="The full status as JSON."),
) -> None:
    """Show a Service: URL, revision, pods, desired scale, panic state and observed concurrency."""
    with cli_errors("status"):
        if not local:
            raise UsageError("--local", "cluster status is not available yet; use --local")
        st = client.status(name)
        if as_json:
            typer.echo(json.dumps(st, indent=2))
            return
        typer.echo(format_status(st))


def format_status(st: dict[str, Any]) -> str:
    """kn-describe-like text for a local service (pure)."""
    cur = st.get("current") or {}
    lines = [
        f"Name:       {st['name']}",
        f"URL:        {st['url']}",
        f"Revision:   {st.get('latest_ready_revision') or '-'} (latest {st.get('latest_revision')})",
        f"Ready:      {'True' if st['ready'] else 'False'}",
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
    pods = cur.get("pods") or []
    if not pods:
        lines.append("  (none)")
    now = st.get("now", time.time())
    for pod in pods:
        age = now - pod["created"]
        startup = f"{pod['startup_seconds']:.1f}s" if pod.get("startup_seconds") is not None else "-"
        lines.append(
            f"  {pod['name']:<22} {pod['state']:<12} inflight {pod['inflight']}  age {age:5.0f}s  "
            f"startup {startup}"
        )
    return "\n".join(lines)


def delete(
    name: str = typer.Argument(..., help="Service name."),
    local: bool = typer.Option(False, "--local", help="A service of the local runtime."),
    timeout: float = typer.Option(330.0, "--timeout", min=1, help="Seconds to wait for the pods to drain."),
) -> None:
    """Delete a Service and wait until it and its pods are gone."""
    with cli_errors("delete"):
        if not local:
            raise UsageError("--local", "cluster delete is not available yet; use --local")
        if client.delete(name, timeout):
            typer.echo(f"Service '{name}' deleted.")
        else:
            typer.echo(f"Service '{name}' was not running.")
