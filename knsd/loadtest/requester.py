"""The load generator: aiohttp on uvloop, hey's closed-loop workers, and an open-loop mode.

Each result records hey's phases: DNS+dialup (0 on a reused connection), DNS, request write, response wait
(to the first byte of the response) and response read (the whole body is read and discarded).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from knsd.loadtest.rawhttp import ConnectionClosed, ConnectionPool, build_request
from knsd.loadtest.spec import LoadSpec

USER_AGENT = "hey/0.0.1"
REVISION_HEADER = "X-Knsd-Revision"


@dataclass(slots=True)
class Result:
    """One completed request (hey's `result`); times in seconds, `offset` from the start of the run."""

    offset: float
    total: float
    conn: float
    dns: float
    req: float
    delay: float
    res: float
    status: int
    size: int
    revision: str | None = None  # X-Knsd-Revision: the revision that answered (knsd serve, local route)
    streamed: bool = False  # a stream of server-sent events (Content-Type: text/event-stream)

    @property
    def first_byte(self) -> float:
        """Time to first byte: from sending (dial included) to the first byte of the response."""
        return self.total - self.res


@dataclass
class RunResult:
    """Everything the engine measured."""

    results: list[Result] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0  # wall clock
    total: float = 0.0  # seconds, start to the last worker finishing
    first_response: float | None = None  # seconds from the start to the first successful response

    @property
    def count(self) -> int:
        return len(self.results) + sum(self.errors.values())


def _trace() -> aiohttp.TraceConfig:
    """Per-request phase timestamps, written into the namespace passed as `trace_request_ctx`."""
    trace = aiohttp.TraceConfig()

    def mark(name: str, since: str | None = None, into: str | None = None) -> Callable[..., Any]:
        async def callback(_session: Any, ctx: SimpleNamespace, _params: Any) -> None:
            rec = ctx.trace_request_ctx
            now = time.perf_counter()
            setattr(rec, name, now)
            if since is not None and into is not None:
                setattr(rec, into, now - getattr(rec, since))

        return callback

    trace.on_connection_create_start.append(mark("conn_start"))
    trace.on_connection_create_end.append(mark("got_conn", since="conn_start", into="conn"))
    trace.on_connection_reuseconn.append(mark("got_conn"))
    trace.on_dns_resolvehost_start.append(mark("dns_start"))
    trace.on_dns_resolvehost_end.append(mark("dns_end", since="dns_start", into="dns"))
    trace.on_request_headers_sent.append(mark("wrote"))
    trace.on_request_chunk_sent.append(mark("wrote"))
    return trace


def go_error(method: str, url: str, exc: BaseException) -> str:
    """The error as Go's net/http client words it, so error distributions read like hey's."""
    op = f'{method[:1].upper()}{method[1:].lower()} "{url}"'
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return f"{op}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "no route to host"}.get(
            exc.os_error.errno or 0, exc.os_error.strerror or str(exc.os_error)
        )
        return f"{op}: dial tcp {exc.host}:{exc.port}: connect: {reason}"
    if isinstance(exc, ConnectionRefusedError):
        parts = urlsplit(url)
        return f"{op}: dial tcp {parts.hostname}:{parts.port or 80}: connect: connection refused"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, ConnectionClosed)):
        return f"{op}: EOF"
    if (
        isinstance(exc, (aiohttp.ClientOSError, ConnectionResetError))
        and getattr(exc, "errno", None) == errno.ECONNRESET
    ):
        return f"{op}: read: connection reset by peer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"{op}: unexpected EOF"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"{op}: stopped after 10 redirects"
    return f"{op}: {exc or type(exc).__name__}"


