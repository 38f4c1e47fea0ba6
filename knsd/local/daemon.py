"""The local runtime daemon: one service's route and its `/.knsd/` endpoints, until deleted.

Started in the background by `knsd deploy --local` as `python -m knsd.local.daemon STATE_DIR`; the
spec and config come from STATE_DIR/state.json. The Runtime holds the revisions, pods and autoscaler;
this module serves HTTP in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from knsd.errors import UsageError
from knsd.knative.config import ConfigError, parse_config, validate_config
from knsd.local import control
from knsd.local.dashboard import Dashboard
from knsd.local.proxy import forward, json_response
from knsd.local.runtime import DEFAULT_GATEWAY_ADDRESS, INTERNAL, Runtime
from knsd.local.state import ServiceDir
from knsd.service.limits import MAX_BODY_BYTES
from knsd.service.spec import ServiceSpec

log = logging.getLogger("knsd.local")


async def handle(runtime: Runtime, dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    path = request.path
    if path.startswith(INTERNAL):
        # A control call runs to its end even when its client leaves (shielded from handler cancellation).
        return await asyncio.shield(_internal(runtime, dashboard, request, path[len(INTERNAL) :]))
    return await forward(request, runtime)


async def _internal(
    runtime: Runtime, dashboard: Dashboard, request: web.Request, what: str
) -> web.StreamResponse:
    if what in control.GUARDED:
        denied = control.check(request.headers.get("Authorization"), runtime.token)
        if denied is not None:
            # No path in the answer: whoever may use the token runs the knsd CLI, which knows where it is.
            detail = (
                f"{INTERNAL}{what} needs the control token (Authorization: Bearer TOKEN): {control.WHERE}"
            )
            error = "Unauthorized" if denied == 401 else "Forbidden"
            return json_response({"error": error, "detail": detail}, status=denied)
    if (page := dashboard.respond(request, what)) is not None:
        return page
    if what == "status" and request.method == "GET":
        return json_response(runtime.status())
    if what == "metrics" and request.method == "GET":
        return web.Response(
            body=generate_latest(runtime.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
    if what == "update" and request.method == "POST":
        try:
            data = await request.json()
            spec = ServiceSpec.from_json(data["spec"])
            config = validate_config(parse_config(data.get("config", {})))
        except (ValueError, KeyError, TypeError, UsageError, ConfigError) as exc:
            return json_response({"error": "BadRequest", "detail": str(exc)}, status=400)
        if spec.name != runtime.spec.name:
            detail = (
                f"metadata.name: this runtime serves {runtime.spec.name!r}, not {spec.name!r}; "
                "a service is never renamed (deploy the other name as its own service)"
            )
            return json_response(
                {"error": "Conflict", "field": "metadata.name", "detail": detail}, status=409
            )
        try:
            rev = await runtime.deploy(spec, config)
        except UsageError as exc:
            return json_response({"error": "BadRequest", "detail": str(exc)}, status=400)
        return json_response({"revision": rev.name})
    if what == "shutdown" and request.method == "POST":
        runtime.stop.set()
        return json_response({"status": "stopping"})
    return json_response({"error": "NotFound", "detail": f"no such endpoint {INTERNAL}{what}"}, status=404)


async def run(runtime: Runtime) -> int:
    """Listen, deploy the spec, run the loops until stopped, then drain and clean up."""
    runtime.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30), auto_decompress=False
    )
    runtime.token = control.create_token(runtime.dir.root)
    # The route reads its bodies itself (knsd.local.proxy.read_body); this bounds `/.knsd/update`'s.
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    dashboard = Dashboard(runtime.status, runtime.metrics.registry)

    async def route(request: web.Request) -> web.StreamResponse:
        return await handle(runtime, dashboard, request)

    app.router.add_route("*", "/{tail:.*}", route)
    # A client that leaves cancels its handler: the route then closes its connection to the pod, so the
    # pod gives up the work, as a client leaving queue-proxy does in Knative.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, runtime.host, runtime.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", runtime.host, runtime.port, exc)
        await runtime.session.close()
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop.set)
    runtime.dir.write_pid()
    log.info("route listening on %s", runtime.url)
    loops = [asyncio.create_task(runtime.metric_loop()), asyncio.create_task(runtime.tick_loop())]
    loops.append(asyncio.create_task(dashboard.run(runtime.stop)))
    try:
        await runtime.deploy(runtime.spec, runtime.config)
    except UsageError as exc:
        log.error("%s", exc)
        runtime.stop.set()
    await runtime.stop.wait()
    log.info("shutting down: the gateway, then the pods")
    await runtime.frontend.stop()
    for task in loops:
        task.cancel()
    await site.stop()  # no new connections; in-flight requests finish below
    deadline = time.monotonic() + float(runtime.spec.timeout or 300)
    while time.monotonic() < deadline and any(
        r.activator.buffered and r.pods.ready() for r in runtime.revisions
    ):
        await asyncio.sleep(0.1)  # buffered requests still have pods to go to
    for rev in runtime.revisions:
        rev.activator.fail_waiters(ConnectionAbortedError("runtime shutting down"))
    await asyncio.gather(
        *(rev.pods.stop_all(timeout=float(rev.spec.timeout or 300)) for rev in runtime.revisions)
    )
    await runner.cleanup()
    await runtime.session.close()
    with contextlib.suppress(OSError):
        runtime.dir.pid_file.unlink()
        # A clean stop (delete); without this mark a missing runtime means it died (status says so).
        runtime.dir.write_state({**(runtime.dir.read_state() or {}), "stopped": time.time()})
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m knsd.local.daemon STATE_DIR`."""
    args = argv if argv is not None else sys.argv[1:]
    directory = ServiceDir(Path(args[0]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = directory.read_state()
    if state is None:
        log.error("no state in %s", directory.root)
        return 1
    spec = ServiceSpec.from_json(state["spec"])
    config = validate_config(parse_config(state.get("config", {})))
    runtime = Runtime(
        directory, spec, config, state["address"], state.get("gateway_address", DEFAULT_GATEWAY_ADDRESS)
    )
    return asyncio.run(run(runtime))


if __name__ == "__main__":
    sys.exit(main())
