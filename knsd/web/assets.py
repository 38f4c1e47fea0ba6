"""Static files of knsd's pages (the generator, the runtime dashboard), read from package data once.

No framework here: `knsd.serve.http.webui` serves them with Starlette, `knsd.local.dashboard` with aiohttp.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

# Types of the files a page is made of; anything else in a `web/` folder is never served.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Revalidate every time: the files change with the package, and an upgrade must show at once.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file of a page."""

    body: bytes
    media_type: str


@cache
def assets(page: str) -> dict[str, Asset]:
    """Every servable file of one page's folder (`generator` or `dashboard`), by file name."""
    folder = resources.files("knsd.web").joinpath(page)
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in MEDIA_TYPES:
            found[entry.name] = Asset(entry.read_bytes(), MEDIA_TYPES[suffix])
    return found


def not_found(name: str) -> dict[str, str]:
    """A 404 body in A1111's error shape."""
    detail = f"no such file: {name}"
    return {"error": "NotFound", "detail": detail, "body": "", "errors": f"404: {detail}"}
