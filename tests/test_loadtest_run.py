"""The load tester against real local servers: counts, status and error distributions, modes, layout."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from knsd.loadtest.run import execute
from knsd.loadtest.spec import parse_args
from tests.local_helpers import knsd
from tests.servers import aiohttp_server, app

SERVER_APP = app()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with aiohttp_server(SERVER_APP) as url:
        yield url


def run(*argv: str):
    return execute(parse_args(list(argv)))


def test_counts_and_status_distribution(server: str) -> None:
    out = run("-n", "103", "-c", "10", server + "/ok")
    assert out.summary.count == 103  # the remainder is sent, not dropped
    assert out.summary.status_codes == {200: 103} and not out.summary.errors
    assert out.summary.size_total == 103 * 2
    failing = run("-n", "20", "-c", "4", server + "/status/503")
    assert failing.summary.status_codes == {503: 20} and failing.summary.successes == 20


def test_stall_past_timeout_is_an_error_not_a_hang(server: str) -> None:
    started = time.monotonic()
    out = run("-n", "4", "-c", "2", "-t", "1", server + "/stall?s=5")
    assert time.monotonic() - started < 4
    assert out.summary.successes == 0 and sum(out.summary.errors.values()) == 4
    [message] = out.summary.errors
    assert (
        message
        == f'Get "{server}/stall?s=5": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    )


def test_closed_connections_and_refused_connections(server: str) -> None:
    out = run("-n", "6", "-c", "2", server + "/close")
    assert out.summary.errors == {f'Get "{server}/close": EOF': 6}
    refused = run("-n", "3", "-c", "1", "http://127.0.0.1:1/")
    assert refused.summary.errors == {
        'Get "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused': 3
    }


def test_chunked_redirects_and_https_free_paths(server: str) -> None:
    chunked = run("-n", "5", "-c", "1", server + "/chunked")
    assert chunked.summary.status_codes == {200: 5}
    followed = run("-n", "4", "-c", "2", server + "/redirect")
    assert followed.summary.status_codes == {200: 4}
    kept = run("-n", "4", "-c", "2", "-disable-redirects", server + "/redirect")
    assert kept.summary.status_codes == {302: 4}


def test_method_body_headers_reach_the_server(server: str, tmp_path: Path) -> None:
    body = tmp_path / "b.json"
    body.write_text('{"prompt": "pretty dog"}')
    SERVER_APP["seen"].clear()
    out = run("-n", "2", "-c", "1", "-m", "POST", "-D", str(body), "-T", "application/json", "-H", "X-Test: yes",
              "-a", "u:pw", "-host", "sd.example", "-U", "tester", server + "/echo")  # fmt: skip
    assert out.summary.status_codes == {200: 2}
    seen = SERVER_APP["seen"]
    assert len(seen) == 2
    first = seen[0]
    assert first["method"] == "POST" and first["body"] == '{"prompt": "pretty dog"}'
    assert first["host"] == "sd.example"
    headers = {k.lower(): v for k, v in first["headers"].items()}
    assert headers["content-type"] == "application/json" and headers["x-test"] == "yes"
    assert headers["authorization"] == "Basic dTpwdw==" and headers["user-agent"] == "tester hey/0.0.1"


def test_duration_and_qps(server: str) -> None:
    started = time.monotonic()
    out = run("-z", "1s", "-c", "2", "-q", "10", server + "/ok")
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3
    assert 12 <= out.summary.count <= 24  # ~10 per second per worker for 1 s


def test_open_loop_rate_measures_from_the_schedule(server: str) -> None:
    out = run("--rate", "40", "-n", "20", "-c", "20", server + "/stall?s=0.2")
    assert out.summary.count == 20
    offsets = sorted(r.offset for r in out.run.results)
    assert offsets[-1] == pytest.approx(19 / 40, abs=0.05)  # sent on schedule despite 200 ms responses
    assert out.summary.fastest >= 0.19


def test_csv_and_json_outputs(cache: Path, server: str, tmp_path: Path) -> None:
    csv = knsd(cache, "loadtest", "-n", "4", "-c", "2", "-o", "csv", server + "/ok")
    rows = csv.stdout.strip().split("\n")
    assert csv.returncode == 0 and rows[0].startswith("response-time,DNS+dialup,DNS") and len(rows) == 5
    assert all(re.fullmatch(r"(\d+\.\d{4},){6}200,\d+\.\d{4}", row) for row in rows[1:])
    data = json.loads(knsd(cache, "loadtest", "-n", "10", "-c", "2", "-o", "json", server + "/ok").stdout)
    assert data["summary"]["requests"] == 10 and "p99.9" in data["latency_percentiles"]
    assert data["status_codes"] == {"200": 10}
    assert len(data["requests"]) == 10 and {r["status"] for r in data["requests"]} == {200}
    trace = tmp_path / "run.json"
    trace.write_text(json.dumps(data))
    simulated = knsd(cache, "simulate", "--trace", str(trace), "--no-references", "-o", "json")
    assert simulated.returncode == 0 and json.loads(simulated.stdout)["requests"] == 10


def _shape(report: str) -> list[str]:
    """A report's layout without its numbers."""
    return [re.sub(r"\d+(\.\d+)?", "N", re.sub(r"\|■*$", "|B", line)) for line in report.split("\n")]


@pytest.mark.skipif(shutil.which("hey") is None, reason="Debian's hey is not installed (.ci/run installs it)")
def test_report_layout_and_counts_match_hey(cache: Path, server: str) -> None:
    for path in ("/ok", "/status/500", "/close"):
        ours = knsd(cache, "loadtest", "-n", "40", "-c", "4", server + path)
        theirs = subprocess.run(
            ["hey", "-n", "40", "-c", "4", server + path], capture_output=True, text=True, timeout=60
        )
        assert ours.returncode == 0 and theirs.returncode == 0
        assert _shape(ours.stdout) == _shape(theirs.stdout), path
        counts = re.compile(r"^  \[(\d+)\]\t(\d+)", re.M)
        assert counts.findall(ours.stdout) == counts.findall(theirs.stdout), path


def test_progress_line_on_a_terminal_only(cache: Path, server: str) -> None:
    import os
    import pty
    import sys

    from tests.helpers import knsd_env

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "knsd", "loadtest", "-n", "300", "-c", "2", server + "/ok"],
                            env=knsd_env(cache), stdout=subprocess.PIPE, stderr=slave)  # fmt: skip
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0 and "300/300 requests, 0 errors" in terminal
    assert "Summary:" in out.decode() and "requests, 0 errors" not in out.decode()
    piped = knsd(cache, "loadtest", "-n", "300", "-c", "2", server + "/ok")
    assert "requests, 0 errors" not in piped.stderr  # nothing extra when not a TTY


def test_proxy_flag_sends_through_the_proxy(server: str) -> None:
    # The loopback server answers absolute-form requests like a forward proxy would; the target host does
    # not exist, so a 200 proves the request went through the proxy.
    address = server.removeprefix("http://")
    out = run("-n", "3", "-c", "1", "-x", address, "http://knsd-target.invalid/ok")
    assert out.summary.status_codes == {200: 3} and not out.summary.errors
