"""The generator page through the local route with two pods at containerConcurrency 1: the affinity cookie
brings its request to the pinned pod, and the bar moves from the events streamed on that one request (a
second request, such as a progress poll, would wait at the activator behind the generation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import RECORD_PROGRESS, launch, needs_browser, watch
from tests.local_helpers import live_pods, local_service, wait_until

pytestmark = [needs_browser, pytest.mark.slow, pytest.mark.timeout(900)]
FLAGS = ["--scale-min", "2", "--scale-max", "2", "--concurrency-limit", "1", "--affinity", "cookie",
         "--cookie-name", "sdpin"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as launched:
        yield launched


def test_the_page_follows_the_cookie_to_its_pod_and_streams_progress(cache: Path, browser: Any) -> None:
    with local_service(cache, "webpin", *FLAGS) as url:
        wait_until(lambda: sum(p["state"] == "ready" for p in live_pods(url)) == 2, 240, "2 ready pods")
        # The activator tries pods in the order they became ready ("first available"): pin the browser to
        # the second, where only the cookie sends requests.
        first, second = (p["name"] for p in sorted(live_pods(url), key=lambda p: p["ready_at"]))
        ctx = browser.new_context()
        ctx.add_cookies([{"name": "sdpin", "value": second, "url": url}])
        ctx.add_init_script(RECORD_PROGRESS)
        w = watch(ctx.new_page())
        page = w.page
        page.goto(url + "/", wait_until="networkidle")
        page.fill("#prompt", "a pretty dog")
        page.fill("#steps", "40")
        page.fill("#width", "256")
        page.fill("#height", "256")
        page.click("#generate")
        page.wait_for_function("window.__progressText.some(t => t.startsWith('Step '))", timeout=240_000)
        # A client without the cookie asks the other pod, which has nothing running.
        stranger = httpx.get(url + "/sdapi/v1/progress", timeout=30)
        assert stranger.headers["x-knsd-pod"] == first and stranger.json()["state"]["job_count"] == 0
        page.wait_for_selector("#gallery img", timeout=240_000)

        pods = {
            u.split("/sdapi/v1/")[-1].split("?")[0]: h["x-knsd-pod"]
            for u, _, h in w.responses
            if "/sdapi/v1/" in u
        }
        assert pods["txt2img"] == second
        assert "progress" not in pods  # no second request: the progress came on the stream
        seen = page.evaluate("window.__progress")
        assert len({v for v in seen if 0 < v < 100}) > 1, f"the bar never moved before the end: {seen}"
        assert w.errors == []
        ctx.close()
