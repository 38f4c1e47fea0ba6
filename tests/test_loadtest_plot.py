"""`knsd loadtest --plot`: the pod series (pure), the PNG of a watched run, and the real CLI writing one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from knsd.errors import UsageError
from knsd.loadtest.plot import plot_run, pod_series
from knsd.loadtest.requester import Result, RunResult
from knsd.loadtest.spec import parse_args
from knsd.loadtest.watch import PodRecord, ScaleReport
from tests.helpers import knsd_env
from tests.servers import aiohttp_server, app

T0 = 1_000_000.0  # wall clock of the watch's start


def _scale() -> ScaleReport:
    """0 pods, one created at 1 s and ready at 5 s, a second created at 6 s and ready at 9 s, both gone at 30 s."""
    scale = ScaleReport(started=T0, samples=[(0.0, 0), (5.0, 1), (9.0, 2), (30.0, 0)])
    scale.pods = {
        "a": PodRecord("a", T0 + 1, T0 + 5, T0 + 30),
        "b": PodRecord("b", T0 + 6, T0 + 9, T0 + 30),
    }
    scale.load_ended = T0 + 20
    return scale


def test_pod_series_ready_and_starting() -> None:
    times, ready, total = pod_series(_scale(), shift=0.0, end=40.0)
    at = dict(zip(times, zip(ready, total, strict=True), strict=True))
    assert at[0.0] == (0, 0)
    assert at[1.0] == (0, 1)  # pod a is starting
    assert at[5.0] == (1, 1) and at[6.0] == (1, 2) and at[9.0] == (2, 2)
    assert at[30.0] == (0, 0) and times[-1] == 40.0
    shifted, _, _ = pod_series(_scale(), shift=0.5, end=40.0)
    assert shifted[:3] == [-0.5, 0.5, 4.5]  # times count from the load's start, half a second later


def test_plot_of_a_watched_run(tmp_path: Path) -> None:
    results = [Result(i * 0.5, 0.3 + (3 if i < 4 else 0), 0, 0, 0, 0, 0, 200, 10) for i in range(40)]
    results.append(Result(12.0, 0.01, 0, 0, 0, 0, 0, 503, 10))
    run = RunResult(results=results, started=T0 + 0.5, total=20.0)
    path = tmp_path / "run.png"
    plot_run(path, run, _scale(), "knsd loadtest POST http://x/sdapi/v1/txt2img")
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > 1000 and image.size[1] > 800


def test_cli_writes_the_plot_and_checks_the_flag(tmp_path: Path) -> None:
    out = tmp_path / "ok.png"
    with aiohttp_server(app()) as base:
        done = subprocess.run(
            [sys.executable, "-m", "knsd", "loadtest", "-n", "20", "-c", "2", "--plot", str(out), base + "/ok"],
            env=knsd_env(tmp_path), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Status code distribution:\n  [200]\t20 responses" in done.stdout
    assert f"plot written to {out}" in done.stderr
    assert Image.open(out).format == "PNG"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("report.txt", "expected a .png, .svg or .pdf file name"), ("missing/dir/a.png", "does not exist")],
)
def test_bad_plot_path(name: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as info:
        parse_args(["--plot", name, "http://127.0.0.1:1/"])
    assert info.value.flag == "--plot"
