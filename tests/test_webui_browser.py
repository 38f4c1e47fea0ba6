"""The generator page at GET / in a real headless Chromium, against a real server and the tiny pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from tests.browser import RECORD_PROGRESS, launch, needs_browser, screenshot_dir, watch
from tests.helpers import running

pytestmark = [needs_browser, pytest.mark.timeout(600)]

LONG = 240_000  # ms; the tiny pipeline is quick, but a loaded CI machine is not


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as launched:
        yield launched


@pytest.fixture(scope="module")
def url(tiny_model: Any, cache: Path) -> Iterator[str]:
    app = create_app(ServeSettings(cache=cache), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base + "/"


def open_page(browser: Any, url: str, **context: Any) -> Any:
    ctx = browser.new_context(viewport={"width": 1360, "height": 900}, **context)
    ctx.add_init_script(RECORD_PROGRESS)
    watched = watch(ctx.new_page())
    watched.page.goto(url, wait_until="networkidle")
    return watched


def test_generate_shows_progress_and_gallery(browser: Any, url: str, tmp_path: Path) -> None:
    w = open_page(browser, url)
    page = w.page
    # The sampler list comes from the server's /sdapi/v1/samplers.
    assert page.locator("#sampler option").count() > 5
    # The tiny model comes with a tiny LoRA in its Lora/ folder, listed from /sdapi/v1/loras.
    page.wait_for_selector("#loras-panel:not([hidden])")
    assert page.locator("#loras button:has-text('tiny-lora')").count() == 1
    page.fill("#prompt", "a pretty dog in a meadow")
    page.fill("#negative-prompt", "blurry")
    page.fill("#steps", "40")
    page.fill("#width", "256")
    page.fill("#height", "192")
    page.fill("#seed", "1234")
    page.click("#generate")
    page.wait_for_selector("#gallery img", timeout=LONG)
    page.screenshot(path=str(screenshot_dir(tmp_path) / "generator.png"))

    image = page.locator("#gallery img").first
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.querySelector('#gallery img').naturalWidth") == 256
    infotext = page.locator("#gallery .infotext").first.text_content()
    assert infotext.startswith("a pretty dog in a meadow\nNegative prompt: blurry\nSteps: 40, Sampler: Euler")
    assert "Seed: 1234, Size: 256x192" in infotext
    download = page.locator("#gallery a.download").first
    assert download.get_attribute("download").endswith("-1234-a-pretty-dog-in-a-meadow.png")

    seen = page.evaluate("window.__progress")
    texts = page.evaluate("window.__progressText")
    assert any(0 < v < 100 for v in seen), f"the bar never showed a step in between: {seen}"
    assert any(t.startswith("Step ") and "/ 40" in t for t in texts), texts
    assert seen[-1] == 100 and texts[-1].startswith("Done: 1 image in ")
    assert page.get_attribute("#progress", "aria-valuenow") == "100"
    assert w.errors == []
    assert w.outside(url) == []
    page.context.close()


def test_error_is_shown_beside_its_field(browser: Any, url: str) -> None:
    w = open_page(browser, url)
    page = w.page
    page.fill("#prompt", "dog")
    page.fill("#width", "500")
    page.fill("#steps", "2")
    page.click("#generate")
    page.wait_for_selector('.field[data-field="width"].invalid', timeout=LONG)
    assert page.locator("#error-width").text_content() == (
        "width must be a multiple of 8 between 64 and 2048, got 500"
    )
    assert page.locator("#error-width").is_visible()
    assert page.locator("#error").is_hidden()  # field errors stay beside the field, not in the banner
    assert page.evaluate("document.activeElement.id") == "width"
    page.fill("#width", "64")  # editing the field clears its message
    assert page.locator("#error-width").is_hidden()
    # The browser logs the 422 response itself; nothing else went wrong.
    assert all("status of 422" in e for e in w.errors), w.errors
    page.context.close()


def test_img2img_from_a_file(browser: Any, url: str, tmp_path: Path) -> None:
    source = tmp_path / "init.png"
    Image.new("RGB", (80, 64), (200, 40, 90)).save(source)
    w = open_page(browser, url)
    page = w.page
    page.click("#tab-img2img")
    assert page.locator("#img2img-fields").is_visible()
    page.fill("#prompt", "")
    page.fill("#steps", "4")
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.click("#generate")  # no image chosen yet: said beside the field, nothing sent
    assert page.locator("#error-init-image").text_content() == "Choose an initial image for img2img."
    page.set_input_files("#init-image", str(source))
    page.wait_for_selector("#init-preview:not([hidden])")
    page.fill("#denoising-strength", "0.5")
    page.click("#generate")
    page.wait_for_selector("#gallery img", timeout=LONG)
    infotext = page.locator("#gallery .infotext").first.text_content()
    assert "Denoising strength: 0.5" in infotext and "Size: 64x64" in infotext
    assert w.errors == []
    page.context.close()


def test_basic_auth_prompt(tiny_model: Any, cache: Path, browser: Any) -> None:
    app = create_app(ServeSettings(cache=cache, api_auth=(("alice", "s3cret"),)), model=tiny_model)
    with running(app, "/readyz") as base:
        r = httpx.get(base + "/")
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="knsd"'
        from playwright.sync_api import Error as BrowserError

        stranger = browser.new_page()
        # Headless Chromium cannot show the Basic prompt; it reports the challenge it would have shown.
        with pytest.raises(BrowserError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            stranger.goto(base + "/")
        stranger.close()
        w = open_page(browser, base + "/", http_credentials={"username": "alice", "password": "s3cret"})
        page = w.page
        assert page.locator("#sampler option").count() > 5  # the page's API calls carry the credentials
        page.fill("#steps", "2")
        page.fill("#width", "64")
        page.fill("#height", "64")
        page.click("#generate")
        page.wait_for_selector("#gallery img", timeout=LONG)
        assert page.locator("#server-state").get_attribute("data-state") == "ready"
        assert w.errors == []
        page.context.close()


def test_lora_list_adds_a_tag_that_generates(browser: Any, url: str) -> None:
    w = open_page(browser, url)
    page = w.page
    page.wait_for_selector("#loras-panel:not([hidden])")
    page.fill("#prompt", "a dog")
    page.click("#loras button:has-text('tiny-lora')")
    assert page.input_value("#prompt") == "a dog <lora:tiny-lora:1>"
    page.fill("#steps", "2")
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.click("#generate")
    page.wait_for_selector("#gallery img", timeout=LONG)
    assert "Lora hashes" in page.locator("#gallery .infotext").first.inner_text()
    assert w.errors == []
    page.context.close()
