"""`knsd simulate`: what will this Service cost and how slow will it be, before deploying it."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import typer

from knsd.cli.common import cli_errors
from knsd.cli.specflags import autoscaler_config_from, build_spec, with_spec
from knsd.errors import UsageError


@with_spec
def simulate(
    spec: dict[str, Any],
    rate: float | None = typer.Option(
        None, "--rate", min=0.0, help="Poisson arrivals per second (with --duration)."
    ),
    duration: str | None = typer.Option(None, "--duration", help="How long, e.g. 1h or 86400 (with --rate)."),
    trace: Path | None = typer.Option(
        None, "--trace", help="Arrival times: one per line, or knsd loadtest's CSV/JSON."
    ),
    profile_day: str | None = typer.Option(
        None, "--profile-day", help="A day of traffic: peak:R,base:R[,at:HOUR]."
    ),
    service_time: str = typer.Option(
        "2s",
        "--service-time",
        help="2s, lognormal:2s,0.3, uniform:1s,3s, exp:2s, or a `knsd bench -o json` file",
    ),
    cold_start: str = typer.Option(
        "30s", "--cold-start", help="Pod creation to ready; a value or a distribution."
    ),
    gpu_price: float = typer.Option(1.0, "--gpu-price", min=0.0, help="Dollars per GPU-hour."),
    sweep: str | None = typer.Option(
        None, "--sweep", help="KEY=v1,v2,... over one knob, e.g. scale-min=0,1,2."
    ),
    references: bool = typer.Option(
        True, "--references/--no-references", help="Also run always-on references."
    ),
    autoscaler_config: list[str] = typer.Option(
        [], "--autoscaler-config", help="config-autoscaler KEY=VALUE"
    ),
    rollout: str | None = typer.Option(
        None, "--rollout", help="T[:PERCENT]: at T a new revision (its cold start), then PERCENT of traffic."
    ),
    seed: int = typer.Option(1, "--seed", help="Random seed: the same seed gives the same numbers."),
    output: str = typer.Option("", "-o", "--output", help="json for a machine-readable report."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a PNG: pods and queue over time, latency CDF."
    ),
) -> None:
    """Replay a workload through Knative's autoscaler in simulated time: latency, cold starts, GPU cost."""
    from knsd.simulate import report
    from knsd.simulate.dist import parse_distribution, seconds
    from knsd.simulate.scenarios import Scenario, _check, run
    from knsd.simulate.scenarios import references as reference_scenarios
    from knsd.simulate.scenarios import sweep as sweep_scenarios
    from knsd.simulate.workload import daily_profile, poisson
    from knsd.simulate.workload import trace as read_trace

    with cli_errors("simulate"):
        service = build_spec(spec)
        config, _ = autoscaler_config_from(autoscaler_config)
        _check(service, config, "--scale-*")
        if output not in ("", "json"):
            raise UsageError("-o", f"must be json, got {output!r}")
        chosen = [
            name
            for name, value in (("--rate", rate), ("--trace", trace), ("--profile-day", profile_day))
            if value
        ]
        if len(chosen) != 1:
            raise UsageError(
                "--rate",
                "give exactly one workload: --rate R --duration D, --trace FILE or --profile-day SPEC",
            )
        rng = random.Random(seed)
        if rate is not None:
            if duration is None:
                raise UsageError("--duration", "--rate needs --duration, e.g. --duration 1h")
            length = seconds(duration, "--duration")
            if length <= 0:
                raise UsageError("--duration", f"must be positive, got {duration!r}")
            workload = poisson(rate, length, rng)
        elif trace is not None:
            workload = read_trace(trace)
        else:
            workload = daily_profile(profile_day or "", rng)
        service_dist = parse_distribution(service_time, "--service-time")
        cold_dist = parse_distribution(cold_start, "--cold-start")
        started = time.perf_counter()
        name = f"autoscaled (min {service.scale_min}, max {service.scale_max or 'unlimited'})"
        if service.gateway:
            from knsd.service.gateway import max_inflight

            name += f", gateway ({max_inflight(service)} in flight)"
        scenarios = [Scenario(name, service, config)]
        if sweep:
            scenarios = sweep_scenarios(sweep, service, config)
        if rollout is not None:
            from knsd.simulate.scenarios import parse_rollout, with_rollout

            step = parse_rollout(rollout, workload.duration)
            rolled = [with_rollout(s, step) for s in scenarios]
            scenarios = rolled if sweep else scenarios + rolled
        results = [run(s, workload, service_dist, cold_dist, seed) for s in scenarios]
        if references and not sweep:
            refs = reference_scenarios(service, config, results[0].max_pods)
            scenarios += refs
            results += [run(s, workload, service_dist, cold_dist, seed) for s in refs]
        elapsed = time.perf_counter() - started
        rows = [report.summarize(s.name, r, gpu_price) for s, r in zip(scenarios, results, strict=True)]
        header = (f"knsd simulate: {workload.description}, {len(workload.arrivals)} requests; service time "
                  f"{service_dist.describe()}; cold start {cold_dist.describe()}; ${gpu_price:g}/GPU-hour; "
                  f"containerConcurrency {service.concurrency_limit}; seed {seed} ({elapsed:.1f}s of compute)")  # fmt: skip
        if output == "json":
            meta = {"workload": workload.description, "requests": len(workload.arrivals), "service_time": service_dist.describe(),
                    "cold_start": cold_dist.describe(), "gpu_price": gpu_price, "seed": seed, "compute_seconds": elapsed}  # fmt: skip
            sys.stdout.write(report.to_json(meta, rows, results) + "\n")
        else:
            sys.stdout.write(report.table(rows, header) + report.rollout_lines(rows, results))
        sys.stdout.flush()
        if plot is not None:
            report.plot(plot, rows, results, header.split(";")[0])
            typer.echo(f"plot written to {plot}", err=True)
