"""The CLI's side of the local runtime: start it in the background, update, query and stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from knsd.cache import cache_error, check_writable
from knsd.errors import LocalRuntimeError, UsageError
from knsd.local.control import auth_header
from knsd.local.frontend import redis_missing
from knsd.local.runtime import DEFAULT_GATEWAY_ADDRESS
from knsd.local.state import ServiceDir, open_private
from knsd.service.spec import ServiceSpec


def parse_address(address: str, flag: str = "--local-address") -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(flag, f"expected HOST:PORT with a port in [1, 65535], got {address!r}")
    return host, int(port)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def status(name: str, cache: Path | None = None) -> dict[str, Any]:
    """The running runtime's `/.knsd/status`."""
    directory = ServiceDir.for_name(name, cache)
    state = directory.read_state()
    if directory.running_pid() is None or state is None:
        if state is not None and "pid" in state and not state.get("stopped"):
            raise LocalRuntimeError(
                f"local service {name!r} is down: its runtime (pid {state['pid']}) died without being "
                f"deleted (killed or crashed), and its pods went with it; `knsd deploy --local --name {name} "
                f"--local-address {state.get('address')}` starts it again. The runtime's last log lines:\n"
                + directory.log_tail(10)
            )
        raise LocalRuntimeError(
            f"no local service {name!r} is running (knsd deploy --local --name {name} starts one)"
        )
    try:
        answer: dict[str, Any] = httpx.get(state["url"] + "/.knsd/status", timeout=5).json()
        return answer
    except (httpx.HTTPError, ValueError) as exc:
        raise LocalRuntimeError(f"local service {name!r} does not answer at {state['url']}: {exc}") from exc


def deploy(
    spec: ServiceSpec,
    config_pairs: dict[str, str],
    address: str,
    wait_timeout: float,
    progress: Callable[[str], None] = lambda _: None,
    cache: Path | None = None,
    gateway_address: str = DEFAULT_GATEWAY_ADDRESS,
) -> dict[str, Any]:
    """Start (or update) the runtime for `spec.name` and wait until it is Ready; return its status."""
    host, port = parse_address(address)
    gw_host, gw_port = parse_address(gateway_address, "--gateway-address")
    if spec.gateway and spec.redis_url is None and (missing := redis_missing()):
        raise UsageError("--gateway", missing)
    directory = ServiceDir.for_name(spec.name, cache)
    pid = directory.running_pid()
    if pid is not None:
        state = directory.read_state() or {}
        if state.get("address") != f"{host}:{port}":
            raise UsageError(
                "--local-address",
                f"{spec.name!r} already runs at {state.get('address')}; use that address or delete it first",
            )
        if spec.gateway and state.get("gateway_address", DEFAULT_GATEWAY_ADDRESS) != f"{gw_host}:{gw_port}":
            raise UsageError(
                "--gateway-address",
                f"{spec.name!r} has its gateway at {state.get('gateway_address')}; use that address or delete it first",
            )
        url = state["url"]
        try:
            reply = httpx.post(
                url + "/.knsd/update",
                json={"spec": spec.to_json(), "config": config_pairs},
                headers=auth_header(directory.root),
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise LocalRuntimeError(f"local service {spec.name!r} does not answer at {url}: {exc}") from exc
        if reply.status_code != 200:
            try:
                detail = reply.json()["detail"]
            except (ValueError, KeyError):
                detail = reply.text
            raise LocalRuntimeError(f"update rejected: {detail}")
        revision = reply.json()["revision"]
        progress(f"Updating service '{spec.name}': new revision {revision}")
    else:
        for ref, _ in spec.traffic:
            if ref not in ("@latest", spec.revision_name) and ref not in {tag for _, tag in spec.tags}:
                raise UsageError("--traffic", f'Revision "{ref}" referenced in traffic not found.')
        if not _port_free(host, port):
            raise UsageError("--local-address", f"{host}:{port} is already in use")
        if spec.gateway and not _port_free(gw_host, gw_port):
            raise UsageError("--gateway-address", f"{gw_host}:{gw_port} is already in use")
        try:
            directory.ensure()  # owner-only: the state holds the spec's environment
        except OSError as exc:
            raise cache_error(directory.root, exc) from None
        check_writable(directory.root)  # state, logs and the tiny model live here
        directory.write_state(
            {"name": spec.name, "address": f"{host}:{port}", "url": f"http://{host}:{port}", "spec": spec.to_json(),
             "config": config_pairs, "gateway_address": f"{gw_host}:{gw_port}"}
        )  # fmt: skip
        with open_private(directory.log_file) as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "knsd.local.daemon", str(directory.root)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this command, like a daemon
                env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")},
            )
        pid = proc.pid
        revision = None
        progress(f"Creating service '{spec.name}' (local runtime pid {pid})")
    return _wait_ready(directory, pid, revision, wait_timeout, progress, spec.gateway)


def _wait_ready(
    directory: ServiceDir,
    pid: int,
    revision: str | None,
    timeout: float,
    progress: Callable[[str], None],
    gateway: bool = False,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    url = (directory.read_state() or {}).get("url", "")
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise LocalRuntimeError(
                f"the local runtime exited during start-up; its log:\n{directory.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError, ValueError):
            st: dict[str, Any] = httpx.get(url + "/.knsd/status", timeout=2).json()
            named = [r for r in st["revisions"] if r["name"] == revision]
            cur = named[-1] if named else st["revisions"][-1] if st["revisions"] else None
            if cur is not None:
                ready = sum(1 for p in cur["pods"] if p["state"] == "ready")
                line = f"  revision {cur['name']}: {ready}/{cur['desired_scale']} pods ready"
                if line != last:
                    progress(line)
                    last = line
                front = st.get("gateway") or {}
                if gateway and front.get("restarts", 0) >= 3 and not front.get("ready"):
                    raise LocalRuntimeError(
                        f"the gateway keeps exiting (code {front.get('exit_code')}); its last log lines:\n"
                        + "\n".join(front.get("log_tail") or [])
                    )
                serving = cur["ready"] and st["latest_ready_revision"] and st.get("traffic_pending") is None
                if serving and (front.get("ready") or not gateway):
                    return st
                failed = [p for p in cur["pod_history"] if p["state"] == "failed"]
                if failed:
                    tail = Path(directory.pods_dir / f"{failed[-1]['name']}.log")
                    log_tail = tail.read_text(errors="replace").splitlines()[-15:] if tail.exists() else []
                    raise LocalRuntimeError(
                        f"pod {failed[-1]['name']} exited with code {failed[-1]['exit_code']}:\n"
                        + "\n".join(log_tail)
                    )
        time.sleep(0.2)
    raise LocalRuntimeError(f"not Ready after {timeout:g}s (see {directory.log_file})")


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it if it exited
        return waited == 0
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def delete(name: str, timeout: float = 330.0, cache: Path | None = None) -> bool:
    """Stop the runtime and all its pods; False if none was running."""
    directory = ServiceDir.for_name(name, cache)
    pid = directory.running_pid()
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        directory.pid_file.unlink()
    return True
