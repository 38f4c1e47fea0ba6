"""Scale-out verification: against the local runtime, and a fake Kubernetes API server's pod list/watch."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from knsd.loadtest.run import execute
from knsd.loadtest.spec import parse_args
from tests.fakekube import fake_kube
from tests.local_helpers import knsd, local_service
from tests.servers import aiohttp_server, app

ZERO = ["--scale-init", "0", "--autoscaler-config", "allow-zero-initial-scale=true"]
FAST = ["--autoscaler-config", "stable-window=6s", "--autoscaler-config", "scale-to-zero-grace-period=6s"]
BODY = '{"prompt": "pretty dog", "width": 128, "height": 128, "steps": 20}'


@pytest.mark.slow
def test_local_scale_out_from_zero_and_back(cache: Path) -> None:
    with local_service(cache, "lt", "--scale-max", "2", *ZERO, *FAST) as url:
        out = knsd(cache, "loadtest", "-z", "20s", "-c", "2", "-m", "POST", "-T", "application/json", "-d", BODY,
                   "-t", "120", "--local", "--expect-pods", "2", "--expect-zero-after", "60", "-o", "json",
                   url + "/sdapi/v1/txt2img", timeout=200)  # fmt: skip
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        scale = report["scale_out"]
        assert report["status_codes"] == {"200": report["summary"]["successes"]}
        assert scale["ready_at_start"] == 0 and scale["max_ready"] == 2
        assert scale["cold_start"] is not None and scale["cold_start"] > 1
        assert len(scale["new_pods"]) == 2 and all(p["startup"] > 0 for p in scale["new_pods"])
        assert scale["timeline"][0]["ready"] == 0 and max(s["ready"] for s in scale["timeline"]) == 2
        assert scale["zero_after"] is not None and scale["failures"] == []
        # Asking for more pods than max-scale allows fails clearly, with exit code 1.
        short = knsd(cache, "loadtest", "-n", "2", "-c", "1", "-m", "POST", "-T", "application/json", "-d", BODY, "--local",
                     "--expect-pods", "3",
                     url + "/sdapi/v1/txt2img", timeout=200)  # fmt: skip
        assert short.returncode == 1
        assert "scale-out check failed: at most" in short.stderr and "expected at least 3" in short.stderr
        assert "Scale-out:" in short.stdout and "Max ready pods:" in short.stdout


def _once_watching(fake, delay: float, action) -> threading.Thread:
    """Run `action` `delay` seconds after the load tester has listed the pods and started watching them."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            q.get("watch") in ("true", "True") for _, _, q in fake.requests
        ):
            time.sleep(0.02)
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_kubernetes_pod_watch(tmp_path: Path) -> None:
    with fake_kube(tmp_path) as (fake, config), aiohttp_server(app()) as target:
        fake.add_pod("sd-00001-deployment-a", "sd", ready=True)
        fake.add_pod("other-00001-deployment-x", "other", ready=True)

        def scale_up() -> None:
            fake.add_pod("sd-00001-deployment-b", "sd")
            fake.add_pod("sd-00001-deployment-c", "sd")
            time.sleep(0.4)
            fake.set_ready("sd-00001-deployment-b")
            fake.set_ready("sd-00001-deployment-c")

        cluster = _once_watching(fake, 0.3, scale_up)
        spec = parse_args(["-z", "2.5s", "-c", "2", "-q", "20", "--service", "sd", "--kubeconfig", str(config),
                           "--expect-pods", "3", target + "/ok"])  # fmt: skip
        outcome = execute(spec)
        cluster.join()
        scale = outcome.scale
        assert scale is not None and scale.failures == []
        assert scale.ready_at_start == 1 and scale.max_ready == 3
        assert scale.cold_start is None  # it did not start from zero
        assert {p.name for p in scale.new_pods()} >= {"sd-00001-deployment-b", "sd-00001-deployment-c"}
        assert "other-00001-deployment-x" not in scale.pods
        paths = {(m, p) for m, p, _ in fake.requests}
        assert ("GET", "/api/v1/namespaces/default/pods") in paths
        queries = [q for _, _, q in fake.requests]
        assert all(q.get("labelSelector") == "serving.knative.dev/service=sd" for q in queries)
        assert any(q.get("watch") in ("true", "True") for q in queries)


def test_kubernetes_expect_zero_after(tmp_path: Path) -> None:
    with fake_kube(tmp_path) as (fake, config), aiohttp_server(app()) as target:
        fake.add_pod("sd-a", "sd", ready=True)
        cluster = _once_watching(fake, 2.0, lambda: fake.delete_pod("sd-a"))
        spec = parse_args(["-n", "4", "-c", "2", "--service", "sd", "--kubeconfig", str(config),
                           "--expect-zero-after", "10", target + "/ok"])  # fmt: skip
        outcome = execute(spec)
        cluster.join()
        assert outcome.scale is not None and outcome.scale.failures == []
        assert outcome.scale.zero_after is not None and 1.5 < outcome.scale.zero_after < 10


def test_unreachable_cluster_is_a_clear_error(cache: Path, tmp_path: Path) -> None:
    from tests.fakekube import kubeconfig

    config = kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    out = knsd(
        cache,
        "loadtest",
        "-n",
        "1",
        "-c",
        "1",
        "--service",
        "sd",
        "--kubeconfig",
        str(config),
        "http://127.0.0.1:1/",
    )
    assert out.returncode == 1 and "cannot reach the Kubernetes API server" in out.stderr
    assert "Traceback" not in out.stderr
