"""Local endpoints for load-test benchmarks and tests: a no-op one and one with a fixed delay."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


async def noop(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def delayed(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("ms", "50")) / 1000)
    return web.Response(text="ok")


def app() -> web.Application:
    application = web.Application()
    application.router.add_route("*", "/noop", noop)
    application.router.add_route("*", "/delay", delayed)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
