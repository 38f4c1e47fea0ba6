"""The generator page's files over real HTTP (no browser): served from package data, behind auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from knsd.serve.http.app import create_app
from knsd.serve.settings import ServeSettings
from knsd.web.assets import assets
from tests.helpers import running

IDS = ["prompt", "negative-prompt", "steps", "width", "height", "seed", "generate", "progress", "gallery"]


@pytest.fixture(scope="module")
def url(tiny_model: Any, cache: Path) -> Iterator[str]:
    app = create_app(ServeSettings(cache=cache, api_auth=(("alice", "s3cret"),)), model=tiny_model)
    with running(app, "/readyz") as base:
        yield base


def test_page_and_assets(url: str) -> None:
    auth = ("alice", "s3cret")
    page = httpx.get(url + "/", auth=auth)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    for element in IDS:
        assert f'id="{element}"' in page.text
    # The page is told which API routes exist (the LoRA list shows only where /sdapi/v1/loras does).
    assert "/sdapi/v1/samplers" in page.text and "/sdapi/v1/loras" in page.text
    assert "/sdapi/v1/txt2img" not in page.text  # only GET routes are listed
    assert "{{" not in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside the server
    script = httpx.get(url + "/ui/app.js", auth=auth)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(url + "/ui/style.css", auth=auth).headers["content-type"].startswith("text/css")
    nope = httpx.get(url + "/ui/nope.js", auth=auth)
    assert nope.status_code == 404 and nope.json()["detail"] == "no such file: nope.js"


def test_page_needs_the_browsers_basic_login(url: str) -> None:
    r = httpx.get(url + "/")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="knsd"'
    assert httpx.get(url + "/ui/app.js").status_code == 401
    assert httpx.get(url + "/", auth=("alice", "wrong")).status_code == 401


def test_package_data_lists_only_page_files() -> None:
    assert set(assets("generator")) == {"index.html", "app.js", "style.css", "icon.svg"}
    assert set(assets("dashboard")) == {"dashboard.html", "dashboard.js", "dashboard.css", "icon.svg"}
