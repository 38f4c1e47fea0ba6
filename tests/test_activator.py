"""The activator's routing core: first available slot, FIFO buffer, limits, pinning, concurrency meter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from knsd.knative.meter import ConcurrencyMeter
from knsd.local.activator import Activator, BufferFull, BufferTimeout
from knsd.local.pods import Pod


async def _settle() -> None:
    """Let woken tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)


def _pod(name: str) -> Pod:
    return Pod(name, "rev", 1, None, 0.0, Path("/dev/null"), state="ready")  # type: ignore[arg-type]


def test_first_available_then_fifo_buffer() -> None:
    async def run() -> None:
        act = Activator(container_concurrency=1)
        a, b = _pod("a"), _pod("b")
        act.add_pod(a)
        first = await act.acquire(None, 1)
        assert first is a and a.inflight == 1
        waiters = [asyncio.create_task(act.acquire(None, 5)) for _ in range(3)]
        await _settle()
        assert act.buffered == 3 and act.meter.current == 4
        act.add_pod(b)  # a new ready pod takes the oldest waiter
        await _settle()
        assert waiters[0].done() and waiters[0].result() is b
        act.release(a)
        await _settle()
        assert waiters[1].result() is a and not waiters[2].done()
        assert a.max_inflight == 1 and b.max_inflight == 1  # never two requests on a pod
        act.release(b)
        await _settle()
        assert waiters[2].result() is b

    asyncio.run(run())


def test_buffer_limit_and_timeout() -> None:
    async def run() -> None:
        act = Activator(container_concurrency=1, buffer_limit=1)
        waiting = asyncio.create_task(act.acquire(None, 0.2))
        await _settle()
        with pytest.raises(BufferFull):
            await act.acquire(None, 1)
        with pytest.raises(BufferTimeout):
            await waiting
        assert act.buffered == 0 and act.meter.current == 0

    asyncio.run(run())


def test_cancelled_waiter_gives_its_slot_back() -> None:
    async def run() -> None:
        act = Activator(container_concurrency=1)
        a = _pod("a")
        waiter = asyncio.create_task(act.acquire(None, 5))
        await _settle()
        waiter.cancel()
        act.add_pod(a)
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert a.inflight == 0 and act.buffered == 0
        assert (await act.acquire(None, 1)) is a

    asyncio.run(run())


def test_pinned_requests_wait_for_their_pod_without_blocking_others() -> None:
    async def run() -> None:
        act = Activator(container_concurrency=1)
        a, b = _pod("a"), _pod("b")
        act.add_pod(a)
        act.add_pod(b)
        await act.acquire("a", 1)
        pinned = asyncio.create_task(act.acquire("a", 5))
        await _settle()
        other = await act.acquire(None, 1)  # not stuck behind the pinned waiter
        assert other is b and not pinned.done()
        act.remove_pod(a)  # the pinned pod goes away: the waiter may go anywhere
        act.release(b)
        await _settle()
        assert pinned.result() is b

    asyncio.run(run())


def test_concurrency_meter_is_time_weighted() -> None:
    now = [0.0]
    meter = ConcurrencyMeter(clock=lambda: now[0])
    meter.change(+1)
    now[0] = 0.5
    meter.change(+1)
    now[0] = 1.0
    average, requests = meter.report()
    assert average == pytest.approx(1.5) and requests == 2
    now[0] = 2.0
    assert meter.report() == (pytest.approx(2.0), 0)
