"""`knsd simulate --rollout`: a new revision at time T with its cold start, then the traffic moves."""

from __future__ import annotations

from pathlib import Path

from knsd.knative.config import AutoscalerConfig
from knsd.service.spec import ServiceSpec
from knsd.simulate.dist import Distribution
from knsd.simulate.result import Rollout
from knsd.simulate.simulation import Simulation
from knsd.simulate.workload import Workload
from tests.local_helpers import knsd


def _steady(rollout: Rollout, **spec: object):
    arrivals = [i * 0.5 for i in range(800)]  # 2 requests a second for 400 s
    return Simulation(
        ServiceSpec(scale_min=1, **spec),  # type: ignore[arg-type]
        AutoscalerConfig(),
        Workload(arrivals, 400.0, "steady"),
        Distribution("fixed", 0.2),
        Distribution("fixed", 30.0),
        rollout=rollout,
    ).run()


def test_traffic_moves_once_the_new_revision_is_ready() -> None:
    result = _steady(Rollout(100.0))
    # Created at T, Ready one cold start later, and then all traffic at once; the unrouted old revision
    # goes a stable window (60 s) plus the scale-to-zero grace period (30 s) later, as Knative's does.
    assert result.events == [
        (100.0, "revision sd-00002 created"),
        (130.0, "traffic: sd-00002 100%, sd-00001 0%"),
        (220.0, "revision sd-00001 scaled to zero"),
    ]
    assert result.statuses == {200: 800}  # nothing lost, nothing waits: the old revision served meanwhile
    assert result.by_revision == {"sd-00001": 260, "sd-00002": 540}  # arrivals before 130 s, and after
    assert result.max_pods == 2  # both revisions' pods overlap for 90 s: what the rollout costs
    plain = Simulation(
        ServiceSpec(scale_min=1), AutoscalerConfig(), Workload([i * 0.5 for i in range(800)], 400.0, "steady"),
        Distribution("fixed", 0.2), Distribution("fixed", 30.0),
    ).run()  # fmt: skip
    assert result.gpu_hours > plain.gpu_hours


def test_a_canary_gets_its_percent() -> None:
    result = _steady(Rollout(100.0, 10))
    assert result.events[1] == (130.0, "traffic: sd-00002 10%, sd-00001 90%")
    assert len(result.events) == 2  # the old revision keeps serving
    after = 800 - 260
    assert result.by_revision["sd-00002"] == after // 10  # smooth weighted round robin: exact shares


def test_cli(cache: Path) -> None:
    out = knsd(cache, "simulate", "--rate", "1", "--duration", "20m", "--cold-start", "30s",
               "--rollout", "10m", "--no-references")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "autoscaled (min 0, max 10), rollout at 600s" in out.stdout
    assert (
        "Rollout (autoscaled (min 0, max 10), rollout at 600s):\n      600.0s  revision sd-00002 created"
        in out.stdout
    )
    for bad, message in (("99h", "T must be within the workload"), ("10m:0", "PERCENT must be 1-100")):
        out = knsd(cache, "simulate", "--rate", "1", "--duration", "20m", "--rollout", bad)
        assert out.returncode == 2 and f"--rollout: {message}" in out.stderr
