"""hey's numbers and layout, computed purely from results."""

from __future__ import annotations

import math

import pytest

from knsd.loadtest.output import hey_csv, hey_text
from knsd.loadtest.report import exact_percentiles, hey_percentiles, histogram, summarize
from knsd.loadtest.requester import Result, RunResult


def _result(total: float, status: int = 200, size: int = 10) -> Result:
    return Result(0.0, total, 0.001, 0.0, 0.0, total - 0.001, 0.0, status, size)


def test_hey_percentiles_small_n_leave_zero_lines() -> None:
    lats = [i / 10 for i in range(1, 11)]  # N=10
    assert hey_percentiles(lats) == (
        (10, 0.2),
        (25, 0.4),
        (50, 0.6),
        (75, 0.9),
        (90, 1.0),
        (0, 0.0),
        (0, 0.0),
    )


def test_hey_percentiles_are_one_rank_high() -> None:
    lats = [float(i) for i in range(1, 201)]  # N=200: hey's p50 is the 101st value
    assert dict(hey_percentiles(lats))[50] == 101.0
    exact = dict(exact_percentiles(lats))
    assert exact[50.0] == 100.0 and exact[99.9] == 200.0 and exact[99.0] == 198.0


def test_histogram_first_bucket_holds_only_the_fastest() -> None:
    lats = sorted([0.1, 0.2, 0.2, 0.5, 1.1])
    marks = histogram(lats)
    assert len(marks) == 11
    assert marks[0] == (0.1, 1) and marks[-1] == (1.1, 1)
    assert sum(c for _, c in marks) == 5
    assert histogram([0.3, 0.3])[0] == (0.3, 2)


def test_summary_counts_errors_in_rps_not_latency() -> None:
    s = summarize([_result(0.1), _result(0.3, 500)], {'Get "x": EOF': 2}, total=2.0)
    assert (s.count, s.successes, s.rps) == (4, 2, 2.0)
    assert s.average == 0.2 and s.status_codes == {200: 1, 500: 1}
    assert s.size_total == 20 and s.size_per_request == 10


def test_text_layout_is_heys() -> None:
    s = summarize([_result(0.1), _result(0.3)], {'Get "http://h/": EOF': 1}, total=1.5)
    text = hey_text(s)
    lines = text.split("\n")
    assert lines[:9] == [
        "",
        "Summary:",
        "  Total:\t1.5000 secs",
        "  Slowest:\t0.3000 secs",
        "  Fastest:\t0.1000 secs",
        "  Average:\t0.2000 secs",
        "  Requests/sec:\t2.0000",
        "  ",
        "  Total data:\t20 bytes",
    ]
    assert "Response time histogram:\n  0.100 [1]\t|" + "■" * 40 + "\n" in text
    assert "  0.300 [1]\t|" + "■" * 40 + "\n\n\nLatency distribution:\n  10% in 0.3000 secs" in text
    assert (
        "Details (average, fastest, slowest):\n  DNS+dialup:\t0.0010 secs, 0.0010 secs, 0.0010 secs\n" in text
    )
    assert text.endswith(
        'Status code distribution:\n  [200]\t2 responses\n\nError distribution:\n  [1]\tGet "http://h/": EOF\n\n'
    )
    clean = hey_text(summarize([_result(0.1)], {}, total=1.0))
    assert clean.endswith("Status code distribution:\n  [200]\t1 responses\n\n\n\n")


def test_all_failed_prints_nan_average() -> None:
    s = summarize([], {"boom": 3}, total=1.0)
    assert math.isnan(s.average)
    text = hey_text(s)
    assert "  Average:\t NaN secs" in text and "  resp wait:\t NaN secs, 0.0000 secs, 0.0000 secs" in text
    assert "Status code distribution:\n\nError distribution:\n  [3]\tboom\n\n" in text


def test_csv() -> None:
    run = RunResult(results=[Result(0.5, 0.25, 0.01, 0.0, 0.0, 0.2, 0.04, 201, 0)])
    assert hey_csv(run) == (
        "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"
        "0.2500,0.0100,0.0000,0.0000,0.2000,0.0400,201,0.5000\n"
    )


def test_time_to_first_byte_beside_latency_for_streamed_responses() -> None:
    """A stream's first byte comes when it opens, its end when the image is done: both are reported."""
    streamed = [
        Result(0.0, t, 0.001, 0.0, 0.0, 0.01, t - 0.011, 200, 0, streamed=True) for t in (1.0, 2.0, 3.0)
    ]
    s = summarize(streamed, {}, total=3.0)
    assert dict(s.first_byte)[50.0] == pytest.approx(0.011) and dict(s.percentiles)[50.0] == 2.0
    assert s.streamed == 3
    assert (
        "\n\nTime to first byte (3 streamed responses):\n  50%:\tfirst byte 0.0110 secs, complete 2.0000 secs\n"
        in hey_text(s)
    )
    plain = hey_text(summarize([_result(0.1)], {}, total=1.0))
    assert "first byte" not in plain  # plain runs keep hey's layout
