"""Running the handler under uvicorn, with Knative-style draining on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from types import FrameType

import uvicorn

from knsd.serve.http.app import create_app
from knsd.serve.http.startup import StartupLoad
from knsd.serve.http.state import ServerState
from knsd.serve.settings import ServeSettings

log = logging.getLogger("knsd.serve")


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT: stop admitting, finish running and queued work, then exit.

    A second signal stops at once. Knative sends SIGTERM on every scale-down, so the first one must never
    lose a request that was already accepted.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout
        self.exit_code = 0
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None
        self._fatal = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        port_file = self.state.settings.port_file
        if port_file is not None and self.servers:
            # With --port 0 the kernel picks a free port at bind time: no race with other processes.
            port = self.servers[0].sockets[0].getsockname()[1]
            tmp = port_file.with_name(port_file.name + ".tmp")
            tmp.write_text(str(port))
            os.replace(tmp, port_file)
        if self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            log.info("listening on http://%s:%d", host, port)

    def fatal(self, reason: str) -> None:
        """Stop with exit code 1 (the model could not be loaded)."""
        self._fatal = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested:
            self.should_exit = True
            self.force_exit = True
            return
        self._drain_requested = True

    async def _drain(self) -> None:
        adm = self.state.admission
        log.info(
            "draining: %d running, %d queued (timeout %.0fs)", adm.running, adm.waiting, self.drain_timeout
        )
        if await adm.drain(self.drain_timeout):
            log.info("drained, exiting")
        else:
            self.exit_code = 1
            log.error("drain timeout: %d requests still running or queued", adm.busy)

    async def on_tick(self, counter: int) -> bool:
        if self._fatal:
            self.exit_code = 1
            return True
        if self._drain_requested and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        if self._drain_task is not None and self._drain_task.done():
            return True
        return await super().on_tick(counter)


def run(settings: ServeSettings, startup: StartupLoad | None = None) -> int:
    """Serve until drained after a signal; return the process exit code. `startup`: the load `begin`
    started (without one, torch is imported here and the model loads once the server listens)."""
    if startup is None:
        # torch imported first from the pipeline thread makes every generation ~20 % slower here (its
        # thread pools start from that thread); import it on the main thread before serving.
        import torch  # noqa: F401

    holder: dict[str, DrainingServer] = {}
    app = create_app(settings, on_fatal=lambda reason: holder["server"].fatal(reason), startup=startup)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # knsd's logging format; uvicorn's start-up chatter below warning (knsd logs "listening")
        log_level=settings.log_level if settings.log_level in ("debug", "error", "critical") else "warning",
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
    )
    server = DrainingServer(config, app.state.knsd, settings.drain_timeout)
    holder["server"] = server
    server.run()
    # uvicorn re-raises signals it captured; ours were handled by draining.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return server.exit_code
