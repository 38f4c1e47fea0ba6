"""Summaries of simulated runs, as a table, JSON and a plot (the plot is the only part with I/O)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knsd.simulate.result import SimResult


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    p50: float
    p95: float
    p99: float
    cold_share: float
    max_pods: int
    gpu_hours: float
    cost: float
    cost_per_day: float
    errors: int
    requests: int
    max_queue: int | None = None  # jobs waiting at the gateway at most (None: no gateway)


def summarize(name: str, result: SimResult, price: float) -> Row:
    ok = len(result.latencies)
    days = max(result.end, 1e-9) / 86400
    return Row(
        name=name,
        p50=percentile(result.latencies, 50),
        p95=percentile(result.latencies, 95),
        p99=percentile(result.latencies, 99),
        cold_share=result.cold / ok if ok else 0.0,
        max_pods=result.max_pods,
        gpu_hours=result.gpu_hours,
        cost=result.gpu_hours * price,
        cost_per_day=result.gpu_hours * price / days,
        errors=result.requests - ok,
        requests=result.requests,
        max_queue=result.max_queue if result.gateway is not None else None,
    )


def _secs(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}s"


def table(rows: list[Row], header: str) -> str:
    """A text table, one scenario a row."""
    width = max(len("scenario"), *(len(r.name) for r in rows))
    gateway = any(r.max_queue is not None for r in rows)
    lines = [header, ""]
    lines.append(f"{'scenario':<{width}}  {'p50':>8} {'p95':>8} {'p99':>8} {'cold':>6} {'max pods':>8} "
                 f"{'GPU-hours':>10} {'cost':>10} {'$/day':>9} {'errors':>6}"
                 + (f" {'max queue':>9}" if gateway else ""))  # fmt: skip
    for r in rows:
        lines.append(
            f"{r.name:<{width}}  {_secs(r.p50):>8} {_secs(r.p95):>8} {_secs(r.p99):>8} {r.cold_share:>6.1%} "
            f"{r.max_pods:>8} {r.gpu_hours:>10.2f} {'$' + format(r.cost, '.2f'):>10} "
            f"{'$' + format(r.cost_per_day, '.2f'):>9} {r.errors:>6}"
            + (f" {'-' if r.max_queue is None else r.max_queue:>9}" if gateway else "")
        )
    return "\n".join(lines) + "\n"


def rollout_lines(rows: list[Row], results: list[SimResult]) -> str:
    """The steps of each simulated rollout and the requests each revision served."""
    out = []
    for row, result in zip(rows, results, strict=True):
        if not result.events:
            continue
        out += ["", f"Rollout ({row.name}):"]
        out += [f"  {t:9.1f}s  {what}" for t, what in result.events]
        served = ", ".join(f"{name} {n}" for name, n in result.by_revision.items())
        out.append(f"  requests served: {served}")
    return "\n".join(out) + ("\n" if out else "")


def to_json(header: dict[str, Any], rows: list[Row], results: list[SimResult]) -> str:
    scenarios = []
    for row, result in zip(rows, results, strict=True):
        scenarios.append(
            {
                "name": row.name,
                "requests": row.requests,
                "statuses": {str(k): v for k, v in result.statuses.items()},
                "latency": {"p50": row.p50, "p95": row.p95, "p99": row.p99,
                            "mean": sum(result.latencies) / len(result.latencies) if result.latencies else None},
                "cold_start_share": row.cold_share,
                "max_pods": row.max_pods,
                "pods_created": len(result.pods),
                "gpu_hours": row.gpu_hours,
                "cost": row.cost,
                "cost_per_day": row.cost_per_day,
                "scaled_to_zero_at": result.zero_at,
                "rollout": [{"t": t, "event": what} for t, what in result.events],
                "requests_by_revision": result.by_revision,
                "simulated_seconds": result.end,
                "gateway": None if result.gateway is None else {"max_inflight": result.gateway,
                                                                "max_queue": result.max_queue},
            }
        )  # fmt: skip
    return json.dumps({**header, "scenarios": scenarios}, indent=2, default=lambda x: None)


def plot(path: Path, rows: list[Row], results: list[SimResult], title: str) -> None:
    """Pods and queue over time for the first scenario; latency CDFs for all."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), constrained_layout=True)
    first = results[0]
    step = max(1, len(first.samples) // 4000)
    samples = first.samples[::step]
    hours = first.end > 7200
    scale = 3600 if hours else 1
    t = [s[0] / scale for s in samples]
    top.step(t, [s[1] for s in samples], where="post", label="ready pods", color="tab:green")
    top.step(
        t,
        [s[1] + s[2] for s in samples],
        where="post",
        label="ready + starting pods",
        color="tab:olive",
        alpha=0.7,
    )
    top.step(
        t, [s[3] for s in samples], where="post", label="desired", color="tab:gray", linestyle="--", alpha=0.7
    )
    queue = top.twinx()
    queue.fill_between(
        t, [s[4] for s in samples], step="post", color="tab:red", alpha=0.25, label="buffered requests"
    )
    if first.gateway is not None:
        waiting = first.queue[::step]
        queue.step([w[0] / scale for w in waiting], [w[1] for w in waiting], where="post", color="tab:purple",
                   label="queued at the gateway")  # fmt: skip
        queue.legend(loc="upper right")
    queue.set_ylabel("buffered / queued requests")
    top.set_xlabel("hours" if hours else "seconds")
    top.set_ylabel("pods")
    top.set_title(f"{rows[0].name}: pods and queue over time")
    top.legend(loc="upper left")
    for row, result in zip(rows, results, strict=True):
        lat = result.latencies
        if lat:
            step = max(1, len(lat) // 2000)
            xs = lat[::step]
            bottom.plot(xs, [(i * step + 1) / len(lat) for i in range(len(xs))], label=row.name)
    bottom.set_xscale("log")
    bottom.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    bottom.set_xlabel("latency (s, log scale)")
    bottom.set_ylabel("share of requests")
    bottom.set_title("latency CDF")
    bottom.grid(True, alpha=0.3)
    bottom.legend(loc="lower right")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
