"""Faults of the local runtime: a pod killed mid-request, a killed runtime, a model that cannot load, a full
or read-only cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from knsd.local.state import ServiceDir
from tests.helpers import free_port, knsd_env
from tests.local_helpers import Load, knsd, live_pods, local_service, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # pods start slowly on a busy machine
ZERO = ["--scale-init", "0", "--autoscaler-config", "allow-zero-initial-scale=true"]


def test_killed_pod_costs_one_502_and_others_are_unaffected(cache: Path) -> None:
    with local_service(cache, "kill", "--scale-min", "2", "--scale-max", "2") as url:
        wait_until(lambda: sum(p["state"] == "ready" for p in live_pods(url)) == 2, 120, "2 ready pods")
        result: dict[str, httpx.Response] = {}
        long = {"prompt": "x", "width": 256, "height": 256, "steps": 150}
        worker = threading.Thread(
            target=lambda: result.setdefault(
                "r", httpx.post(url + "/sdapi/v1/txt2img", json=long, timeout=300)
            )
        )
        worker.start()
        wait_until(lambda: any(p["inflight"] for p in live_pods(url)), 30, "the long request", period=0.05)
        victim = next(p for p in live_pods(url) if p["inflight"])
        with Load(url, clients=1, body={"prompt": "x", "width": 64, "height": 64, "steps": 2}) as load:
            wait_until(lambda: len(load.results) >= 2, 60, "requests on the other pod")
            os.kill(victim["pid"], signal.SIGKILL)
            worker.join(60)
            wait_until(
                lambda: (
                    any(p["state"] == "ready" and p["name"] != victim["name"] for p in live_pods(url))
                    and len(live_pods(url)) == 2
                ),
                120,
                "a replacement pod",
            )
        r = result["r"]
        assert r.status_code == 502 and r.headers["content-type"].startswith("application/json")
        assert r.json()["error"] == "BadGateway" and victim["name"] in r.json()["detail"]
        assert (r.headers["x-knsd-pod"], r.headers["x-knsd-revision"]) == (victim["name"], "kill-00001")
        assert load.results and {code for code, _ in load.results} == {200}  # nobody else noticed
        assert victim["name"] not in {pod for _, pod in load.results}


def test_killed_runtime_is_reported_and_deploy_recovers(cache: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    flags = ["deploy", "--local", "--name", "dead", "--local-address", address, *ZERO]
    try:
        assert knsd(cache, *flags).returncode == 0
        pid = int(ServiceDir.for_name("dead", cache).pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, "the runtime to die")
        out = knsd(cache, "status", "dead", "--local")
        assert out.returncode == 1
        assert (
            f"local service 'dead' is down: its runtime (pid {pid}) died without being deleted" in out.stderr
        )
        assert "route listening on" in out.stderr  # the runtime's last log lines
        again = knsd(cache, *flags)
        assert again.returncode == 0, again.stderr
        st = json.loads(knsd(cache, "status", "dead", "--local", "--json").stdout)
        assert st["ready"] and st["pid"] != pid
    finally:
        knsd(cache, "delete", "dead", "--local")
    out = knsd(cache, "status", "dead", "--local")  # deleted on purpose: not "died"
    assert out.returncode == 1 and "no local service 'dead' is running" in out.stderr


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_model_that_fails_to_load_crash_loops_visibly(cache: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text("{ not json")
    address = f"127.0.0.1:{free_port()}"
    try:
        out = knsd(
            cache, "deploy", "--local", "--name", "broken", "--local-address", address, "--model", str(broken)
        )
        assert out.returncode == 1
        assert "pod broken-00001-001 exited with code 1" in out.stderr
        text = knsd(cache, "status", "broken", "--local").stdout
        assert "!! broken-00001: CrashLoopBackOff: pod broken-00001-" in text
        assert "model load failed" in text  # the pod's last log lines
        # It keeps restarting with a growing back-off, as a kubelet does.
        wait_until(
            lambda: (
                json.loads(knsd(cache, "status", "broken", "--local", "--json").stdout)["revisions"][0][
                    "backoff"
                ]["restarts"]
                >= 2
            ),
            120,
            "a second restart",
        )
    finally:
        knsd(cache, "delete", "broken", "--local")


def _in_tmpfs(mount: Path, setup: str, *command: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """Run `command` with a small tmpfs at `mount` (own mount namespace), after `setup` (sh) on it."""
    script = f'mount -t tmpfs -o size=64k tmpfs "$0" && {setup} && exec "$@"'
    env = {**knsd_env(cache), "KNSD_CACHE": str(mount)}
    return subprocess.run(
        ["unshare", "--mount", "--user", "--map-root-user", "sh", "-c", script, str(mount), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private tmpfs")
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ('mount -o remount,ro "$0"', "it is on a read-only file system"),
        ('dd if=/dev/zero of="$0/fill" bs=1k count=128 2>/dev/null; true', "no space left on the device"),
    ],
)
def test_full_or_read_only_cache_names_the_path(cache: Path, tmp_path: Path, setup: str, reason: str) -> None:
    mount = tmp_path / "cache"
    mount.mkdir()
    probe = _in_tmpfs(mount, "true", "true", cache=cache)
    if probe.returncode != 0:
        pytest.skip(f"no private tmpfs here: {probe.stderr.strip()}")
    address = f"127.0.0.1:{free_port()}"
    out = _in_tmpfs(mount, setup, sys.executable, "-m", "knsd", "deploy", "--local", "--name", "c",
                    "--local-address", address, cache=cache)  # fmt: skip
    assert out.returncode == 1
    assert f"cannot write to the knsd cache directory {mount}/local/c: {reason}" in out.stderr
    assert "set KNSD_CACHE to a writable folder" in out.stderr
    serve = _in_tmpfs(mount, setup, sys.executable, "-m", "knsd", "serve", "--port", "0", cache=cache)
    assert serve.returncode == 1
    assert f"cannot write to the knsd cache directory {mount}: {reason}" in serve.stderr
