"""The report of `knsd loadtest --async` (pure): what became of the jobs, their latency, and the losses."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from knsd.loadtest.jobs import JobRun
from knsd.loadtest.report import exact_percentiles


@dataclass(frozen=True, slots=True)
class JobSummary:
    submitted: int
    accepted: int  # 202
    refused: dict[str, int]  # submission status (or error) -> count, for what was not accepted
    outcomes: dict[str, int]  # succeeded / failed / cancelled
    lost: int
    lost_reasons: dict[str, int]
    cache_hits: int
    attempts: dict[int, int]  # attempts -> jobs
    latency: tuple[tuple[float, float], ...]  # client: sent -> seen final (succeeded jobs)
    server_latency: tuple[tuple[float, float], ...]  # the gateway's created -> finished (succeeded jobs)
    submit_latency: tuple[tuple[float, float], ...]
    total: float
    jobs_per_second: float


def summarize_jobs(run: JobRun) -> JobSummary:
    jobs = run.jobs
    accepted = [j for j in jobs if j.submit_status == 202]
    refused = Counter(str(j.submit_status) if j.submit_status is not None else (j.error or "error") for j in jobs
                      if j.submit_status != 202)  # fmt: skip
    done = [j for j in accepted if j.status is not None]
    succeeded = [j for j in done if j.status == "succeeded"]
    lost = [j for j in accepted if j.status is None]
    return JobSummary(
        submitted=len(jobs),
        accepted=len(accepted),
        refused=dict(refused),
        outcomes=dict(Counter(j.status for j in done if j.status)),
        lost=len(lost),
        lost_reasons=dict(Counter(j.lost or "unknown" for j in lost)),
        cache_hits=sum(j.cache_hit for j in accepted),
        attempts=dict(sorted(Counter(j.attempts for j in done if j.attempts is not None).items())),
        latency=exact_percentiles(sorted(j.done_at - j.sent for j in succeeded if j.done_at is not None)),
        server_latency=exact_percentiles(
            sorted(j.server_seconds for j in succeeded if j.server_seconds is not None)
        ),
        submit_latency=exact_percentiles(
            sorted(j.submit_seconds for j in jobs if j.submit_status is not None)
        ),
        total=run.total,
        jobs_per_second=len(succeeded) / run.total if run.total > 0 else 0.0,
    )


def _percentiles(values: tuple[tuple[float, float], ...]) -> str:
    shown = [(p, v) for p, v in values if p in (50.0, 90.0, 95.0, 99.0)]
    return "  ".join(f"p{p:g} {v:.4f}s" for p, v in shown) if shown else "-"


def jobs_text(s: JobSummary) -> str:
    lines = [
        "Async jobs (Prefer: respond-async, each 202's Location polled until final):",
        f"  Submitted:\t{s.submitted}",
        f"  Accepted (202):\t{s.accepted}",
    ]
    if s.refused:
        lines.append("  Not accepted:\t" + ", ".join(f"[{k}] {v}" for k, v in sorted(s.refused.items())))
    for status in ("succeeded", "failed", "cancelled"):
        lines.append(f"  {status.capitalize()}:\t{s.outcomes.get(status, 0)}")
    lines.append(f"  Lost:\t{s.lost}")
    lines += [f"    {count} {reason}" for reason, count in sorted(s.lost_reasons.items())]
    lines.append(f"  Cache hits:\t{s.cache_hits}")
    lines.append("  Attempts:\t" + (", ".join(f"{a}: {n}" for a, n in s.attempts.items()) or "-"))
    lines += [
        "",
        "Job latency (succeeded jobs):",
        f"  Submit to final, seen by polling:\t{_percentiles(s.latency)}",
        f"  Queued to finished, the gateway's clock:\t{_percentiles(s.server_latency)}",
        f"  Submission (the 202):\t{_percentiles(s.submit_latency)}",
        f"  Total:\t{s.total:.4f} secs, {s.jobs_per_second:.4f} jobs/sec",
    ]
    return "\n".join(lines) + "\n"


def jobs_json(s: JobSummary, run: JobRun) -> str:
    data: dict[str, Any] = {
        "submitted": s.submitted,
        "accepted": s.accepted,
        "not_accepted": s.refused,
        "outcomes": s.outcomes,
        "lost": s.lost,
        "lost_reasons": s.lost_reasons,
        "cache_hits": s.cache_hits,
        "attempts": {str(k): v for k, v in s.attempts.items()},
        "latency_percentiles": {f"p{p:g}": v for p, v in s.latency},
        "server_latency_percentiles": {f"p{p:g}": v for p, v in s.server_latency},
        "submit_latency_percentiles": {f"p{p:g}": v for p, v in s.submit_latency},
        "total": s.total,
        "jobs_per_second": s.jobs_per_second,
        "started": run.started,
        "jobs": [
            {
                "id": j.job_id,
                "sent": round(j.sent, 6),
                "submit_status": j.submit_status,
                "status": j.status,
                "lost": j.lost,
                "attempts": j.attempts,
                "server_seconds": j.server_seconds,
                "cache_hit": j.cache_hit,
            }
            for j in run.jobs
        ],  # fmt: skip
    }
    return json.dumps(data, indent=2)
