"""One generation answered as a stream of server-sent events (knsd.serve.http.events).

The request was parsed, checked against the model and admitted before the stream starts, so request errors
are plain JSON responses. Then: a comment at once (the first bytes: Knative's response-start timeout is
met), one or more events per step as the pipeline thread reports them (a `Feed` wakes the event loop; steps
that come faster than the loop are coalesced into one event), a keep-alive comment whenever nothing was sent
for `keepalive` seconds, and finally the events of the result, or one error event built from the exception
as the app's handlers build an error response (knsd.serve.http.failure). A client that disconnects gives
its place up (knsd.serve.http.disconnect): the generation stops and the stream ends without a last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from knsd.errors import ClientGone
from knsd.serve.generate.progress import Progress
from knsd.serve.http import events
from knsd.serve.http.disconnect import cancelled_when_gone
from knsd.serve.http.failure import Failure, describe

log = logging.getLogger("knsd.serve")
MAX_PENDING_PREVIEWS = 8  # previews the loop has not sent yet; older ones are dropped past this

# The stream's parts: the job (awaits the generation, returns the closing events), what to send when the
# job moves on (given the progress and the previews drawn since the last call), and the error event.
Job = Callable[["Feed"], Awaitable[list[bytes]]]
OnProgress = Callable[[Progress, list[str]], list[bytes]]
OnError = Callable[[Failure], bytes]


class Feed:
    """The pipeline thread's step reports, handed to the event loop (`notify` is its `Progress.listener`)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._loop = asyncio.get_running_loop()
        self._moved = asyncio.Event()
        self._previews: deque[str] = deque(maxlen=MAX_PENDING_PREVIEWS)
        self._seen = progress.preview_id

    def notify(self) -> None:
        """On the pipeline thread, after a step: wake the stream, with the new preview if one was drawn."""
        p = self.progress
        preview = None
        if p.preview_id != self._seen and p.current_image is not None:
            self._seen, preview = p.preview_id, p.current_image
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._wake, preview)

    def _wake(self, preview: str | None) -> None:
        if preview is not None:
            self._previews.append(preview)
        self._moved.set()

    async def next(self, timeout: float) -> list[str] | None:
        """Wait for the job to move on: the previews drawn since the last call, or None after `timeout`."""
        # Not asyncio.wait_for: on Python 3.11 it returns a wait that finished in the turn the task was
        # cancelled and drops the cancellation, and the stream's pump would never stop.
        try:
            async with asyncio.timeout(timeout):
                await self._moved.wait()
        except TimeoutError:
            return None
        self._moved.clear()
        previews = list(self._previews)
        self._previews.clear()
        return previews


class EventStream(Response):
    """The events of one generation, flushed as they happen (a Starlette response with its own `__call__`)."""

    def __init__(
        self,
        progress: Progress,
        job: Job,
        on_progress: OnProgress,
        on_error: OnError,
        keepalive: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=200)  # no body of its own: __call__ streams
        self.progress = progress
        self.job = job
        self.on_progress = on_progress
        self.on_error = on_error
        self.keepalive = keepalive
        self.stream_headers = {**events.HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.stream_headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await write(events.comment("knsd stream"))
        feed = Feed(self.progress)
        pump = asyncio.create_task(self._pump(feed, write), name="knsd-stream-pump")
        tail: list[bytes] | None
        try:
            async with cancelled_when_gone(receive):  # the handler read the body before this response
                tail = await self.job(feed)
        except ClientGone:
            tail = None  # the job gave its place up; nobody is left to send to
        except Exception as exc:
            tail = [self.on_error(describe(exc, scope.get("method", ""), scope.get("path", "")))]
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if tail is None:
            return
        for chunk in tail:
            await write(chunk)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, feed: Feed, write: Callable[[bytes], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            previews = await feed.next(max(0.0, quiet_since + self.keepalive - loop.time()))
            chunks = (
                [events.comment("keep-alive")]
                if previews is None
                else self.on_progress(self.progress, previews)
            )
            for chunk in chunks:
                await write(chunk)
            if chunks:
                quiet_since = loop.time()
