"""`knsd simulate --gateway`: the gateway's queue in front of the route, in simulated time."""

from __future__ import annotations

import json
import random
from pathlib import Path

from knsd.knative.config import AutoscalerConfig
from knsd.service.spec import ServiceSpec
from knsd.simulate.dist import Distribution
from knsd.simulate.result import SimResult
from knsd.simulate.simulation import Simulation
from knsd.simulate.workload import poisson
from tests.local_helpers import knsd


def _run(rate: float, duration: float, gateway: int | None, scale_min: int = 0) -> SimResult:
    workload = poisson(rate, duration, random.Random(7))
    spec = ServiceSpec(scale_min=scale_min, scale_max=3, gateway=gateway is not None)
    return Simulation(
        spec, AutoscalerConfig(), workload, Distribution("fixed", 2.0), Distribution("fixed", 30.0), seed=7,
        gateway=gateway,
    ).run()  # fmt: skip


def test_an_overload_waits_at_the_gateway_instead_of_timing_out_at_the_activator() -> None:
    direct, queued = _run(2.0, 1200, None), _run(2.0, 1200, 3)
    assert direct.statuses.get(504, 0) > 0  # past the 300 s timeout in the activator's buffer
    assert queued.statuses == {200: queued.requests} and queued.requests == direct.requests
    assert max(buffered for *_, buffered in queued.samples) <= 3  # never more than the bound at the route
    assert queued.max_queue > 100 and queued.max_pods == direct.max_pods == 3


def test_below_its_bound_the_gateway_changes_nothing() -> None:
    direct, queued = _run(0.1, 600, None, scale_min=3), _run(0.1, 600, 3, scale_min=3)
    assert queued.max_queue == 0 and queued.latencies == direct.latencies


def test_cli_reports_the_queue(cache: Path) -> None:
    flags = ["--rate", "2", "--duration", "20m", "--service-time", "2s", "--cold-start", "30s", "--scale-max", "3",
             "--no-references"]  # fmt: skip
    table = knsd(cache, "simulate", *flags, "--gateway")
    data = json.loads(knsd(cache, "simulate", *flags, "--gateway", "-o", "json").stdout)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[2]
    assert header.split()[-2:] == ["max", "queue"] and "gateway (3 in flight)" in table.stdout
    scenario = data["scenarios"][0]
    assert scenario["gateway"]["max_inflight"] == 3 and scenario["gateway"]["max_queue"] > 0
    assert scenario["statuses"] == {"200": scenario["requests"]}
