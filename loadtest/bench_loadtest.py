"""Benchmark: knsd loadtest against Debian's hey, same flags, same local endpoints, alternating runs.

Prints:
  throughput on a no-op endpoint at -c 50: knsd / hey (goal >= 0.9)
  p50 and p99 on a 50 ms endpoint at -c 50: knsd / hey (goal within 0.9-1.1)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import free_port  # noqa: E402


def ensure_hey() -> str:
    """Debian's hey, installed here if missing (the benchmark's set-up)."""
    found = shutil.which("hey")
    if found:
        return found
    print("installing Debian's hey ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], check=True, capture_output=True)
    found = shutil.which("hey")
    if not found:
        raise SystemExit("could not install hey (apt-get install hey)")
    return found


def run_hey(hey: str, args: list[str]) -> str:
    return subprocess.run([hey, *args], check=True, capture_output=True, text=True).stdout


def run_knsd(args: list[str], output_json: bool = False) -> str:
    extra = ["-o", "json"] if output_json else []
    return subprocess.run([sys.executable, "-m", "knsd", "loadtest", *extra, *args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def rps(report: str) -> float:
    return float(re.search(r"Requests/sec:\t([\d.]+)", report).group(1))


def hey_pct(report: str, p: int) -> float:
    return float(re.search(rf"  {p}% in ([\d.]+) secs", report).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=20000, help="requests per no-op run")
    args = parser.parse_args()
    hey = ensure_hey()
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "loadtest" / "endpoints.py"), "--port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(base + "/noop")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        noop = ["-n", str(args.n), "-c", "50", base + "/noop"]
        delay = ["-n", "2000", "-c", "50", base + "/delay?ms=50"]
        ours_rps, hey_rps, ours_p50, hey_p50, ours_p99, hey_p99 = [], [], [], [], [], []
        for _ in range(args.rounds):
            hey_rps.append(rps(run_hey(hey, noop)))
            ours_rps.append(rps(run_knsd(noop)))
            theirs = run_hey(hey, delay)
            hey_p50.append(hey_pct(theirs, 50))
            hey_p99.append(hey_pct(theirs, 99))
            ours = run_knsd(delay)
            ours_p50.append(hey_pct(ours, 50))
            ours_p99.append(hey_pct(ours, 99))
        ours_json = json.loads(run_knsd(delay, output_json=True))
    finally:
        server.terminate()
        server.wait(10)
    med = statistics.median
    print(f"knsd loadtest vs hey (same endpoints, alternating, median of {args.rounds} rounds)")
    print(
        f"  throughput, no-op, -c 50:  knsd {med(ours_rps):8.0f} req/s / hey {med(hey_rps):8.0f} req/s"
        f" = {med(ours_rps) / med(hey_rps):.2f}   (goal >= 0.9)"
    )
    print(
        f"  p50, 50 ms endpoint, -c 50: knsd {med(ours_p50) * 1000:6.1f} ms / hey {med(hey_p50) * 1000:6.1f} ms"
        f" = {med(ours_p50) / med(hey_p50):.2f}   (goal 0.9-1.1)"
    )
    print(
        f"  p99, 50 ms endpoint, -c 50: knsd {med(ours_p99) * 1000:6.1f} ms / hey {med(hey_p99) * 1000:6.1f} ms"
        f" = {med(ours_p99) / med(hey_p99):.2f}   (goal 0.9-1.1)"
    )
    p999 = ours_json["latency_percentiles"]["p99.9"]
    print(f"  (knsd's exact p99.9 on the 50 ms endpoint: {p999 * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
