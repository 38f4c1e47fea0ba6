"""Benchmark: knsd loadtest against Debian's hey, same flags, same local endpoints, alternating runs.

The load generator is measured where the endpoint is not the bottleneck. Driving a no-op endpoint "as fast as
possible" measures the endpoint (one aiohttp process tops out near the rate either client reaches), so:
  (1) client cost: both tools send requests at the same fixed rate (-c 10 -q 100: 1000 req/s) to the
      no-op endpoint, N and N/5 of them, and each client process's CPU seconds (user + system, from wait4)
      are read; the CPU per request is the difference over the difference in requests (the start-up of
      the interpreter or binary cancels out, and is reported on its own): knsd / hey. Both must hold the
      rate (the run says so if one fell behind: then that client was the limit);
  (2) p50 and p99 on a 50 ms endpoint at -c 50 (<= 1000 req/s, the endpoint mostly sleeps):
      knsd / hey (goal within 0.9-1.1).
Rounds alternate hey and knsd, the order swapped every round; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def cpu_run(cmd: list[str]) -> tuple[str, float]:
    """Run a client to completion; its report and the CPU seconds (user + system) it used."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"{cmd[0]} exited {proc.returncode}")
        out.seek(0)
        return out.read(), usage.ru_utime + usage.ru_stime


def rps(report: str) -> float:
    return float(re.search(r"Requests/sec:\t([\d.]+)", report).group(1))


def hey_pct(report: str, p: int) -> float:
    return float(re.search(rf"  {p}% in ([\d.]+) secs", report).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=6000, help="requests per fixed-rate run (at 1000 req/s)")
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
        fixed = ["-c", "10", "-q", "100"]
        delay = ["-n", "2000", "-c", "50", base + "/delay?ms=50"]
        knsd_cmd = [sys.executable, "-m", "knsd", "loadtest"]
        small = max(50, args.n // 5)
        cpu: dict[str, list[float]] = {"knsd": [], "hey": []}
        fixed_cost: dict[str, list[float]] = {"knsd": [], "hey": []}
        rate: dict[str, list[float]] = {"knsd": [], "hey": []}
        ours_p50, hey_p50, ours_p99, hey_p99 = [], [], [], []
        for i in range(args.rounds):
            for tool in ("hey", "knsd") if i % 2 == 0 else ("knsd", "hey"):
                cmd = [hey] if tool == "hey" else knsd_cmd
                seconds = {}
                for n in (args.n, small):
                    report, seconds[n] = cpu_run([*cmd, "-n", str(n), *fixed, base + "/noop"])
                    if n == args.n:
                        rate[tool].append(rps(report))
                per_request = (seconds[args.n] - seconds[small]) / (args.n - small)
                cpu[tool].append(per_request)
                fixed_cost[tool].append(seconds[small] - small * per_request)
                if tool == "hey":
                    theirs = run_hey(hey, delay)
                    hey_p50.append(hey_pct(theirs, 50))
                    hey_p99.append(hey_pct(theirs, 99))
                else:
                    ours = run_knsd(delay)
                    ours_p50.append(hey_pct(ours, 50))
                    ours_p99.append(hey_pct(ours, 99))
        ours_json = json.loads(run_knsd(delay, output_json=True))
    finally:
        server.terminate()
        server.wait(10)
    med = statistics.median
    print(
        f"knsd loadtest vs hey (same endpoints, alternating, order swapped each round, median of {args.rounds})"
    )
    held = all(r >= 900 for r in rate["knsd"] + rate["hey"])
    print(
        f"  (1) client CPU per request at a fixed 1000 req/s (-c 10 -q 100, no-op endpoint): "
        f"knsd {med(cpu['knsd']) * 1e6:6.1f} us / hey {med(cpu['hey']) * 1e6:6.1f} us"
        f" = {med(cpu['knsd']) / med(cpu['hey']):.2f}"
    )
    print(
        f"      one client core sends at most ~{1 / med(cpu['knsd']):.0f} req/s with knsd, "
        f"~{1 / med(cpu['hey']):.0f} with hey; start-up CPU knsd {med(fixed_cost['knsd']):.2f} s, "
        f"hey {med(fixed_cost['hey']):.3f} s"
    )
    print(
        f"      rates held: knsd {med(rate['knsd']):.0f} req/s, hey {med(rate['hey']):.0f} req/s"
        + ("" if held else "   (a client fell below 900 req/s: it, not the endpoint, was the limit)")
    )
    print(
        f"  (2) p50, 50 ms endpoint, -c 50: knsd {med(ours_p50) * 1000:6.1f} ms / hey {med(hey_p50) * 1000:6.1f} ms"
        f" = {med(ours_p50) / med(hey_p50):.2f}   (goal 0.9-1.1)"
    )
    print(
        f"      p99, 50 ms endpoint, -c 50: knsd {med(ours_p99) * 1000:6.1f} ms / hey {med(hey_p99) * 1000:6.1f} ms"
        f" = {med(ours_p99) / med(hey_p99):.2f}   (goal 0.9-1.1)"
    )
    p999 = ours_json["latency_percentiles"]["p99.9"]
    print(f"      (knsd's exact p99.9 on the 50 ms endpoint: {p999 * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
