"""Streams through the local route (`knsd deploy --local`), containerConcurrency 1 and one pod: the events
pass the activator as they happen, so a client sees its job move with no second request (which would wait
behind the job at containerConcurrency 1), and the OpenAI client gets its partial images."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.browser import RECORD_PROGRESS, launch, needs_browser, screenshot_dir, watch
from tests.local_helpers import knsd, live_pods, local_service, wait_until
from tests.streams import events, leave_after, steps_run, stream_txt2img

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
FLAGS = ["--concurrency-limit", "1", "--scale-min", "1", "--scale-max", "1"]


@pytest.fixture(scope="module")
def route(cache: Path) -> Iterator[tuple[str, str]]:
    """The route's URL and its one pod's own URL (to ask the pod directly, past the busy route)."""
    with local_service(cache, "streams", *FLAGS) as url:
        wait_until(lambda: [p["state"] for p in live_pods(url)] == ["ready"], 240, "one ready pod")
        yield url, live_pods(url)[0]["url"]


def test_first_progress_event_arrives_long_before_the_last_step(route: tuple[str, str]) -> None:
    """When the first progress event reaches the client through the route, the pod is still generating:
    asked directly, it is at a step well before the last one (step counts, not wall-clock time)."""
    url, pod = route
    steps = 40
    body = {"prompt": "a lighthouse", "steps": steps, "width": 128, "height": 128}
    with httpx.Client() as client, stream_txt2img(client, url, body) as response:
        assert response.status_code == 200 and response.headers["x-knsd-pod"]
        got = events(response)
        first = next(e for e in got if e.name == "progress")
        running = client.get(pod + "/sdapi/v1/progress", timeout=30).json()["state"]
        rest = list(got)
    assert first.data["state"]["sampling_steps"] == steps
    assert running["job_count"] == 1 and running["sampling_step"] < steps // 2, running
    later = [e.data["state"]["sampling_step"] for e in rest if e.name == "progress"]
    assert len(set(later)) > 1 and max(later) > running["sampling_step"]
    assert rest[-1].name == "result" and len(rest[-1].data["images"]) == 1


@needs_browser
def test_page_progress_and_preview_move_through_the_route(route: tuple[str, str], tmp_path: Path) -> None:
    """The page asks for its image as a stream: its bar and preview move with the job, through the route
    at containerConcurrency 1, and it sends no second request while it waits."""
    url, _ = route
    with launch() as browser:
        ctx = browser.new_context(viewport={"width": 1360, "height": 900})
        ctx.add_init_script(RECORD_PROGRESS)
        w = watch(ctx.new_page())
        page = w.page
        page.goto(url + "/", wait_until="networkidle")
        page.evaluate("localStorage.clear()")
        page.fill("#prompt", "a pretty dog")
        page.fill("#steps", "40")
        page.fill("#width", "128")
        page.fill("#height", "128")
        before = len(w.requests)
        page.click("#generate")
        page.wait_for_selector("#preview-panel:not([hidden])", timeout=240_000)
        page.screenshot(path=str(screenshot_dir(tmp_path) / "route-preview.png"))
        page.wait_for_selector("#gallery img", timeout=240_000)
        page.screenshot(path=str(screenshot_dir(tmp_path) / "route-done.png"))
        seen = page.evaluate("window.__progress")
        texts = page.evaluate("window.__progressText")
        during = w.requests[before:]
        assert len({v for v in seen if 0 < v < 100}) > 1, f"the bar did not move: {seen}"
        assert any(t.startswith("Step ") and "/ 40" in t for t in texts), texts
        assert page.evaluate("document.getElementById('preview').naturalWidth") > 0
        assert [u for u in during if "/sdapi/" in u] == [url + "/sdapi/v1/txt2img"], during
        assert w.errors == [] and w.outside(url) == []
        ctx.close()


@needs_browser
def test_page_interrupt_ends_the_request_and_frees_the_pod(route: tuple[str, str]) -> None:
    """Interrupt on the page closes its stream: through the route the pod stops the job at its next step
    (a POST /sdapi/v1/interrupt would wait behind the job at containerConcurrency 1)."""
    url, pod = route
    with launch() as browser:
        ctx = browser.new_context()
        ctx.add_init_script(RECORD_PROGRESS)
        w = watch(ctx.new_page())
        page = w.page
        page.goto(url + "/", wait_until="networkidle")
        page.evaluate("localStorage.clear()")
        for field, value in (
            ("#prompt", "a long walk"),
            ("#steps", "150"),
            ("#width", "128"),
            ("#height", "128"),
        ):
            page.fill(field, value)
        before = steps_run(pod)
        page.click("#generate")
        page.wait_for_function(
            r"window.__progressText.some(t => /^Step ([3-9]|\d\d+) /.test(t))", timeout=240_000
        )
        page.click("#interrupt")
        page.wait_for_function("document.getElementById('progress-text').textContent === 'Interrupted'")
        after = httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "next", "steps": 2, "width": 64, "height": 64},
                           timeout=300)  # fmt: skip
        assert after.status_code == 200
        assert steps_run(pod) - 2 - before < 150  # the job stopped long before its end
        assert not [u for u in w.requests if u.endswith("/sdapi/v1/interrupt")]
        assert [e for e in w.errors if "aborted" not in e.lower()] == []
        ctx.close()


def test_openai_client_through_the_route(route: tuple[str, str]) -> None:
    url, _ = route
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    got = list(client.images.generate(prompt="a cat", size="64x64", stream=True, partial_images=2,
                                      extra_body={"steps": 12}))  # fmt: skip
    assert [e.type for e in got] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in got[:2]] == [0, 1]


def test_loadtest_reports_first_byte_of_streams(cache: Path, route: tuple[str, str]) -> None:
    url, _ = route
    body = json.dumps({"prompt": "x", "steps": 8, "width": 64, "height": 64})
    args = [
        "loadtest",
        "-n",
        "2",
        "-c",
        "1",
        "-m",
        "POST",
        "-H",
        "Accept: text/event-stream",
        "-T",
        "application/json",
        "-d",
        body,
    ]
    text = knsd(cache, *args, url + "/sdapi/v1/txt2img")
    assert text.returncode == 0, text.stderr
    assert re.search(
        r"Time to first byte \(2 streamed responses\):\n  50%:\tfirst byte \S+ secs", text.stdout
    )
    data = json.loads(knsd(cache, *args, "-o", "json", url + "/sdapi/v1/txt2img").stdout)
    assert data["streamed"] == 2
    assert all(r["first_byte"] < r["latency"] for r in data["requests"])


def test_a_client_that_leaves_frees_the_pod_within_a_step(route: tuple[str, str]) -> None:
    """A streamed request whose client disconnects from the route stops at its next step on the pod: the
    request after it starts at once, and the abandoned one ran at most a step or two after it was left."""
    url, pod = route
    long = {"prompt": "a long walk", "steps": 150, "width": 128, "height": 128}
    with httpx.Client() as client:
        before, left_at = leave_after(client, url, long, 3, server=pod)  # counted on the pod, not the route
    after = httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "next", "steps": 2, "width": 64, "height": 64},
                       timeout=300)  # fmt: skip
    assert after.status_code == 200
    abandoned = steps_run(pod) - 2 - before  # the steps the left request ran in all
    assert abandoned < 150 and abandoned - (left_at - before) <= 2, (before, left_at, abandoned)
