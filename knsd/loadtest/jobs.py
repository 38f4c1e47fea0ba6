"""`knsd loadtest --async`: submit jobs with `Prefer: respond-async` (hey's workers, or open loop with --rate),
follow each 202's `Location` until the job is final, and record what became of every one of them.

A job that was accepted and then is not found, or not final after `--job-timeout`, is lost. Polls ride out
a gateway that restarts (connection errors are retried until the job's deadline).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp

from knsd.loadtest.spec import LoadSpec

FINAL = ("succeeded", "failed", "cancelled")
MAX_POLLERS = 256  # jobs followed at once; the rest wait their turn (bounded memory and sockets)


@dataclass(slots=True)
class Job:
    """One submission and what became of it; times in seconds from the start of the run."""

    sent: float
    submit_status: int | None = None  # None: the submission itself failed (its error in `error`)
    submit_seconds: float = 0.0
    job_id: str | None = None
    status: str | None = None  # the final status, or None (lost)
    lost: str | None = None  # why the job counts as lost
    done_at: float | None = None  # when the client saw it final
    server_seconds: float | None = None  # created -> finished, the gateway's own clock
    attempts: int | None = None
    cache_hit: bool = False
    error: str | None = None


@dataclass
class JobRun:
    jobs: list[Job] = field(default_factory=list)
    started: float = 0.0  # wall clock
    total: float = 0.0


def _headers(spec: LoadSpec) -> dict[str, str]:
    headers = {"Content-Type": spec.content_type, "Prefer": "respond-async"}
    if spec.user_agent:
        headers["User-Agent"] = spec.user_agent
    if spec.accept:
        headers["Accept"] = spec.accept
    if spec.basic_auth is not None:
        token = base64.b64encode(f"{spec.basic_auth[0]}:{spec.basic_auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    headers.update(dict(spec.headers))
    return headers


class JobRunner:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.run = JobRun()
        self.headers = _headers(spec)
        self.timeout = aiohttp.ClientTimeout(total=spec.timeout or None)
        self._start = 0.0
        self._pollers = asyncio.Semaphore(MAX_POLLERS)
        self._follow: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _now(self) -> float:
        return time.monotonic() - self._start

    async def execute(self) -> JobRun:
        self.run.started = time.time()
        self._start = time.monotonic()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            if self.spec.rate:
                await self._open_loop(session)
            else:
                await asyncio.gather(
                    *(self._worker(session, share) for share in self.spec.requests_per_worker())
                )
            await asyncio.gather(*self._follow)
        self.run.total = self._now()
        return self.run

    async def _worker(self, session: aiohttp.ClientSession, share: int) -> None:
        sent = 0
        while not self._stop.is_set():
            if self.spec.duration:
                if self._now() >= self.spec.duration:
                    return
            elif sent >= share:
                return
            sent += 1
            await self._submit(session, self._now())
            if self.spec.q:
                await asyncio.sleep(1 / self.spec.q)

    async def _open_loop(self, session: aiohttp.ClientSession) -> None:
        count = None if self.spec.duration else self.spec.n
        tasks = []
        i = 0
        while not self._stop.is_set() and (count is None or i < count):
            due = i / self.spec.rate
            if self.spec.duration and due >= self.spec.duration:
                break
            await asyncio.sleep(max(0.0, due - self._now()))
            tasks.append(asyncio.create_task(self._submit(session, due)))
            i += 1
        await asyncio.gather(*tasks)

    async def _submit(self, session: aiohttp.ClientSession, sent: float) -> None:
        job = Job(sent=sent)
        self.run.jobs.append(job)
        try:
            async with session.request(
                self.spec.method,
                self.spec.url,
                data=self.spec.body,
                headers=self.headers,
                timeout=self.timeout,
            ) as response:
                await response.read()
                job.submit_status = response.status
                job.cache_hit = response.headers.get("X-Knsd-Cache") == "hit"
                location = response.headers.get("Location")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            job.error = f"{type(exc).__name__}: {exc}"
            return
        finally:
            job.submit_seconds = self._now() - sent
        if job.submit_status == 202 and location:
            job.job_id = location.rstrip("/").rsplit("/", 1)[-1]
            self._follow.append(
                asyncio.create_task(self._poll(session, job, urljoin(self.spec.url, location)))
            )

    async def _poll(self, session: aiohttp.ClientSession, job: Job, url: str) -> None:
        deadline = job.sent + self.spec.job_timeout
        headers = {k: v for k, v in self.headers.items() if k not in ("Prefer", "Content-Type")}
        async with self._pollers:
            while self._now() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    async with session.get(url, headers=headers, timeout=self.timeout) as response:
                        if response.status == 404:
                            job.lost = "not found (the gateway forgot an accepted job)"
                            return
                        if response.status == 200:
                            record = await response.json()
                            if record.get("status") in FINAL:
                                self._final(job, record)
                                return
                await asyncio.sleep(self.spec.poll)
        job.lost = f"not final after --job-timeout {self.spec.job_timeout:g}s"

    def _final(self, job: Job, record: dict[str, object]) -> None:
        job.status = str(record["status"])
        job.done_at = self._now()
        created, finished = record.get("created"), record.get("finished")
        if isinstance(created, (int, float)) and isinstance(finished, (int, float)):
            job.server_seconds = max(0.0, finished - created)
        attempts = record.get("attempts")
        job.attempts = attempts if isinstance(attempts, int) else None


def execute_jobs(spec: LoadSpec) -> JobRun:
    async def main() -> JobRun:
        runner = JobRunner(spec)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            import signal

            loop.add_signal_handler(signal.SIGINT, runner.stop)
        return await runner.execute()

    return asyncio.run(main())
