"""`knsd deploy --local --gateway`: the gateway and Debian's redis-server run beside the local route, and a burst
of async jobs survives a pod and the gateway killed mid-run while the route scales out to max-scale."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.gateway_helpers import SMALL, redis_binary, submit, wait_job
from tests.helpers import free_port
from tests.local_helpers import knsd, status, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ZERO = ["--scale-init", "0", "--autoscaler-config", "allow-zero-initial-scale=true"]


def _ready(url: str) -> int:
    return sum(p["state"] == "ready" for p in status(url)["current"]["pods"])


def test_24_async_jobs_survive_a_killed_pod_and_a_killed_gateway_while_the_route_scales_to_3(
    cache: Path,
) -> None:
    redis_binary()
    route, front = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    flags = ["--name", "gwdone", "--local-address", route, "--gateway-address", front, "--scale-max", "3", *ZERO,
             "--gateway", "--gateway-arg=--reclaim-after=3", "--gateway-arg=--retry-base=0.5"]  # fmt: skip
    try:
        out = knsd(cache, "deploy", "--local", *flags)
        assert out.returncode == 0, out.stderr + out.stdout
        assert f"Gateway: http://{front}" in out.stdout
        url, gateway = f"http://{route}", f"http://{front}"
        first = status(url)["gateway"]
        assert first["ready"] and first["redis"]["url"].startswith("unix://")
        jobs = [submit(gateway, {**SMALL, "steps": STEPS, "seed": seed}) for seed in range(24)]
        # A pod dies mid-request: the route answers that request 502 and the gateway retries it.
        found: list[dict] = []
        wait_until(lambda: _early(url, found), 180, "a pod early in a generation", 0.02)
        victim = found[0]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: _retries(gateway) >= 1, 60, "the gateway to retry the 502", 0.05)
        # The gateway dies with jobs in flight: the runtime restarts it and it reclaims them.
        os.kill(first["pid"], signal.SIGKILL)
        done_at_kill = sum(_final(gateway, j) for j in jobs)
        results = [wait_job(gateway, j, timeout=400) for j in jobs]
        wait_until(lambda: _ready(url) == 3, 180, "3 ready pods")  # the burst's desired scale holds a window
        st = status(url)
    finally:
        knsd(cache, "delete", "gwdone", "--local")
    assert done_at_kill < 24  # the kills happened mid-run
    assert [r["status"] for r in results] == ["succeeded"] * 24
    assert max(r["attempts"] for r in results) >= 2  # reclaimed or retried, and counted
    assert st["gateway"]["restarts"] == 1 and st["gateway"]["pid"] != first["pid"]
    assert st["current"]["desired_scale"] == 3
    assert any(p["name"] == victim["name"] and p["state"] == "failed" for p in st["current"]["pod_history"])


STEPS = 30  # per job: long enough that a pod is found early in one, short enough for 24 jobs


def _early(url: str, found: list[dict]) -> bool:
    """A pod in the first third of a generation (asked directly, not through the route): killed now, its
    request cannot have been answered (two thirds of its steps are left). A window of a third of the steps,
    not one step, so a loaded machine's polling still finds one."""
    for pod in status(url)["current"]["pods"]:
        if pod["state"] != "ready" or not pod["inflight"]:
            continue
        try:
            state = httpx.get(pod["url"] + "/sdapi/v1/progress", timeout=2).json()["state"]
        except (httpx.HTTPError, ValueError, KeyError):
            continue
        if state["job_count"] and state["sampling_steps"] == STEPS and state["sampling_step"] <= STEPS // 3:
            found.append(pod)
            return True
    return False


def _retries(gateway: str) -> float:
    text = httpx.get(gateway + "/metrics", timeout=5).text
    match = re.search(r"^knsd_gateway_retries_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _final(gateway: str, job_id: str) -> bool:
    try:
        return httpx.get(f"{gateway}/jobs/{job_id}", timeout=5).json()["status"] in ("succeeded", "failed")
    except (httpx.TransportError, ValueError):
        return False


def test_deploy_with_the_gateway_without_redis_server_names_the_package(cache: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    env_path = os.environ.get("PATH")
    os.environ["PATH"] = str(bare)  # no redis-server on it (the CLI runs through sys.executable)
    try:
        out = knsd(cache, "deploy", "--local", "--name", "gwnoredis", "--local-address",
                   f"127.0.0.1:{free_port()}", "--gateway")  # fmt: skip
    finally:
        os.environ["PATH"] = env_path or ""
    assert out.returncode == 2
    assert (
        "--gateway" in out.stderr
        and "redis-server" in out.stderr
        and "apt-get install redis-server" in out.stderr
    )
    assert not (cache / "local" / "gwnoredis" / "runtime.pid").exists()  # nothing was started


def test_gateway_follows_the_spec_and_goes_with_the_service(cache: Path) -> None:
    redis_binary()
    route, front = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    flags = ["--name", "gwlife", "--local-address", route, "--gateway-address", front, "--gateway"]
    url, gateway = f"http://{route}", f"http://{front}"
    try:
        assert knsd(cache, "deploy", "--local", *flags).returncode == 0
        before = status(url)
        assert httpx.post(gateway + "/sdapi/v1/txt2img", json=SMALL, timeout=120).status_code == 200
        # Only the gateway's flags change: the gateway restarts, the revision stays.
        again = knsd(cache, "deploy", "--local", *flags, "--gateway-arg=--rate=*=1/m")
        assert again.returncode == 0, again.stderr
        after = status(url)
        first = httpx.post(gateway + "/sdapi/v1/txt2img", json=SMALL, timeout=120)
        second = httpx.post(gateway + "/sdapi/v1/txt2img", json=SMALL, timeout=120)
        text = knsd(cache, "status", "gwlife", "--local").stdout
        pids = [after["gateway"]["pid"], after["gateway"]["redis"]["pid"]]
    finally:
        knsd(cache, "delete", "gwlife", "--local")
    assert after["latest_revision"] == before["latest_revision"]
    assert after["gateway"]["pid"] != before["gateway"]["pid"] and after["gateway"]["restarts"] == 0
    assert after["gateway"]["redis"]["pid"] == before["gateway"]["redis"]["pid"]  # the queue's Redis stays
    assert first.status_code == 200 and second.status_code == 429  # the new flags are in force
    assert f"Gateway:    {gateway} ready" in text and "Redis:      unix://" in text
    for pid in pids:
        wait_until(
            lambda pid=pid: not Path(f"/proc/{pid}").exists() or _zombie(pid), 30, f"process {pid} to end"
        )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
