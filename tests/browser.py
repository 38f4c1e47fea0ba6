"""Playwright driving Debian's Chromium (no browser download): launch, and watch what a page does.

The tests that use it skip with the reason when Chromium or Playwright is missing; `.ci/run` installs both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def chromium_path() -> str | None:
    """Debian's Chromium (`apt-get install chromium`), or KNSD_CHROMIUM."""
    for candidate in (os.environ.get("KNSD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if chromium_path() is None:
        return "Chromium is not installed (apt-get install chromium); .ci/run installs it"
    return None


MISSING = _missing()
# An init script for the generator page: records every value its progress bar and its text show.
RECORD_PROGRESS = """
window.__progress = [];
window.__progressText = [];
document.addEventListener("DOMContentLoaded", () => {
  const bar = document.getElementById("progress");
  const text = document.getElementById("progress-text");
  new MutationObserver(() => window.__progress.push(Number(bar.getAttribute("aria-valuenow"))))
    .observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
  new MutationObserver(() => window.__progressText.push(text.textContent))
    .observe(text, { childList: true, characterData: true, subtree: true });
});
"""
needs_browser = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium (one per test module: `with launch() as b: yield b` in a fixture)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page with its console errors, uncaught exceptions and every URL it requested."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    responses: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)

    def outside(self, base: str) -> list[str]:
        """Requests that left the server under test (data: and blob: URLs stay in the page)."""
        return [url for url in self.requests if not url.startswith((base, "data:", "blob:", "about:"))]


def watch(page: Any) -> Watched:
    watched = Watched(page)
    page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: watched.errors.append(f"uncaught: {exc}"))
    page.on("request", lambda r: watched.requests.append(r.url))
    page.on("response", lambda r: watched.responses.append((r.url, r.status, r.headers)))
    return watched


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: KNSD_SCREENSHOTS to keep them, else the test's temp dir."""
    path = Path(os.environ.get("KNSD_SCREENSHOTS") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path
