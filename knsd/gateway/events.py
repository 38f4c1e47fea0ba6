"""Redis pub/sub to this replica's waiters: a job changed (`done`, `state`, `progress`, `cancel`), a slot
freed (`slot`), the breaker moved (`breaker ...`). A message is only a hint to look again: waiters also
re-read on a timer, so a message lost while the connection is re-established delays, never loses, anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("knsd.gateway")


class Events:
    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self.redis = client
        self.channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.on_cancel: Callable[[str], None] = lambda _id: None
        self.on_slot: Callable[[], None] = lambda: None
        self.on_breaker: Callable[[str], None] = lambda _state: None
        self.connected = asyncio.Event()

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever job `job_id` changes (or the breaker does), while in the block."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]

    def _wake(self, job_id: str | None) -> None:
        targets = self._waiters.values() if job_id is None else [self._waiters.get(job_id, set())]
        for waiters in list(targets):
            for event in list(waiters):
                event.set()

    def dispatch(self, message: str) -> None:
        kind, _, arg = message.partition(" ")
        if kind in ("done", "state", "progress"):
            self._wake(arg)
        elif kind == "cancel":
            self._wake(arg)
            self.on_cancel(arg)
        elif kind == "slot":
            self.on_slot()
        elif kind == "breaker":
            self.on_breaker(arg)
            self._wake(None)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop`, reconnecting after a Redis outage."""
        while not stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected.set()
                self._wake(None)  # anything may have changed while we were not listening
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self.dispatch(data.decode() if isinstance(data, bytes) else str(data))
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("redis pub/sub lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
