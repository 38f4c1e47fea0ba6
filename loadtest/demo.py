"""`make demo`: the whole system on one machine, from zero to 3 pods and back to zero.

Deploys the tiny model on the local runtime (max-scale 3, initial-scale 0), drives it with 3 concurrent
clients, prints the scale-out as it happens, waits for scale to zero and deletes the service.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx

NAME = "sd-demo"
ADDRESS = os.environ.get("KNSD_DEMO_ADDRESS", "127.0.0.1:8080")
KNSD = [sys.executable, "-m", "knsd"]
DEPLOY = [
    "deploy", "--local", "--name", NAME, "--local-address", ADDRESS,
    "--scale-max", "3", "--scale-init", "0", "--scale-window", "20s",
    "--autoscaler-config", "allow-zero-initial-scale=true",
    "--autoscaler-config", "scale-to-zero-grace-period=10s",
]  # fmt: skip
BODY = {"prompt": "pretty dog", "width": 256, "height": 256, "steps": 20}


def knsd(*args: str) -> None:
    print("$ knsd " + " ".join(args), flush=True)
    subprocess.run([*KNSD, *args], check=True)


def snapshot(url: str) -> dict:
    return httpx.get(url + "/.knsd/status", timeout=5).json()["current"]


def line(t: float, cur: dict, done: int) -> str:
    pods = cur["pods"]
    ready = sum(p["state"] == "ready" for p in pods)
    pending = sum(p["state"] == "pending" for p in pods)
    bar = "#" * ready + "+" * pending
    return (
        f"{t:6.1f}s  pods {bar:<4} ready {ready} pending {pending}  desired {cur['desired_scale']}  "
        f"panic {'yes' if cur['panic'] else 'no ':<3}  buffered {cur['buffered']}  done {done}"
    )


def main() -> int:
    url = f"http://{ADDRESS}"
    subprocess.run([*KNSD, "delete", NAME, "--local"], capture_output=True)
    knsd(*DEPLOY)
    try:
        print("\n3 clients send 256x256 txt2img requests back to back; '#' ready pod, '+' starting pod\n")
        stop = threading.Event()
        results: list[tuple[float, float, int, str]] = []  # (sent, latency, status, pod)
        t0 = time.monotonic()

        def client() -> None:
            with httpx.Client(timeout=300) as c:
                while not stop.is_set():
                    sent = time.monotonic()
                    r = c.post(url + "/sdapi/v1/txt2img", json=BODY)
                    results.append(
                        (sent, time.monotonic() - sent, r.status_code, r.headers.get("x-knsd-pod", ""))
                    )

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        max_ready, full_since = 0, None
        while time.monotonic() - t0 < 180:
            cur = snapshot(url)
            print(line(time.monotonic() - t0, cur, len(results)), flush=True)
            ready = sum(p["state"] == "ready" for p in cur["pods"])
            max_ready = max(max_ready, ready)
            if ready == 3 and full_since is None:
                full_since = time.monotonic()
            if full_since and time.monotonic() - full_since > 8:
                break
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        history = snapshot(url)["pod_history"]
        codes = sorted({code for _, _, code, _ in results})
        print(
            f"\nScale-out: max ready pods {max_ready} (max-scale 3); {len(results)} requests, status codes {codes}"
        )
        if results:
            print(f"Cold start from zero: the first request was answered after {min(results)[1]:.1f}s")
        for pod in history:
            print(f"  {pod['name']}: created -> ready in {pod['startup_seconds']}s, served {pod['served']}, "
                  f"max in flight {pod['max_inflight']}")  # fmt: skip
        print("\nLoad stopped; waiting for scale to zero (stable window 20s, grace 10s) ...")
        t1 = time.monotonic()
        while snapshot(url)["pods"] and time.monotonic() - t1 < 180:
            time.sleep(1)
        zero = not snapshot(url)["pods"]
        print(
            f"Scaled to zero {time.monotonic() - t1:.0f}s after the load ended."
            if zero
            else "Did not reach zero!"
        )
        return 0 if max_ready == 3 and zero and codes == [200] else 1
    finally:
        knsd("delete", NAME, "--local")


if __name__ == "__main__":
    sys.exit(main())
