"""`knsd loadtest --plot FILE.png`: ready pods, latency over time and the latency histogram of one run.

The series are pure functions of the run; only `plot_run` touches matplotlib (Agg, no display needed).
"""

from __future__ import annotations

from pathlib import Path

from knsd.loadtest.requester import RunResult
from knsd.loadtest.watch import ScaleReport


def pod_series(scale: ScaleReport, shift: float, end: float) -> tuple[list[float], list[int], list[int]]:
    """Times (seconds from the load's start), ready pods, and ready + starting pods: steps up to `end`.

    `shift` is how long after watching began the load started (ScaleReport counts from the former).
    """
    changes = [(t - shift, ready) for t, ready in scale.samples]
    created = [p.created - scale.started - shift for p in scale.pods.values()]
    times = sorted({t for t, _ in changes} | {t for t in created if t <= end})
    times = [t for t in times if t <= end] + [end]
    ready: list[int] = []
    for t in times:
        ready.append(next((n for at, n in reversed(changes) if at <= t), changes[0][1] if changes else 0))
    total: list[int] = []
    for t, n in zip(times, ready, strict=True):
        wall = scale.started + shift + t
        starting = sum(
            1
            for p in scale.pods.values()
            if p.created <= wall
            and (p.ready_at is None or wall < p.ready_at)
            and (p.gone_at is None or wall < p.gone_at)
        )
        total.append(n + starting)
    return times, ready, total


def plot_run(path: Path, run: RunResult, scale: ScaleReport | None, title: str) -> None:
    """Write a PNG: ready pods over time (when watched), latency over time, latency histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(figsize=(11, 8.5), constrained_layout=True)
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1.2, 1])
    pods_ax = fig.add_subplot(grid[0, :])
    latency_ax = fig.add_subplot(grid[1, :], sharex=pods_ax)
    hist_ax = fig.add_subplot(grid[2, 0])
    codes_ax = fig.add_subplot(grid[2, 1])

    ok = [r for r in run.results if 200 <= r.status < 400]
    bad = [r for r in run.results if not 200 <= r.status < 400]
    end = max([run.total, *(r.offset + r.total for r in run.results)], default=1.0)

    if scale is not None:
        # ScaleReport's times count from when watching began, just before the load started.
        shift = run.started - scale.started
        if scale.load_ended is not None:
            end = max(end, scale.load_ended - run.started)
        if scale.samples:
            end = max(end, scale.samples[-1][0] - shift)
        times, ready, with_starting = pod_series(scale, shift, end)
        pods_ax.fill_between(times, ready, with_starting, step="post", color="tab:orange", alpha=0.25,
                             label="starting")  # fmt: skip
        pods_ax.step(times, ready, where="post", color="tab:green", linewidth=2.2, label="ready pods")
        pods_ax.set_ylim(0, max(with_starting + [1]) + 0.5)
        pods_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        pods_ax.legend(loc="upper right")
        if scale.load_ended is not None:
            for ax in (pods_ax, latency_ax):
                ax.axvline(run.total, color="gray", linestyle=":", linewidth=1)
            pods_ax.annotate("load ends", (run.total, 0.2), xytext=(4, 0), textcoords="offset points",
                             color="gray", fontsize=8)  # fmt: skip
    else:
        pods_ax.text(0.5, 0.5, "pods not watched (use --local or --service NAME)", ha="center",
                     va="center", transform=pods_ax.transAxes, color="gray")  # fmt: skip
    pods_ax.set_ylabel("pods")
    pods_ax.set_title("pods over time")
    pods_ax.grid(True, alpha=0.3)

    latency_ax.scatter([r.offset for r in ok], [r.total for r in ok], s=9, color="tab:blue", alpha=0.7,
                       label=f"{len(ok)} responses 2xx/3xx")  # fmt: skip
    if bad:
        latency_ax.scatter([r.offset for r in bad], [r.total for r in bad], s=14, color="tab:red", marker="x",
                           label=f"{len(bad)} responses 4xx/5xx")  # fmt: skip
    latency_ax.set_xlim(0, end * 1.02)
    latency_ax.set_xlabel("seconds since the load started (request sent)")
    latency_ax.set_ylabel("latency (s)")
    latency_ax.set_title("latency over time")
    latency_ax.grid(True, alpha=0.3)
    if run.results:
        latency_ax.legend(loc="upper right")

    latencies = [r.total for r in run.results]
    if latencies:
        hist_ax.hist(latencies, bins=min(40, max(5, len(latencies) // 3)), color="tab:blue", alpha=0.8)
        ordered = sorted(latencies)
        for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
            value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            hist_ax.axvline(
                value, color="black", linestyle=style, linewidth=1, label=f"p{int(q * 100)} {value:.2f}s"
            )
        hist_ax.legend(loc="upper right", fontsize=8)
    hist_ax.set_xlabel("latency (s)")
    hist_ax.set_ylabel("requests")
    hist_ax.set_title("latency histogram")

    codes: dict[str, int] = {}
    for r in run.results:
        codes[str(r.status)] = codes.get(str(r.status), 0) + 1
    if run.errors:
        codes["error"] = sum(run.errors.values())
    names = sorted(codes)
    colors = ["tab:green" if n.startswith(("2", "3")) else "tab:red" for n in names]
    codes_ax.bar(names, [codes[n] for n in names], color=colors)
    codes_ax.set_title("responses by status")
    codes_ax.set_ylabel("requests")

    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
