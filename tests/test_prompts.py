"""A1111's prompt syntax: knsd's pure parsers replayed against vectors produced by A1111's own parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from knsd.serve.prompts.earley import earley_schedules
from knsd.serve.prompts.editing import MAX_NESTING, _depth, prompt_schedules, text_at_step
from knsd.serve.prompts.parser import (
    parse_extra_networks,
    parse_prompt_attention,
    split_and,
    strip_comments,
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


def a1111(prompt: str, steps: int, hires: int | None = None) -> list[tuple[int, str]] | str:
    """A1111's own reading: its grammar through lark's Earley parser, on the whole prompt."""
    args = (steps, 0, 0.0, False) if hires is None else (hires, steps, 1.0, False)
    if _depth(prompt) > MAX_NESTING:
        return [(args[0], prompt)]
    try:
        return list(earley_schedules(prompt, *args))
    except ValueError:
        return "ValueError"


def knsd(prompt: str, steps: int, hires: int | None = None) -> list[tuple[int, str]] | str:
    try:
        return prompt_schedules(prompt, steps, hires)
    except ValueError:
        return "ValueError"


# Every character the grammar treats specially, numbers' characters, escapes and newlines.
SYNTAX = st.text(alphabet="ab [](): |1.5e-+\\,\n", max_size=24)
PIECES = st.sampled_from(
    [
        "a",
        " ",
        "b c",
        ",",
        "[",
        "]",
        "(",
        ")",
        ":",
        "|",
        "1",
        "0.5",
        " 2 ",
        "\\(",
        "\\]",
        "[a:b:3]",
        "[a|b]",
        "(x:1.2)",
        "[[a:1]:2]",
        "[x:.5]",
        "()",
        "[]",
        "[:1]",
        "[a::1e1]",
    ]
)


@settings(max_examples=600, deadline=None)
@given(SYNTAX)
def test_linear_parse_agrees_with_a1111s_earley_parse(prompt: str) -> None:
    # knsd's one-pass parser against A1111's grammar parsed by lark's Earley parser, as A1111 does.
    for hires in (None, 10):
        assert knsd(prompt, 10, hires) == a1111(prompt, 10, hires)


def contested_runs(prompt: str) -> list[int]:
    """Lengths of the runs where stray characters touch constructs with no text between them."""
    from knsd.serve.prompts.editing import Group, Stray, Unparsable, _raw, parse

    try:
        items = parse(prompt)
    except Unparsable:
        return []
    runs, run = [], []
    for item in [*items, ""]:
        if not isinstance(item, str):
            run.append(item)
            continue
        if any(isinstance(x, Stray) for x in run) and any(isinstance(x, Group) for x in run):
            runs.append(len("".join(_raw(x) for x in run)))
        run = []
    return runs


@settings(max_examples=150, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join))
def test_linear_parse_agrees_on_prompts_built_from_constructs(prompt: str) -> None:
    # Longer prompts from whole constructs, stray brackets and text: runs of brackets touching constructs
    # are decided by A1111's parser, the rest by knsd's; the whole must read as A1111 reads it, wherever
    # those runs are within the bounds A1111's parser is asked about (the documented exception).
    from knsd.serve.prompts.editing import CONTESTED_BUDGET, CONTESTED_LIMIT

    runs = contested_runs(prompt)
    assume(all(n <= CONTESTED_LIMIT for n in runs) and sum(runs) <= CONTESTED_BUDGET)
    assert knsd(prompt, 20) == a1111(prompt, 20)


def test_a_long_contested_run_keeps_its_constructs() -> None:
    # Past the bounds, stray brackets touching constructs leave the constructs as written (A1111's parser
    # might read them as text, by the parity of the stray run).
    prompt = "[a:1]" * 10 + "]:"
    assert prompt_schedules(prompt, 10) == [(1, "]:"), (10, "a" * 10 + "]:")]


def test_parse_is_linear_in_the_prompts_length(monkeypatch: pytest.MonkeyPatch) -> None:
    # A1111's Earley parse took 79 s on 1,601 characters of the first; knsd reads 10,000 in one pass.
    # Counted in the characters the (cubic) Earley parser is given, never timed: at most the budget.
    from knsd.serve.prompts import editing

    seen: list[int] = []
    original = editing.earley_schedules

    def counting(prompt: str, *args: Any) -> tuple[tuple[int, str], ...]:
        seen.append(len(prompt))
        return original(prompt, *args)

    monkeypatch.setattr(editing, "earley_schedules", counting)
    prompts = ("[a:b:1] " * 1250 + "(", "[a:1]]: " * 1250, "[" + "x " * 5000 + ":b:0.5]", "[a:1]]:" * 1400)
    for prompt in prompts:
        assert prompt_schedules(prompt, 30)[-1][0] == 30
    assert sum(seen) <= len(prompts) * editing.CONTESTED_BUDGET


def test_non_finite_steps_are_refused() -> None:
    with pytest.raises(ValueError):
        prompt_schedules("[a:b:1e999]", 10)
    with pytest.raises(ValueError):
        parse_prompt_attention("(a:" + "9" * 400 + ")")
