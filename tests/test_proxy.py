"""The local route's request timers, as Knative's timeout handler runs them (pure)."""

from __future__ import annotations

from knsd.local.proxy import Deadlines
from knsd.service.spec import ServiceSpec


def test_the_three_timers_run_from_arrival() -> None:
    d = Deadlines.of(ServiceSpec(timeout=600, response_start_timeout=120, idle_timeout=60), started=1000.0)
    # Nothing sent yet: the idle timer counts from arrival too (queue-proxy's lastWriteTime is zero).
    assert d.left(1000.0, None) == 60
    assert d.left(1050.0, None) == 10
    # Bytes are flowing: the response-start timer is done, idle counts from the last byte.
    assert d.left(1500.0, last_byte=1490.0) == 50
    # The whole request's timer caps everything, however lively the stream.
    assert d.left(1590.0, last_byte=1589.0) == 10


def test_defaults_are_the_request_timeout() -> None:
    d = Deadlines.of(ServiceSpec(), started=0.0)
    assert (d.total, d.response_start, d.idle) == (300, 300, 300)
    assert d.left(299.0, None) == 1
