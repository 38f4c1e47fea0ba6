"""Benchmark of the local runtime's activator: added latency on a warm pod, and a cold start split up.

Prints, from one run:
  (1) p50 and p99 through the route versus straight to the pod, interleaved (goal: <= 2 ms added at p50)
  (2) the first request at zero: poke + decision, pod process start, model load, warm-up, inference
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import free_port  # noqa: E402

REQUEST = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 2, "seed": 1}


def knsd(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "knsd", *args], env=env, check=True, capture_output=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def added_latency(env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    address = f"127.0.0.1:{free_port()}"
    knsd(env, "deploy", "--local", "--name", "bench-warm", "--local-address", address, "--scale-min", "1")
    try:
        route = f"http://{address}"
        pod = httpx.get(route + "/.knsd/status").json()["current"]["pods"][0]["url"]
        via, direct = [], []
        with httpx.Client(timeout=60) as client:
            for i in range(runs + 10):
                t = time.perf_counter()
                client.post(route + "/sdapi/v1/txt2img", json=REQUEST).raise_for_status()
                a = time.perf_counter() - t
                t = time.perf_counter()
                client.post(pod + "/sdapi/v1/txt2img", json=REQUEST).raise_for_status()
                b = time.perf_counter() - t
                if i >= 10:  # warm-up
                    via.append(a)
                    direct.append(b)
        return via, direct
    finally:
        knsd(env, "delete", "bench-warm", "--local")


def cold_start(env: dict[str, str]) -> dict[str, float]:
    address = f"127.0.0.1:{free_port()}"
    knsd(env, "deploy", "--local", "--name", "bench-cold", "--local-address", address, "--scale-init", "0",
         "--autoscaler-config", "allow-zero-initial-scale=true")  # fmt: skip
    try:
        route = f"http://{address}"
        sent_wall = time.time()
        t = time.perf_counter()
        r = httpx.post(route + "/sdapi/v1/txt2img", json=REQUEST, timeout=300)
        total = time.perf_counter() - t
        r.raise_for_status()
        pod = httpx.get(route + "/.knsd/status").json()["current"]["pods"][0]
        text = httpx.get(pod["url"] + "/metrics").text
        load, warm = metric(text, "knsd_model_load_seconds"), metric(text, "knsd_warmup_seconds")
        startup = pod["ready_at"] - pod["created"]
        return {
            "total": total,
            "decide": pod["created"] - sent_wall,
            "process": startup - load - warm,
            "load": load,
            "warmup": warm,
            "inference": total - (pod["ready_at"] - sent_wall),
        }
    finally:
        knsd(env, "delete", "bench-cold", "--local")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="knsd-bench-") as tmp:
        env = {**os.environ, "KNSD_CACHE": tmp, "HF_HUB_OFFLINE": "1"}
        via, direct = added_latency(env, args.runs)
        cold = cold_start(env)
    p50v, p50d, p99v, p99d = pct(via, 0.5), pct(direct, 0.5), pct(via, 0.99), pct(direct, 0.99)
    print(f"local runtime benchmark (tiny model, 64x64, 2 steps, {args.runs} interleaved requests)")
    print(
        f"  (1) added latency p50: route {p50v * 1000:6.2f} ms - pod {p50d * 1000:6.2f} ms = "
        f"{(p50v - p50d) * 1000:+.2f} ms   (goal <= 2 ms)"
    )
    print(
        f"      added latency p99: route {p99v * 1000:6.2f} ms - pod {p99d * 1000:6.2f} ms = "
        f"{(p99v - p99d) * 1000:+.2f} ms   (mean added {statistics.mean(via) * 1000 - statistics.mean(direct) * 1000:+.2f} ms)"
    )
    print(
        f"  (2) cold start from zero: {cold['total']:.2f} s = poke+decide {cold['decide']:.2f} s"
        f" + pod process start {cold['process']:.2f} s + model load (torch import + weights) {cold['load']:.2f} s"
        f" + warm-up {cold['warmup']:.2f} s + inference {cold['inference']:.2f} s"
    )


if __name__ == "__main__":
    main()
