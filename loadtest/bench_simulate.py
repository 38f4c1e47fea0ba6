"""Benchmark: how long `knsd simulate` takes for a day of traffic at 10 requests/s (goal: seconds)."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from knsd.knative.config import AutoscalerConfig  # noqa: E402
from knsd.service.spec import ServiceSpec  # noqa: E402
from knsd.simulate.dist import parse_distribution  # noqa: E402
from knsd.simulate.simulation import Simulation  # noqa: E402
from knsd.simulate.workload import poisson  # noqa: E402


def main() -> None:
    workload = poisson(10, 86400, random.Random(1))
    started = time.perf_counter()
    result = Simulation(
        ServiceSpec(scale_max=0),
        AutoscalerConfig(),
        workload,
        parse_distribution("lognormal:2s,0.3", "--service-time"),
        parse_distribution("30s", "--cold-start"),
    ).run()
    elapsed = time.perf_counter() - started
    print(
        "knsd simulate benchmark (one simulated day, Poisson 10 req/s, lognormal 2 s service, 30 s cold start)"
    )
    print(f"  {result.requests} requests, {len(result.pods)} pods created, {result.gpu_hours:.1f} GPU-hours")
    print(
        f"  {elapsed:.1f} s of compute for 86400 s simulated = {86400 / elapsed:,.0f}x real time   (goal: seconds)"
    )


if __name__ == "__main__":
    main()
