"""The gateway's pure parts: tenants and their flags, what may be cached and its key, the event-stream parser,
a job's JSON, and the Prefer / Cache-Control parsing."""

from __future__ import annotations

import json

import pytest

from knsd.errors import BadRequest, InvalidField, UsageError
from knsd.gateway.cachekey import cache_key, deterministic, model_id, parse_body, result_model
from knsd.gateway.handlers import cache_directives, prefers_async
from knsd.gateway.record import job_json
from knsd.gateway.settings import GatewaySettings, parse_header
from knsd.gateway.sse import EventParser, EventStreamTooLarge
from knsd.gateway.tenants import ANONYMOUS, build_tenants, parse_rate


def test_keys_map_to_tenants_and_nothing_else_does() -> None:
    tenants = build_tenants(["alice=k-a", "bob=k-b"], [], [], [])
    assert tenants.authenticate("Bearer k-a") == "alice"
    assert tenants.authenticate("bearer  k-b ") == "bob"
    for header in (None, "", "Bearer", "Bearer k-c", "Basic k-a", "k-a"):
        assert tenants.authenticate(header) is None
    assert "k-a" not in repr(tenants)  # only hashes are held


def test_no_keys_means_one_anonymous_tenant() -> None:
    tenants = build_tenants([], ["*=2/s"], [], [])
    assert not tenants.auth_required and tenants.authenticate(None) == ANONYMOUS
    assert tenants.policy(ANONYMOUS).rate == 2


def test_rates_bursts_and_queue_limits_with_defaults_for_everyone() -> None:
    tenants = build_tenants(
        ["alice=a", "bob=b", "carol=c"], ["alice=30/m", "*=2/s"], ["alice=3"], ["bob=7", "*=50"]
    )
    alice, bob, carol = (tenants.policy(n) for n in ("alice", "bob", "carol"))
    assert (alice.rate, alice.burst, alice.max_queued) == (0.5, 3, 50)
    assert (bob.rate, bob.burst, bob.max_queued) == (2, 2, 7)
    assert (carol.rate, carol.burst) == (2, 2)
    unlimited = build_tenants(["x=k"], [], [], []).policy("x")
    assert unlimited.rate is None and unlimited.max_queued == 100


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        ((["alice"], [], [], []), "--api-key", "NAME=VALUE"),
        ((["a=k", "b=k"], [], [], []), "--api-key", "same key"),
        ((["a=k"], ["b=1/s"], [], []), "--rate", "no tenant 'b'"),
        ((["a=k"], ["a=fast"], [], []), "--rate", "2/s, 30/m or 100/h"),
        ((["a=k"], ["a=0/s"], [], []), "--rate", "positive"),
        ((["a=k"], [], ["a=2"], []), "--burst", "no --rate"),
        ((["a=k"], [], [], ["a=0"]), "--max-queued", ">= 1"),
        ((["bad name=k"], [], [], []), "--api-key", "tenant name"),
    ],
)
def test_bad_tenant_flags_name_the_flag(args: tuple, flag: str, words: str) -> None:
    with pytest.raises(UsageError) as exc:
        build_tenants(*args)
    assert exc.value.flag == flag and words in str(exc.value)


def test_rate_units() -> None:
    assert parse_rate("2") == 2 and parse_rate("120/m") == 2 and parse_rate("7200/h") == 2


def test_settings_refuse_bad_urls_and_numbers_by_flag() -> None:
    for kwargs, flag in (
        ({"upstream": "ftp://x"}, "--upstream"),
        ({"upstream": "http://x", "redis_url": "http://r"}, "--redis"),
        ({"upstream": "http://x", "max_inflight": 0}, "--max-inflight"),
        ({"upstream": "http://x", "reclaim_after": 0.5}, "--reclaim-after"),
        ({"upstream": "http://x", "prefix": "a:b"}, "--redis-prefix"),
        ({"upstream": "http://x", "probe_path": "readyz"}, "--probe-path"),
    ):
        with pytest.raises(UsageError) as exc:
            GatewaySettings(**kwargs)  # type: ignore[arg-type]
        assert exc.value.flag == flag
    assert parse_header("Authorization=Bearer t") == ("Authorization", "Bearer t")
    with pytest.raises(UsageError):
        parse_header("Bad Name=x")


def test_only_fixed_seeds_are_deterministic() -> None:
    assert deterministic({"seed": 0}) and deterministic({"seed": 123, "subseed": -1})
    for body in ({}, {"seed": -1}, {"seed": None}, {"seed": "5"}, {"seed": True}, {"seed": 1.5}):
        assert not deterministic(body), body
    assert not deterministic({"seed": 1, "subseed_strength": 0.5})  # a random variation seed
    assert not deterministic({"seed": 1, "subseed": -1, "subseed_strength": 0.5})
    assert deterministic({"seed": 1, "subseed": 9, "subseed_strength": 0.5})


