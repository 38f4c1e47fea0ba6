"""`knsd serve` as a real process: loading then ready, SIGTERM drain, and a model that fails to load."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import start_serve, wait_for

pytestmark = pytest.mark.slow


SMALL = {"prompt": "x", "width": 64, "height": 64, "steps": 2}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_probes_while_loading_then_ready(cache: Path, tmp_path: Path) -> None:
    proc, url = start_serve(cache, log=tmp_path / "serve.log")
    try:
        wait_for(url + "/healthz", 60)  # alive before the model is loaded
        statuses = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            r = httpx.get(url + "/readyz")
            statuses.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.json()["status"] == "loading"
            # Small and patient: the model may finish loading between the probe and this request.
            busy = httpx.post(url + "/sdapi/v1/txt2img", json=SMALL, timeout=60)
            assert busy.status_code in (503, 200)
            if busy.status_code == 503:
                assert busy.headers["retry-after"] and busy.json()["detail"] == "model is loading"
            time.sleep(0.05)
        assert statuses[0] == 503 and statuses[-1] == 200
        r = httpx.post(url + "/sdapi/v1/txt2img", json=SMALL)
        assert r.status_code == 200
    finally:
        _stop(proc)


def test_sigterm_drains_running_and_queued_then_exits_0(cache: Path, tmp_path: Path) -> None:
    proc, url = start_serve(cache, "--drain-timeout", "60", log=tmp_path / "serve.log")
    try:
        wait_for(url + "/readyz", 90)
        results: dict[int, httpx.Response] = {}
        slow = {"prompt": "x", "width": 512, "height": 512, "steps": 60}

        def post(i: int) -> None:
            results[i] = httpx.post(url + "/sdapi/v1/txt2img", json={**slow, "seed": i}, timeout=120)

        workers = [threading.Thread(target=post, args=(i,)) for i in range(2)]
        for w in workers:
            w.start()
            time.sleep(0.2)
        while httpx.get(url + "/sdapi/v1/progress").json()["state"]["sampling_step"] < 1:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert httpx.get(url + "/readyz").status_code == 503
        late = httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "late"})
        assert late.status_code == 503 and late.json()["detail"] == "server is shutting down"
        for w in workers:
            w.join(120)
        assert proc.wait(60) == 0
        assert [results[i].status_code for i in range(2)] == [200, 200]
        assert all(len(results[i].json()["images"]) == 1 for i in range(2))
    finally:
        _stop(proc)


def test_model_that_cannot_load_exits_1(cache: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "v1-5-pruned-emaonly.safetensors"
    bogus.write_bytes(b"this is not a checkpoint")
    for model, expected in [(str(tmp_path / "missing"), "not found"), (str(bogus), "could not load")]:
        log = tmp_path / "fail.log"
        proc, _ = start_serve(cache, "--model", model, log=log)
        try:
            assert proc.wait(90) == 1
        finally:
            _stop(proc)
        assert expected in log.read_text()


def test_bad_flag_names_flag_and_range(cache: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "knsd", "serve", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "--port" in proc.stderr and "65535" in proc.stderr


def test_port_zero_reports_the_bound_port(cache: Path, tmp_path: Path) -> None:
    from tests.helpers import knsd_env

    port_file = tmp_path / "pod.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "knsd", "serve", "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)],
        env=knsd_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        port = int(port_file.read_text())
        assert 0 < port < 65536
        wait_for(f"http://127.0.0.1:{port}/readyz", 90)
    finally:
        _stop(proc)
