"""`knsd gateway`."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from knsd.cli.common import cli_errors
from knsd.errors import UsageError

if TYPE_CHECKING:
    from knsd.gateway.settings import GatewaySettings


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def gateway(
    upstream: str = typer.Option(
        ...,
        "--upstream",
        envvar="KNSD_UPSTREAM",
        help="The route to forward to (Knative's or the local one).",
    ),
    redis_url: str = typer.Option(
        "redis://127.0.0.1:6379/0",
        "--redis",
        envvar="KNSD_REDIS_URL",
        help="Redis URL (all state lives there).",
    ),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    port_file: Path | None = typer.Option(
        None, "--port-file", help="Write the bound port here once listening."
    ),
    api_key: list[str] = typer.Option(
        [], "--api-key", help="NAME=KEY: a tenant and its bearer key (repeatable)."
    ),
    api_keys_file: Path | None = typer.Option(
        None, "--api-keys-file", envvar="KNSD_API_KEYS_FILE", help="NAME=KEY lines (a mounted Secret)."
    ),
    rate: list[str] = typer.Option([], "--rate", help="NAME=R/s (or /m, /h): a tenant's rate; NAME * = all."),
    burst: list[str] = typer.Option(
        [], "--burst", help="NAME=N: token bucket depth [default: the rate, >= 1]."
    ),
    max_queued: list[str] = typer.Option(
        [], "--max-queued", help="NAME=N: a tenant's unfinished jobs at most [default: *=100]."
    ),
    max_inflight: int = typer.Option(
        10,
        "--max-inflight",
        help="Upstream generations in flight, all replicas: max-scale x containerConcurrency.",
    ),
    max_body_mb: float = typer.Option(
        32.0, "--max-body-mb", min=0.001, help="Largest request body (413 above)."
    ),
    max_result_mb: float = typer.Option(128.0, "--max-result-mb", min=0.001, help="Largest upstream answer."),
    result_ttl: float = typer.Option(3600.0, "--result-ttl", help="Seconds a finished job is kept."),
    cache_ttl: float = typer.Option(3600.0, "--cache-ttl", help="Seconds a cached result is served."),
    cache_max_mb: float = typer.Option(
        256.0, "--cache-max-mb", min=0.0, help="Result cache size; 0 = no cache."
    ),
    cache_item_max_mb: float = typer.Option(
        16.0, "--cache-item-max-mb", min=0.0, help="Largest cached result."
    ),
    max_attempts: int = typer.Option(
        5, "--max-attempts", help="Failed attempts (502/503, lost pod) before a job fails."
    ),
    retry_base: float = typer.Option(1.0, "--retry-base", help="First retry back-off, seconds (doubles)."),
    retry_max: float = typer.Option(30.0, "--retry-max", help="Longest retry back-off, seconds."),
    reclaim_after: float = typer.Option(
        30.0, "--reclaim-after", help="Seconds a worker may be silent before its job is taken over."
    ),
    breaker_failures: int = typer.Option(
        5, "--breaker-failures", help="Consecutive failures that open the breaker."
    ),
    breaker_open: float = typer.Option(10.0, "--breaker-open", help="Seconds open before a half-open probe."),
    probe_path: str = typer.Option("/readyz", "--probe-path", help="What the half-open probe GETs."),
    probe_timeout: float = typer.Option(300.0, "--probe-timeout", help="Probe timeout (a cold start fits)."),
    sync_timeout: float = typer.Option(600.0, "--sync-timeout", help="A synchronous request's whole wait."),
    upstream_timeout: float = typer.Option(600.0, "--upstream-timeout", help="One upstream attempt at most."),
    model_ttl: float = typer.Option(
        60.0, "--model-ttl", help="Seconds the upstream's model (cache keys) is trusted."
    ),
    upstream_header: list[str] = typer.Option(
        [], "--upstream-header", help="NAME=VALUE sent upstream (e.g. the pods' --api-token)."
    ),
    redis_prefix: str = typer.Option(
        "knsd", "--redis-prefix", help="Key prefix: one per gateway deployment."
    ),
    drain_timeout: float = typer.Option(
        30.0, "--drain-timeout", help="After SIGTERM, seconds for running jobs."
    ),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level", help="How much to log."),
) -> None:
    """Async jobs, a result cache, tenants and a circuit breaker in front of the route; state in Redis."""
    with cli_errors("gateway"):
        from knsd.gateway.server import serve

        params = dict(locals())
        settings = settings_from(params)
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not settings.tenants.auth_required:
            logging.getLogger("knsd.gateway").warning(
                "no --api-key: anyone who reaches the gateway is tenant 'default'"
            )
        raise typer.Exit(asyncio.run(serve(settings, port_file)))


def settings_from(p: dict[str, Any]) -> GatewaySettings:
    """The settings the flags describe; every error names its flag."""
    from knsd.gateway.settings import MIB, GatewaySettings, parse_header
    from knsd.gateway.tenants import build_tenants, read_keys_file

    keys = list(p["api_key"]) + (read_keys_file(p["api_keys_file"]) if p["api_keys_file"] else [])
    return GatewaySettings(
        upstream=p["upstream"],
        redis_url=p["redis_url"],
        host=p["host"],
        port=p["port"],
        prefix=p["redis_prefix"],
        tenants=build_tenants(keys, p["rate"], p["burst"], p["max_queued"]),
        max_inflight=p["max_inflight"],
        max_body_bytes=int(p["max_body_mb"] * MIB),
        max_result_bytes=int(p["max_result_mb"] * MIB),
        result_ttl=p["result_ttl"],
        cache_ttl=p["cache_ttl"],
        cache_max_bytes=int(p["cache_max_mb"] * MIB),
        cache_item_max_bytes=int(min(p["cache_item_max_mb"], p["cache_max_mb"]) * MIB),
        max_attempts=p["max_attempts"],
        retry_base=p["retry_base"],
        retry_max=p["retry_max"],
        reclaim_after=p["reclaim_after"],
        breaker_failures=p["breaker_failures"],
        breaker_open=p["breaker_open"],
        probe_path=p["probe_path"],
        probe_timeout=p["probe_timeout"],
        sync_timeout=p["sync_timeout"],
        upstream_timeout=p["upstream_timeout"],
        model_ttl=p["model_ttl"],
        upstream_headers=tuple(parse_header(h) for h in p["upstream_header"]),
        drain_timeout=p["drain_timeout"],
    )


def check_flags(flags: list[str], keys_file_mounted: bool = False) -> None:
    """Parse `knsd gateway` flags as the command would; a bad one is a UsageError naming --gateway-arg."""
    command = typer.main.get_command(_alone)
    try:
        ctx = command.make_context("gateway", list(flags))
    except typer.exceptions.TyperException as exc:  # typer's own click: a usage error of the flags
        raise UsageError("--gateway-arg", getattr(exc, "format_message", exc.__str__)()) from None
    params = dict(ctx.params)
    if keys_file_mounted:  # a Secret mounted in the pod: its tenants are not known here; check the rest
        named = {item.partition("=")[0] for key in ("rate", "burst", "max_queued") for item in params[key]}
        params["api_keys_file"] = None
        params["api_key"] = [f"{name}=unknown-{name}" for name in sorted(named - {"*"}) if name]
    try:
        settings_from(params)
    except UsageError as exc:
        raise UsageError("--gateway-arg", str(exc)) from None


_alone = typer.Typer(add_completion=False)
_alone.command()(gateway)