def test_cache_key_ignores_key_order_and_spacing_but_nothing_else() -> None:
    a = parse_body("/sdapi/v1/txt2img", b'{"prompt": "x", "seed": 1, "steps": 2}')
    b = parse_body("/sdapi/v1/txt2img", b'{"steps":2,"seed":1,"prompt":"x"}')
    key = cache_key("/sdapi/v1/txt2img", a, "abc")
    assert key == cache_key("/sdapi/v1/txt2img", b, "abc")
    assert key != cache_key("/sdapi/v1/img2img", a, "abc")
    assert key != cache_key("/sdapi/v1/txt2img", a, "abd")  # another model
    assert key != cache_key("/sdapi/v1/txt2img", a, "abc", tag="canary")
    assert key != cache_key("/sdapi/v1/txt2img", {**a, "seed": 2}, "abc")


def test_bodies_that_are_not_objects_are_400_and_openai_streaming_is_422() -> None:
    for body in (b"{", b"[1]", b'"x"', b"\xff"):
        with pytest.raises(BadRequest) as exc:
            parse_body("/sdapi/v1/txt2img", body)
        assert exc.value.status == 400
    with pytest.raises(InvalidField) as invalid:
        parse_body("/v1/images/generations", b'{"prompt": "x", "stream": true}')
    assert invalid.value.field == "stream"
    assert parse_body("/v1/images/generations", b'{"prompt": "x", "stream": false}')["prompt"] == "x"


def test_model_identity_from_the_title_and_from_a_result() -> None:
    assert model_id("v1-5-pruned-emaonly.safetensors [6ce0161689]") == "6ce0161689"
    assert model_id("tiny") == "tiny"
    result = {"images": [], "info": json.dumps({"sd_model_hash": "6CE0161689"})}
    assert result_model(result) == "6ce0161689"
    assert result_model({"data": []}) is None and result_model({"info": "not json"}) is None


def test_event_stream_parser_in_any_chunking() -> None:
    text = (
        b': keep-alive\r\n\r\nevent: progress\r\ndata: {"progress": 0.5}\r\n\r\n'
        b'event: result\ndata: {"images":\ndata:  ["a"]}\n\n'
    )
    want = [("progress", b'{"progress": 0.5}'), ("result", b'{"images":\n ["a"]}')]
    for size in (1, 2, 3, 7, len(text)):
        parser = EventParser(1 << 20)
        got = [e for i in range(0, len(text), size) for e in parser.feed(text[i : i + size])]
        assert got == want, size


def test_event_stream_parser_is_bounded() -> None:
    parser = EventParser(100)
    with pytest.raises(EventStreamTooLarge):
        list(parser.feed(b"data: " + b"x" * 200))
    parser = EventParser(100)
    with pytest.raises(EventStreamTooLarge):
        for _ in range(10):
            list(parser.feed(b"data: " + b"y" * 30 + b"\n"))


def test_job_json_splices_the_stored_json() -> None:
    result = b'{"images": ["AAAA"], "info": "{}"}'
    h = {"id": b"j1", "status": b"succeeded", "route": b"/sdapi/v1/txt2img", "attempts": b"2",
         "created": b"10.5", "finished": b"12.25", "result": result, "http_status": b"200", "pod": b"p-1"}  # fmt: skip
    out = json.loads(job_json(h))
    assert out["result"] == json.loads(result) and out["attempts"] == 2 and out["pod"] == "p-1"
    assert out["created"] == 10.5 and out["started"] is None and out["progress"] is None
    failed = json.loads(job_json({**h, "status": b"failed", "error": b'{"error": "X"}'}))
    assert failed["error"] == {"error": "X"} and "result" not in failed
    queued = json.loads(job_json({"id": b"j2", "status": b"queued", "last_error": b'{"e": 1}'}))
    assert queued["last_error"] == {"e": 1} and "error" not in queued


def test_prefer_and_cache_control() -> None:
    assert prefers_async("respond-async") and prefers_async("wait=10, Respond-Async")
    assert not prefers_async(None) and not prefers_async("return=minimal")
    assert cache_directives("No-Cache, max-age=0") == {"no-cache", "max-age"}


def test_an_error_event_stands_for_its_status() -> None:
    from knsd.gateway.upstream import _event_status

    assert _event_status(b'{"error": "Unavailable", "status": 503, "errors": "503: draining"}') == 503
    assert _event_status(b'{"error": "InvalidField", "errors": "422: width must be ..."}') == 422
    assert _event_status(b'{"detail": "?"}') == 500 and _event_status(b"not json") == 500


def test_who_asks_for_an_event_stream() -> None:
    from knsd.gateway.waiting import wants_events

    assert wants_events("text/event-stream") and wants_events("application/json, Text/Event-Stream; q=0.5")
    assert not wants_events("text/event-stream; q=0") and not wants_events("application/json")
    assert not wants_events(None)
