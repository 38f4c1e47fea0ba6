"""Running a load test: the engine, the pod watcher and the progress display, then the report."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from knsd.loadtest.report import Summary, summarize
from knsd.loadtest.requester import Requester, RunResult
from knsd.loadtest.spec import LoadSpec
from knsd.loadtest.watch import KubePods, LocalPods, PodSource, ScaleReport, watch


@dataclass
class Outcome:
    run: RunResult
    summary: Summary
    scale: ScaleReport | None


class Progress:
    """A progress line on a terminal: requests done, errors, elapsed (nothing when not a TTY)."""

    def __init__(self, spec: LoadSpec, stream: TextIO) -> None:
        self.enabled = stream.isatty() and spec.output == ""
        self.stream = stream
        self.total = None if spec.duration else spec.n
        self.duration = spec.duration
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, run: RunResult, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        done, errors, elapsed = run.count, sum(run.errors.values()), now - self.started
        if self.total:
            width = 30
            filled = int(width * done / self.total)
            bar = "█" * filled + "░" * (width - filled)
            text = f"\r  {bar} {done}/{self.total} requests, {errors} errors, {elapsed:5.1f}s"
        else:
            text = f"\r  {done} requests, {errors} errors, {elapsed:5.1f}s of {self.duration:g}s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _source(spec: LoadSpec) -> PodSource | None:
    if spec.local:
        return LocalPods(spec.url)
    if spec.service:
        return KubePods(spec.service, spec.namespace, spec.kubeconfig, spec.context)
    return None


async def run_load(spec: LoadSpec, progress_stream: TextIO = sys.stderr) -> Outcome:
    """Run the load (and watch the pods if asked); Ctrl-C stops early and still reports."""
    progress = Progress(spec, progress_stream)
    engine = Requester(spec, on_result=progress.update)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, engine.stop)
    source = _source(spec)
    scale: ScaleReport | None = None
    watcher = None
    done = asyncio.Event()
    try:
        if source is not None:
            scale = ScaleReport(started=time.time())
            first = await source.pods()
            scale.observe(time.time(), first)
            scale.ready_at_start = sum(1 for p in first.values() if p.ready)
            watcher = asyncio.create_task(watch(source, scale, done))
        run = await engine.execute()
        progress.update(run, force=True)
        progress.close()
        if scale is not None and source is not None and watcher is not None:
            done.set()
            await watcher
            scale.load_ended = time.time()
            if scale.ready_at_start == 0:
                scale.cold_start = run.first_response
            if spec.expect_zero_after is not None:
                await _wait_for_zero(source, scale, spec.expect_zero_after)
            scale.check(spec.expect_pods, spec.expect_zero_after)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        if source is not None:
            await source.close()
    return Outcome(run, summarize(run.results, run.errors, run.total), scale)


async def _wait_for_zero(source: PodSource, scale: ScaleReport, limit: float) -> None:
    assert scale.load_ended is not None
    while time.time() - scale.load_ended <= limit:
        pods = await source.pods()
        scale.observe(time.time(), pods)
        if not pods:
            scale.zero_after = time.time() - scale.load_ended
            return
        await asyncio.sleep(0.25)


def execute(spec: LoadSpec) -> Outcome:
    """Run on uvloop where available."""
    try:
        import uvloop

        return uvloop.run(run_load(spec))
    except ImportError:
        return asyncio.run(run_load(spec))
