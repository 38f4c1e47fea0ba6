"""A1111's prompt syntax: knsd's pure parsers replayed against vectors produced by A1111's own parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knsd.serve.prompts.parser import (
    _MAY_SCHEDULE,
    _parsed_schedules,
    parse_extra_networks,
    parse_prompt_attention,
    prompt_schedules,
    split_and,
    strip_comments,
    text_at_step,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "a1111_prompt_vectors.json").read_text())


@pytest.mark.parametrize("case", VECTORS["attention"], ids=lambda c: repr(c["prompt"]))
def test_attention_matches_a1111(case: dict) -> None:
    assert [list(p) for p in parse_prompt_attention(case["prompt"])] == case["expected"]


@pytest.mark.parametrize("case", VECTORS["schedules"], ids=lambda c: repr(c["prompt"]))
def test_schedules_match_a1111(case: dict) -> None:
    got = prompt_schedules(case["prompt"], case["steps"])
    assert [list(p) for p in got] == case["expected"]


@pytest.mark.parametrize("case", VECTORS["extra_networks"], ids=lambda c: repr(c["prompt"]))
def test_extra_networks_match_a1111(case: dict) -> None:
    prompt, networks = parse_extra_networks(case["prompt"])
    assert prompt == case["expected_prompt"]
    assert networks == case["expected_networks"]


def test_attention_docstring_examples() -> None:
    # A1111's own doctests for parse_prompt_attention.
    assert parse_prompt_attention("an (important) word") == [("an ", 1.0), ("important", 1.1), (" word", 1.0)]
    assert parse_prompt_attention("(unbalanced") == [("unbalanced", 1.1)]
    assert parse_prompt_attention("(unnecessary)(parens)") == [("unnecessaryparens", 1.1)]
    got = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert [t for t, _ in got] == ["a ", "house", " ", "on", " a ", "hill", ", sun, ", "sky", "."]
    assert [round(w, 6) for _, w in got] == [1.0, 1.573, 1.1, 1.0, 1.1, 0.55, 1.1, 1.4641, 1.1]


def test_malformed_weight_raises_like_a1111() -> None:
    with pytest.raises(ValueError):
        parse_prompt_attention("(a:1.2.3)")


def test_schedule_doctests_and_hires_timeline() -> None:
    assert prompt_schedules("a [b:3]", 10) == [(3, "a "), (10, "a b")]
    assert prompt_schedules("a [b : c : 1] d", 10) == [(1, "a b  d"), (10, "a  c  d")]
    assert prompt_schedules("((a][:b:c [d:3]", 10) == [(3, "((a][:b:c "), (10, "((a][:b:c d")]
    # hires pass: fractions count from 1.0, so .5 is already over and 1.5 is half-way through.
    assert prompt_schedules("a [b:.5] c", 10, hires_steps=10) == [(10, "a b c")]
    assert prompt_schedules("a [b:1.5] c", 10, hires_steps=10) == [(5, "a  c"), (10, "a b c")]


def test_switching_rule() -> None:
    # [a:b:10] with 20 steps: a for denoiser calls 0..10, b for 11..19.
    schedule = prompt_schedules("[a:b:10]", 20)
    assert [schedule[text_at_step(schedule, i)][1] for i in (0, 10, 11, 19)] == ["a", "a", "b", "b"]


def test_and_split_and_comments() -> None:
    assert split_and("a cat AND a dog:0.5") == [("a cat", 1.0), (" a dog", 0.5)]
    assert split_and("sand and ANDroid") == [("sand and ANDroid", 1.0)]
    assert strip_comments("a cat # not this\n# whole line\nred") == "a cat \nred"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab ()[]:|.-0123\\,", max_size=24))
def test_the_fast_path_agrees_with_the_grammar(prompt: str) -> None:
    # Prompts the fast path answers without parsing must come back unchanged from A1111's grammar too.
    if not _MAY_SCHEDULE.search(prompt):
        assert _parsed_schedules(prompt, 10, 0, 0.0, False) == ((10, prompt),)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab [](): |1.\\,", max_size=18))
def test_group_by_group_parsing_agrees_with_the_whole(prompt: str) -> None:
    # knsd parses balanced prompts one top-level bracket group at a time (the whole-prompt Earley parse is
    # cubic); the joined schedule must be A1111's.
    from knsd.serve.prompts.parser import _schedules

    for hires in (None, 10):
        whole = _parsed_schedules(
            prompt,
            10 if hires is None else hires,
            0 if hires is None else 10,
            0.0 if hires is None else 1.0,
            False,
        )
        assert _schedules(prompt, 10, hires, False) == whole
