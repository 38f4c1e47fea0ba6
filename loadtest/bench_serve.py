"""Benchmark of `knsd serve` on the tiny model: HTTP overhead, cold start, peak RSS.

Prints, from one run, ratios measured side by side:
  (1) end-to-end txt2img latency through the server / the same pipeline call in-process (goal <= 1.05)
  (2) cold start: `knsd serve` from spawn to /readyz 200 / its floor, a fresh process from spawn to the line
      it prints once it has imported torch + diffusers and loaded the pipeline: both whole processes timed
      by this one from Popen to an event (the floor's exit is not counted), alternating floor and server
      (the order swapped every round), medians (goal <= 1.3)
  (3) the server's peak RSS
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

# One compute thread on both sides: on a small machine two OpenMP teams per process land on the cores
# differently in each process, and that variance (±10 %) would swamp the HTTP cost being measured.
os.environ["OMP_NUM_THREADS"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import free_port  # noqa: E402

REQUEST = {"prompt": "pretty dog", "width": 64, "height": 64, "steps": 20, "seed": 1}
SETTLE = 0.05  # seconds between the two sides of an interleaved pair
FLOOR = """
import sys
import torch, diffusers
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], local_files_only=True, safety_checker=None)
print("done", flush=True)
"""


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "KNSD_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


class InProcess:
    """The engine the server uses, loaded and run on a worker thread exactly as the server does."""

    def __init__(self, cache: Path) -> None:
        from knsd.serve.api.request import parse_txt2img
        from knsd.serve.generate.engine import Engine
        from knsd.serve.models.loader import load_model

        self.pool = ThreadPoolExecutor(1)
        self.engine = self.pool.submit(lambda: Engine(load_model("tiny", cache, device="cpu"))).result()
        self.req = parse_txt2img(REQUEST, 1 << 30)

    def __call__(self) -> None:
        self.pool.submit(self.engine.generate, self.req).result()


def cold_start_floor(cache: Path, model_dir: Path) -> float:
    """Seconds from spawning the floor process to its line (imports + pipeline load done)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR, str(model_dir)], env=_env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    seconds = time.perf_counter() - t
    proc.wait(60)
    if line.strip() != "done":
        raise RuntimeError("the floor process failed")
    return seconds


def server_run(cache: Path, runs: int, direct: InProcess) -> tuple[float, float, float, float, float, int]:
    """Cold start, then median latency over HTTP and in-process, interleaved; and peak RSS in KiB."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "knsd",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=60) as client:
            while True:
                try:
                    if client.get(url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("knsd serve exited during start-up")
                time.sleep(0.01)
            cold = time.perf_counter() - t0
            http_times, direct_times, server_times = [], [], []
            for i in range(runs + 3):
                # Alternate so that drift in machine speed hits both sides alike.
                t = time.perf_counter()
                response = client.post(url + "/sdapi/v1/txt2img", json=REQUEST)
                http = time.perf_counter() - t
                response.raise_for_status()
                # Let the other process's OpenMP threads stop spinning before timing this side.
                time.sleep(SETTLE)
                t = time.perf_counter()
                direct()
                if i >= 3:
                    direct_times.append(time.perf_counter() - t)
                    http_times.append(http)
                    server_times.append(float(response.headers["x-process-time"]))
                time.sleep(SETTLE)
        rss = 0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1])
        ratio = statistics.median(h / d for h, d in zip(http_times, direct_times, strict=True))
        wire = statistics.median(h / s for h, s in zip(http_times, server_times, strict=True))
        return cold, statistics.median(http_times), statistics.median(direct_times), ratio, wire, rss
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cold-runs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="knsd-bench-") as tmp:
        cache = Path(tmp)
        from knsd.serve.models.tiny import ensure_tiny_model

        model_dir = ensure_tiny_model(cache)
        direct = InProcess(cache)
        floors, colds, https, directs, ratios, wires, rss = [], [], [], [], [], [], 0
        cold_start_floor(cache, model_dir)  # the page cache and .pyc files warm for both sides, not counted
        for i in range(args.cold_runs):
            if i % 2 == 0:  # floor and server alternate, the order swapped every round
                floors.append(cold_start_floor(cache, model_dir))
            cold, http, inproc, pair_ratio, wire, peak = server_run(cache, args.runs, direct)
            if i % 2 == 1:
                floors.append(cold_start_floor(cache, model_dir))
            colds.append(cold)
            https.append(http)
            directs.append(inproc)
            ratios.append(pair_ratio)
            wires.append(wire)
            rss = max(rss, peak)
    cold, http, direct_s = statistics.median(colds), statistics.median(https), statistics.median(directs)
    floor = statistics.median(floors)
    pair = statistics.median(c / f for c, f in zip(colds, floors, strict=True))
    print("knsd serve benchmark (tiny model, 64x64, 20 steps, Euler)")
    print(
        f"  (1) HTTP overhead   server {http * 1000:7.1f} ms / in-process {direct_s * 1000:7.1f} ms"
        f"; per pair = {statistics.median(ratios):.3f}   (goal <= 1.05)"
    )
    print(
        f"      of which HTTP + JSON: client latency / the server's X-Process-Time = {statistics.median(wires):.3f}"
    )
    print(
        f"  (2) cold start      ready {cold:6.2f} s / floor {floor:6.2f} s"
        f" = {cold / floor:.3f} (per round {pair:.3f}; both from spawn, medians of {args.cold_runs})   (goal <= 1.3)"
    )
    print(f"  (3) peak RSS        {rss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
