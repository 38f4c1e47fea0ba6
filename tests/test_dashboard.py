"""The local runtime's dashboard: its samples (pure), and the page in a real Chromium while a load runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from knsd.local.dashboard import Totals, sample, totals
from tests.browser import launch, needs_browser, screenshot_dir, watch
from tests.local_helpers import Load, live_pods, local_service, status, wait_until

SMALL = {"prompt": "x", "width": 64, "height": 64, "steps": 8}


def _status(pods: list[str], desired: int, buffered: int = 0) -> dict[str, Any]:
    current = {
        "desired_scale": desired,
        "stable_concurrency": 1.5,
        "panic_concurrency": 2.25,
        "panic": True,
        "buffered": buffered,
        "inflight": 2,
        "pods": [{"name": f"p{i}", "state": s} for i, s in enumerate(pods)],
    }
    return {"now": 100.0, "current": current, "revisions": [current]}


def test_sample_counts_pods_by_state_and_rates() -> None:
    s = sample(
        _status(["ready", "ready", "pending", "terminating"], desired=3, buffered=4),
        Totals(requests=30, latency_sum=12.0, latency_count=30),
        Totals(requests=20, latency_sum=7.0, latency_count=20),
        seconds=2.0,
    )
    assert (s.ready, s.pending, s.terminating, s.desired) == (2, 1, 1, 3)
    assert (s.stable_concurrency, s.panic_concurrency, s.panic) == (1.5, 2.25, True)
    assert (s.buffered, s.inflight) == (4, 2)
    assert s.rps == 5.0 and s.latency == 0.5  # 10 requests in 2 s, 5 s of latency among them
    idle = sample(_status([], desired=0), Totals(), Totals(), seconds=1.0)
    assert (idle.ready, idle.rps, idle.latency) == (0, 0.0, None)  # no request finished: no latency


def test_totals_reads_the_runtime_registry() -> None:
    registry = CollectorRegistry()
    requests = Counter("knsd_runtime_requests_total", "", ["code"], registry=registry)
    latency = Histogram("knsd_runtime_request_duration_seconds", "", registry=registry)
    requests.labels("200").inc(3)
    requests.labels("503").inc(1)
    for seconds in (0.5, 1.5):
        latency.observe(seconds)
    assert totals(registry) == Totals(requests=4, latency_sum=2.0, latency_count=2)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as launched:
        yield launched


@needs_browser
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dashboard_lists_pods_while_a_load_runs(cache: Path, browser: Any, tmp_path: Path) -> None:
    with local_service(cache, "dash", "--scale-max", "2", "--scale-window", "6s") as url:
        w = watch(browser.new_page(viewport={"width": 1360, "height": 1000}))
        page = w.page
        page.goto(url + "/.knsd/", wait_until="domcontentloaded")
        page.wait_for_selector("#live[data-live='true']")
        assert page.locator("#service").text_content() == "dash"
        with Load(url, clients=3, body=SMALL) as load:
            wait_until(lambda: sum(p["state"] == "ready" for p in live_pods(url)) == 2, 240, "2 ready pods")
            # Live: the page shows both pods without a reload, one row per pod name.
            page.wait_for_function(
                "document.querySelectorAll('#pods tr[data-state=ready]').length === 2", timeout=30_000
            )
            names = {p["name"] for p in live_pods(url)}
            rows = page.eval_on_selector_all("#pods tr", "rows => rows.map(r => r.dataset.pod)")
            assert names <= set(rows)
            page.wait_for_function("Number(document.getElementById('stat-rps').textContent) > 0")
            page.wait_for_timeout(3000)  # a few more seconds of history on the charts
            page.screenshot(path=str(screenshot_dir(tmp_path) / "dashboard.png"))
        assert load.results and {code for code, _ in load.results} == {200}
        # The scale chart drew the ready line, and the history it reads shows the scale-out.
        assert page.locator("#scale-chart path").count() >= 3
        history = httpx.get(url + "/.knsd/history?since=0", timeout=10).json()["samples"]
        assert max(s["ready"] for s in history) == 2 and max(s["desired"] for s in history) == 2
        assert any(s["rps"] > 0 for s in history) and any(s["latency"] for s in history)
        assert status(url)["name"] == "dash"
        bad = httpx.get(url + "/.knsd/history?since=soon", timeout=10)
        assert bad.status_code == 422 and bad.json()["field"] == "since"
        assert w.errors == []
        assert w.outside(url) == []
        page.close()
