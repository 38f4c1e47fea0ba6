"""Real HTTP servers on loopback for load-test tests: well-behaved and misbehaving endpoints."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from tests.helpers import free_port


async def _ok(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status")


async def _stall(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="late")


async def _close(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()  # no response at all: the client sees EOF
    return web.Response(text="never sent")


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in (b"abc", b"defg", b"h" * 5000):
        await response.write(part)
    await response.write_eof()
    return response


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ok")


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    seen = {
        "method": request.method,
        "body": body.decode(),
        "headers": dict(request.headers),
        "host": request.host,
    }
    request.app["seen"].append(seen)
    return web.json_response(seen)


def app() -> web.Application:
    application = web.Application()
    application["seen"] = []  # what /echo received, for assertions
    application.router.add_route("*", "/ok", _ok)
    application.router.add_route("*", "/status/{code}", _status)
    application.router.add_route("*", "/stall", _stall)
    application.router.add_route("*", "/close", _close)
    application.router.add_route("*", "/chunked", _chunked)
    application.router.add_route("*", "/redirect", _redirect)
    application.router.add_route("*", "/echo", _echo)
    return application


@contextmanager
def aiohttp_server(application: web.Application) -> Iterator[str]:
    """Serve an aiohttp app on a free loopback port in a thread of its own."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(application, access_log=None)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
