"""Clients that go away give up their place: the work done for them is cancelled.

ASGI tells an app that its client disconnected with an `http.disconnect` message from `receive`. Once the
request body has been read to its end, that is the only message left to receive, so a watcher task can wait
for it without taking bytes meant for the handler; `cancelled_on_disconnect` therefore refuses to start
before the body has been read (`await request.body()` for a request without one).

Cancelling the work is what gives the place up: a request waiting in the admission queue leaves it, and a
running generation is stopped at its next step (`generation.generate` turns its cancellation into the
request's own stop). The block ends with `ClientGone` (499), which the metrics count and nobody reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import Request
from starlette.types import Receive

from knsd.errors import ClientGone


async def until_disconnected(receive: Receive) -> None:
    """Return once the ASGI server reports that the client has gone (read only after the body)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def body_read(request: Request) -> bool:
    """Whether the handler has read the request body to its end (starlette's own record of it)."""
    return bool(getattr(request, "_stream_consumed", False)) or hasattr(request, "_body")


@asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[None]:
    """Run the block; if the client disconnects meanwhile, cancel it and raise `ClientGone`."""
    if not body_read(request):
        raise RuntimeError("read the request body before watching for a disconnect")
    async with cancelled_when_gone(request.receive):
        yield


@asynccontextmanager
async def cancelled_when_gone(receive: Receive) -> AsyncIterator[None]:
    """`cancelled_on_disconnect` on an ASGI `receive` whose request body has been read (a response's own
    `__call__`, such as an event stream's, after its handler read the body)."""
    current = asyncio.current_task()
    if current is None:
        raise RuntimeError("cancelled_when_gone runs inside a task")
    task = current
    gone = asyncio.Event()

    async def watch() -> None:
        await until_disconnected(receive)
        gone.set()
        task.cancel()

    watcher = asyncio.create_task(watch(), name="knsd-disconnect-watch")
    try:
        yield
    except asyncio.CancelledError:
        # Ours only when nobody else (the server shutting down) also cancelled the task.
        if gone.is_set() and task.uncancel() == 0:
            raise ClientGone("client disconnected; its request was given up") from None
        raise
    finally:
        watcher.cancel()
