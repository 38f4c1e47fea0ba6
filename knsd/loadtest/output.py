"""Formatting a load test (pure): hey's summary and CSV byte for byte, JSON, and the scale-out section."""

from __future__ import annotations

import json
import math
from typing import Any

from knsd.loadtest.report import BAR_WIDTH, Summary
from knsd.loadtest.requester import RunResult
from knsd.loadtest.watch import ScaleReport

BAR = "■"


def _f4(x: float) -> str:
    """Go's %4.4f (NaN as Go prints it)."""
    return " NaN" if math.isnan(x) else f"{x:4.4f}"


def hey_text(s: Summary) -> str:
    """hey's default summary report, same sections, tabs and number formats."""
    out = ["", "Summary:"]
    out.append(f"  Total:\t{_f4(s.total)} secs")
    out.append(f"  Slowest:\t{_f4(s.slowest)} secs")
    out.append(f"  Fastest:\t{_f4(s.fastest)} secs")
    out.append(f"  Average:\t{_f4(s.average)} secs")
    out.append(f"  Requests/sec:\t{_f4(s.rps)}")
    out.append("  ")
    if s.size_total > 0:
        out.append(f"  Total data:\t{s.size_total} bytes")
        out.append(f"  Size/request:\t{s.size_per_request} bytes")
    out += ["", "Response time histogram:"]
    top = max((count for _, count in s.histogram), default=0)
    for mark, count in s.histogram:
        bar = BAR * ((count * BAR_WIDTH + top // 2) // top) if top else ""
        out.append(f"  {mark:4.3f} [{count}]\t|{bar}")
    out += ["", "", "Latency distribution:"]
    for pct, value in s.hey_percentiles:
        out.append(f"  {pct}% in {_f4(value)} secs")
    out += ["", "Details (average, fastest, slowest):"]
    for name, phase in s.details.items():
        out.append(
            f"  {name}:\t{_f4(phase.average)} secs, {_f4(phase.fastest)} secs, {_f4(phase.slowest)} secs"
        )
    text = "\n".join(out) + "\n\nStatus code distribution:"
    text += "".join(f"\n  [{code}]\t{count} responses" for code, count in s.status_codes.items())
    text += revision_lines(s) + first_byte_lines(s)
    if not s.errors:
        return text + "\n\n\n\n"
    text += "\n\nError distribution:"
    text += "".join(f"\n  [{count}]\t{message}" for message, count in s.errors.items())
    return text + "\n\n"


def revision_lines(s: Summary) -> str:
    """knsd's split by revision (from X-Knsd-Revision); nothing when no response carried the header."""
    if not s.revisions:
        return ""
    total = sum(sum(codes.values()) for codes in s.revisions.values())
    text = "\n\nRevision distribution:"
    for name, codes in s.revisions.items():
        n = sum(codes.values())
        by_code = ", ".join(f"[{code}] {count}" for code, count in codes.items())
        text += f"\n  {name}\t{n} responses ({100 * n / total:.1f}%): {by_code}"
    return text


FIRST_BYTE_PERCENTILES = (50.0, 90.0, 99.0)


def first_byte_lines(s: Summary) -> str:
    """knsd's time to first byte beside the total latency, when responses were streamed (server-sent
    events: the first byte is when the stream opened); nothing otherwise, so plain runs read as hey's."""
    if not s.streamed:
        return ""
    latency, first = dict(s.percentiles), dict(s.first_byte)
    text = f"\n\nTime to first byte ({s.streamed} streamed responses):"
    for p in FIRST_BYTE_PERCENTILES:
        text += f"\n  {p:g}%:\tfirst byte {_f4(first[p])} secs, complete {_f4(latency[p])} secs"
    return text


def hey_csv(run: RunResult) -> str:
    """hey's `-o csv`: one row per successful request, in completion order."""
    rows = ["response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"]
    for r in run.results:
        rows.append(
            f"{r.total:4.4f},{r.conn:4.4f},{r.dns:4.4f},{r.req:4.4f},{r.delay:4.4f},{r.res:4.4f},{r.status},{r.offset:4.4f}"
        )
    return "\n".join(rows) + "\n"


def scale_text(scale: ScaleReport) -> str:
    """The "Scale-out" section that follows hey's report."""
    out = ["Scale-out:"]
    out.append(f"  Pods ready:\t{scale.timeline_text()}")
    out.append(f"  Max ready pods:\t{scale.max_ready}")
    out.append(f"  Ready pods at start:\t{scale.ready_at_start}")
    if scale.cold_start is not None:
        out.append(f"  Cold start:\t{scale.cold_start:4.4f} secs (first response, starting from zero pods)")
    for pod in scale.new_pods():
        startup = f"{pod.startup:4.4f} secs" if pod.startup is not None else "not ready"
        out.append(f"  New pod {pod.name}:\tcreated -> ready {startup}")
    if scale.zero_after is not None:
        out.append(f"  Back to zero:\t{scale.zero_after:4.4f} secs after the load")
    for line in scale.failures:
        out.append(f"  FAILED:\t{line}")
    return "\n".join(out) + "\n"


def report_json(summary: Summary, run: RunResult, scale: ScaleReport | None) -> str:
    """Everything, for machines."""
    data: dict[str, Any] = {
        "summary": {
            "total": summary.total,
            "requests": summary.count,
            "successes": summary.successes,
            "errors": sum(summary.errors.values()),
            "slowest": summary.slowest,
            "fastest": summary.fastest,
            "average": None if math.isnan(summary.average) else summary.average,
            "rps": summary.rps,
            "size_total": summary.size_total,
            "size_per_request": summary.size_per_request,
        },
        "histogram": [{"mark": m, "count": c} for m, c in summary.histogram],
        "latency_percentiles": {f"p{p:g}": v for p, v in summary.percentiles},
        "first_byte_percentiles": {f"p{p:g}": v for p, v in summary.first_byte},
        "streamed": summary.streamed,
        "hey_latency_distribution": [{"percentage": p, "latency": v} for p, v in summary.hey_percentiles],
        "details": {
            k: {"average": v.average, "fastest": v.fastest, "slowest": v.slowest}
            for k, v in summary.details.items()
        },
        "status_codes": {str(k): v for k, v in summary.status_codes.items()},
        "errors": dict(summary.errors),
        "revisions": {
            name: {str(k): v for k, v in codes.items()} for name, codes in summary.revisions.items()
        },
        "first_response": run.first_response,
        "started": run.started,
        # Every successful request, in completion order: when it was sent (from the start), its latency, status.
        "requests": [
            {
                "offset": round(r.offset, 6),
                "latency": round(r.total, 6),
                "first_byte": round(r.first_byte, 6),
                "status": r.status,
            }
            for r in run.results
        ],
    }
    if scale is not None:
        data["scale_out"] = scale.to_json()
    return json.dumps(data, indent=2)
