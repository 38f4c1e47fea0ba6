"""`knsd loadtest --async`: jobs submitted through a real gateway, followed to the end, latency and losses
reported (a lost job exits 1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_helpers import SMALL, Redis, gateway, module_redis, module_upstream, prefix
from tests.local_helpers import knsd

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    yield from module_redis(tmp_path_factory)


@pytest.fixture(scope="module")
def upstream(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from module_upstream(cache, tmp_path_factory)


def _load(cache: Path, url: str, *flags: str) -> tuple[int, str, str]:
    body = json.dumps(SMALL)
    out = knsd(cache, "loadtest", "--async", "-n", "6", "-c", "3", "-T", "application/json", "-d", body, *flags,
               url + "/sdapi/v1/txt2img")  # fmt: skip
    return out.returncode, out.stdout, out.stderr


def test_every_job_is_followed_to_its_end(cache: Path, redis: Redis, upstream: str, tmp_path: Path) -> None:
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", "--redis-prefix", prefix()) as gw:
        code, text, err = _load(cache, gw.url)
        code_json, raw, _ = _load(cache, gw.url, "-o", "json")
    assert code == 0, err
    for line in ("  Submitted:\t6", "  Accepted (202):\t6", "  Succeeded:\t6", "  Failed:\t0", "  Lost:\t0"):
        assert line in text.splitlines(), text
    assert "Queued to finished, the gateway's clock:\tp50 " in text
    report = json.loads(raw)
    assert code_json == 0 and report["outcomes"] == {"succeeded": 6} and report["lost"] == 0
    assert len(report["jobs"]) == 6 and all(
        j["attempts"] == 1 and j["server_seconds"] > 0 for j in report["jobs"]
    )
    assert report["server_latency_percentiles"]["p50"] > 0


def test_lost_jobs_are_reported_and_exit_1(cache: Path, redis: Redis, upstream: str, tmp_path: Path) -> None:
    # Results kept for a millisecond: the gateway forgets each job as soon as it is done.
    flags = ("--redis-prefix", prefix(), "--result-ttl", "0.001")
    with gateway(cache, upstream, redis.url, tmp_path / "gw.log", *flags) as gw:
        code, text, err = _load(cache, gw.url)
    assert code == 1 and "6 accepted job(s) lost" in err
    assert "  Lost:\t6" in text.splitlines() and "6 not found (the gateway forgot an accepted job)" in text


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--async", "-x", "proxy:3128"], "-x"),
        (["--async", "--local"], "-local"),
        (["--poll", "1"], "--poll"),
        (["--async", "-m", "GET"], "--async"),
    ],  # fmt: skip
)
def test_flags_that_mean_nothing_for_jobs_are_refused(cache: Path, flags: list[str], flag: str) -> None:
    out = knsd(cache, "loadtest", *flags, "http://127.0.0.1:9/sdapi/v1/txt2img")
    assert out.returncode == 2 and f"error: {flag}" in out.stderr
