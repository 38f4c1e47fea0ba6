"""The local runtime end to end: real CLI, runtime daemon, activator and `knsd serve` pod processes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from knsd.local.state import ServiceDir
from tests.local_helpers import Load, knsd, live_pods, local_service, pod_peak, status, wait_until

pytestmark = pytest.mark.slow
FAST = ["--autoscaler-config", "stable-window=6s", "--autoscaler-config", "scale-to-zero-grace-period=6s"]
ZERO = ["--scale-init", "0", "--autoscaler-config", "allow-zero-initial-scale=true"]
SMALL = {"prompt": "x", "width": 64, "height": 64, "steps": 4}
BUSY = {"prompt": "x", "width": 512, "height": 512, "steps": 25}


def test_zero_to_n_and_back_to_zero(cache: Path) -> None:
    with local_service(cache, "scale", "--scale-max", "3", *ZERO, *FAST) as url:
        assert live_pods(url) == []  # initial-scale 0: nothing runs until the first request
        started = time.monotonic()
        first = httpx.post(url + "/sdapi/v1/txt2img", json=SMALL, timeout=120)
        cold = time.monotonic() - started
        assert first.status_code == 200 and first.headers["x-knsd-pod"].startswith("scale-00001-")
        assert cold > 1  # it really started a pod
        peaks: dict[str, float] = {}
        with Load(url, clients=3, body=BUSY) as load:
            wait_until(lambda: sum(p["state"] == "ready" for p in live_pods(url)) == 3, 120, "3 ready pods")
            st = status(url)["current"]
            assert st["desired_scale"] == 3  # max-scale caps the panic-mode decision
            wait_until(lambda: len({pod for _, pod in load.results}) == 3, 60, "all 3 pods serving")
            for pod in live_pods(url):
                peaks[pod["name"]] = pod_peak(pod["url"])
        assert {code for code, _ in load.results} == {200}
        history = status(url)["current"]["pod_history"]
        assert all(p["max_inflight"] <= 1 for p in history)  # containerConcurrency 1 at the activator...
        assert peaks and all(peak <= 1 for peak in peaks.values())  # ...and as the pods saw it
        waited = wait_until(lambda: live_pods(url) == [], 90, "scale to zero")
        assert waited >= 6  # not before the stable window emptied
        history = status(url)["current"]["pod_history"]
        assert {p["state"] for p in history} == {"exited"}  # drained and exited, none failed


def test_killed_pod_fails_its_request_with_502_and_is_replaced(cache: Path) -> None:
    with local_service(cache, "crash", "--scale-min", "1", "--scale-max", "1") as url:
        pod = live_pods(url)[0]
        result: dict = {}

        def long_request() -> None:
            result["r"] = httpx.post(url + "/sdapi/v1/txt2img", json={**BUSY, "steps": 150}, timeout=120)

        worker = threading.Thread(target=long_request)
        worker.start()
        wait_until(
            lambda: live_pods(url)[0]["inflight"] == 1, 30, "the request to reach the pod", period=0.05
        )
        time.sleep(0.3)
        os.kill(pod["pid"], signal.SIGKILL)
        worker.join(60)
        r = result["r"]
        assert r.status_code == 502
        assert pod["name"] in r.json()["detail"]
        wait_until(
            lambda: any(p["state"] == "ready" and p["name"] != pod["name"] for p in live_pods(url)),
            90,
            "a new pod",
        )
        assert httpx.post(url + "/sdapi/v1/txt2img", json=SMALL, timeout=60).status_code == 200
        failed = [p for p in status(url)["current"]["pod_history"] if p["state"] == "failed"]
        assert [p["name"] for p in failed] == [pod["name"]]


def test_cookie_affinity_pins_a_client_and_delete_drains(cache: Path) -> None:
    flags = ["--scale-min", "2", "--scale-max", "2", "--affinity", "cookie", "--cookie-name", "sdpin"]
    with local_service(cache, "sticky", *flags) as url:
        wait_until(lambda: sum(p["state"] == "ready" for p in live_pods(url)) == 2, 60, "2 ready pods")
        with httpx.Client(timeout=60) as client:
            first = client.post(url + "/sdapi/v1/txt2img", json=SMALL)
            pinned = first.headers["x-knsd-pod"]
            assert client.cookies["sdpin"] == pinned
            assert "Max-Age=1800" in first.headers["set-cookie"]
            seen = {
                client.post(url + "/sdapi/v1/txt2img", json=SMALL).headers["x-knsd-pod"] for _ in range(4)
            }
            assert seen == {pinned}
        # Delete while a request is running: it is answered, not dropped.
        result: dict = {}
        worker = threading.Thread(
            target=lambda: result.setdefault(
                "r", httpx.post(url + "/sdapi/v1/txt2img", json=BUSY, timeout=120)
            )
        )
        worker.start()
        wait_until(lambda: status(url)["current"]["inflight"] == 1, 30, "a running request", period=0.05)
        deleted = knsd(cache, "delete", "sticky", "--local")
        worker.join(60)
        assert deleted.returncode == 0 and "deleted" in deleted.stdout
        assert result["r"].status_code == 200


def test_update_creates_a_new_revision_in_the_same_runtime(cache: Path) -> None:
    with local_service(cache, "upd", "--scale-min", "1") as url:
        pid = status(url)["pid"]
        old = live_pods(url)[0]
        address = url.removeprefix("http://")
        out = knsd(cache, "deploy", "--local", "--name", "upd", "--local-address", address, "--scale-min", "1",
                   "--env", "KNSD_TEST=2")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "revision upd-00002" in out.stdout
        st = status(url)
        assert st["pid"] == pid and st["latest_ready_revision"] == "upd-00002"
        assert live_pods(url)[0]["name"].startswith("upd-00002-")
        wait_until(lambda: len(status(url)["revisions"]) == 1, 60, "the old revision to go")
        assert old["name"] not in {p["name"] for p in live_pods(url)}
        moved = knsd(cache, "deploy", "--local", "--name", "upd", "--local-address", "127.0.0.1:1")
        assert moved.returncode == 2 and "already runs at" in moved.stderr


def test_buffered_request_times_out_with_504(cache: Path) -> None:
    with local_service(cache, "slow", "--scale-min", "1", "--scale-max", "1", "--timeout", "2") as url:
        codes: list[int] = []
        body = {**BUSY, "steps": 150}
        threads = [
            threading.Thread(
                target=lambda: codes.append(
                    httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=60).status_code
                )
            )
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert codes == [504, 504]  # one at the pod past the timeout, one still buffered


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--autoscaler-config", "stable-window=5s"], "stable-window = 5s, must be in [6s; 1h0m0s] range"),
        (["--autoscaler-config", "max-scale-up-rate=1"], "max-scale-up-rate = 1, must be greater than 1.0"),
        (["--autoscaler-config", "nope=1"], "unknown config-autoscaler key 'nope'"),
        (["--autoscaler-config", "stable-window"], "expected KEY=VALUE"),
        (["--scale-min", "5", "--scale-max", "2"], "max-scale=2 is less than min-scale=5"),
        (
            ["--scale-window", "1s"],
            "expected 6s <= 1s <= 1h0m0s: spec.template.metadata.annotations.autoscaling.knative.dev/window",
        ),
        (["--scale-init", "0"], "initial-scale=0 not allowed by cluster"),
        (["--annotation", "autoscaling.knative.dev/target=0"], "target 0 should be at least 0.01"),
        (["--concurrency-limit", "1001"], "--concurrency-limit: must be between 0 and 1000, got 1001"),
        (["--local-address", "nowhere"], "--local-address: expected HOST:PORT"),
        (["--model", "/no/such/model"], "--model: '/no/such/model' not found"),
    ],
)
def test_bad_settings_are_rejected_before_anything_starts(
    cache: Path, flags: list[str], message: str
) -> None:
    out = knsd(cache, "deploy", "--local", "--name", "bad", *flags)
    assert out.returncode == 2
    assert message in out.stderr
    assert ServiceDir.for_name("bad", cache).running_pid() is None


def test_stale_pid_file_is_detected(cache: Path) -> None:
    directory = ServiceDir.for_name("ghost", cache)
    directory.root.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    directory.pid_file.write_text(str(dead.pid))
    assert directory.running_pid() is None
    assert not directory.pid_file.exists()
    out = knsd(cache, "status", "ghost", "--local")
    assert out.returncode == 1 and "no local service 'ghost' is running" in out.stderr