class Requester:
    """Runs one LoadSpec; `on_result` is called after each request (for progress)."""

    def __init__(self, spec: LoadSpec, on_result: Callable[[RunResult], None] | None = None) -> None:
        self.spec = spec
        self.on_result = on_result
        self.run = RunResult()
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._headers = self._build_headers()
        self._pool: ConnectionPool | None = None
        self._raw_request = b""
        self._session: aiohttp.ClientSession | None = None

    def _build_headers(self) -> dict[str, str]:
        s = self.spec
        headers = {"Content-Type": s.content_type}
        user_agent = ""
        for name, value in s.headers:
            if name.lower() == "user-agent":
                user_agent = value
            else:
                headers[name] = value
        if s.accept:
            headers["Accept"] = s.accept
        headers["User-Agent"] = f"{s.user_agent or user_agent} {USER_AGENT}".strip()
        if s.host:
            headers["Host"] = s.host
        if s.disable_compression:
            headers["Accept-Encoding"] = "identity"
        return headers

    def stop(self) -> None:
        self._stop.set()

    def _begin(self, intended: float | None, start: float) -> float:
        """Open loop: latency counts from when the request should have been sent (timers may fire a little
        early, so never from later than the actual send)."""
        return min(intended, start) if intended is not None else start

    def _record(self, result: Result) -> None:
        self.run.results.append(result)
        if self.run.first_response is None and 200 <= result.status < 400:
            self.run.first_response = result.offset + result.total
        if self.on_result is not None:
            self.on_result(self.run)

    def _fail(self, exc: BaseException) -> None:
        self.run.errors[go_error(self.spec.method, self.spec.url, exc)] += 1
        if self.on_result is not None:
            self.on_result(self.run)

    async def _one(self, session: aiohttp.ClientSession, intended: float | None = None) -> None:
        s = self.spec
        ctx = SimpleNamespace(conn=0.0, dns=0.0, got_conn=None, wrote=None)
        start = time.perf_counter()
        begin = self._begin(intended, start)
        try:
            async with session.request(
                s.method,
                s.url,
                data=s.body or None,
                headers=self._headers,
                allow_redirects=not s.disable_redirects,
                proxy=s.proxy,
                auth=aiohttp.BasicAuth(*s.basic_auth) if s.basic_auth else None,
                trace_request_ctx=ctx,
            ) as response:
                first_byte = time.perf_counter()
                async for _ in response.content.iter_any():
                    pass
                end = time.perf_counter()
                size = response.content_length or 0
                status = response.status
                revision = response.headers.get(REVISION_HEADER)
                streamed = response.content_type == "text/event-stream"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._fail(exc)
        else:
            got = ctx.got_conn or start
            wrote = ctx.wrote or got
            self._record(
                Result(
                    offset=begin - self._t0,
                    total=end - begin,
                    conn=ctx.conn,
                    dns=ctx.dns,
                    req=max(0.0, wrote - got),
                    delay=first_byte - wrote,
                    res=end - first_byte,
                    status=status,
                    size=size if size > 0 else 0,
                    revision=revision,
                    streamed=streamed,
                )
            )

    async def _one_raw(self, intended: float | None = None) -> None:
        """One request on the raw client; the same measurements as `_one`."""
        s = self.spec
        pool = self._pool
        assert pool is not None
        start = time.perf_counter()
        begin = self._begin(intended, start)
        loop = asyncio.get_running_loop()
        conn = None
        try:
            conn, dial = await pool.acquire()
            wrote = time.perf_counter()
            future = conn.send(self._raw_request, s.method == "HEAD")
            timer = None
            if s.timeout:
                remaining = max(0.0, s.timeout - (wrote - begin))
                timer = loop.call_later(remaining, _expire, future, conn)
            try:
                resp = await future
            finally:
                if timer is not None:
                    timer.cancel()
            if 300 <= resp.status < 400 and resp.location and not s.disable_redirects:
                pool.release(conn)
                conn = None
                await self._follow(urljoin(s.url, resp.location), begin, dial)
                return
        except (TimeoutError, OSError, ConnectionClosed) as exc:
            if conn is not None:
                conn.closed = True
            self._fail(exc)
        else:
            end = resp.done
            first = resp.first_byte or end
            self._record(
                Result(begin - self._t0, end - begin, dial, 0.0, 0.0, first - wrote, end - first, resp.status,
                       resp.length if resp.length > 0 else 0, resp.revision, resp.streamed)
            )  # fmt: skip
        finally:
            if conn is not None:
                pool.release(conn)

    async def _follow(self, url: str, begin: float, dial: float) -> None:
        """A redirect from the raw client, followed with aiohttp (as Go's client follows up to 10)."""
        if self._session is None:
            self._session = self._new_session()
        try:
            trace = SimpleNamespace(conn=0.0, dns=0.0, got_conn=None, wrote=None)
            async with self._session.get(
                url, headers=self._headers, max_redirects=9, trace_request_ctx=trace
            ) as response:
                first = time.perf_counter()
                async for _ in response.content.iter_any():
                    pass
                end = time.perf_counter()
                status, size = response.status, response.content_length or 0
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._fail(exc)
        else:
            self._record(
                Result(
                    begin - self._t0, end - begin, dial, 0.0, 0.0, first - begin, end - first, status, size
                )
            )

    async def _request(self, intended: float | None = None) -> None:
        if self._pool is not None:
            await self._one_raw(intended)
        else:
            assert self._session is not None
            await self._one(self._session, intended)

    async def _worker(self, count: int) -> None:
        interval = 1.0 / self.spec.q if self.spec.q > 0 else 0.0
        next_tick = time.perf_counter() + interval
        for _ in range(count):
            if self._stop.is_set():
                return
            if interval:
                # Like Go's time.Tick: wait for the next tick; ticks missed while busy are dropped.
                now = time.perf_counter()
                if next_tick > now:
                    await asyncio.sleep(next_tick - now)
                    next_tick += interval
                else:
                    next_tick = now + interval
                if self._stop.is_set():
                    return
            await self._request()

    async def _open_loop(self) -> None:
        s = self.spec
        total = s.n if not s.duration else None
        pending: set[asyncio.Task[None]] = set()
        i = 0
        while not self._stop.is_set() and (total is None or i < total):
            intended = self._t0 + i / s.rate
            delay = intended - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                if self._stop.is_set():
                    break
            task = asyncio.create_task(self._request(intended))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        if pending:
            await asyncio.wait(pending)

    def _new_session(self) -> aiohttp.ClientSession:
        s = self.spec
        connector = aiohttp.TCPConnector(
            limit=s.c, limit_per_host=s.c, force_close=s.disable_keepalive, ssl=False, ttl_dns_cache=300
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=s.timeout or None),
            trace_configs=[_trace()],
            auto_decompress=not s.disable_compression,
            skip_auto_headers=("User-Agent",),
        )

    async def execute(self) -> RunResult:
        """Run to completion (or `-z`, or stop()); the summary covers everything that completed."""
        s = self.spec
        parts = urlsplit(s.url)
        if parts.scheme == "http" and not s.proxy:
            # The fast path: hey-like keep-alive connections on asyncio protocols.
            headers = dict(self._headers)
            headers.setdefault("Accept-Encoding", "gzip")
            if s.basic_auth:
                headers["Authorization"] = aiohttp.BasicAuth(*s.basic_auth).encode()
            if s.disable_keepalive:
                headers["Connection"] = "close"
            host_header = s.host or parts.netloc
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            self._raw_request = build_request(s.method, target, host_header, headers, s.body)
            self._pool = ConnectionPool(parts.hostname or "", parts.port or 80, s.c, not s.disable_keepalive)
        else:
            self._session = self._new_session()
        try:
            self.run.started = time.time()
            self._t0 = time.perf_counter()
            timer = asyncio.get_running_loop().call_later(s.duration, self.stop) if s.duration else None
            if s.rate > 0:
                await self._open_loop()
            else:
                counts = [1 << 31] * s.c if s.duration else s.requests_per_worker()
                await asyncio.gather(*(self._worker(count) for count in counts))
            if timer is not None:
                timer.cancel()
            self.run.total = time.perf_counter() - self._t0
        finally:
            if self._pool is not None:
                self._pool.close()
            if self._session is not None:
                await self._session.close()
        return self.run


def _expire(future: asyncio.Future[Any], conn: object) -> None:
    """The per-request timeout (-t): fail the request and drop its connection."""
    if not future.done():
        future.set_exception(TimeoutError())
        transport = getattr(conn, "transport", None)
        if transport is not None:
            transport.close()
