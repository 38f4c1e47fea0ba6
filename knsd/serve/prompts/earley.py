"""A1111's prompt-editing grammar parsed as A1111 parses it: lark's Earley parser (pure).

From AUTOMATIC1111/stable-diffusion-webui `modules/prompt_parser.py` (commit 28bd8e14, the v1.6+ parser
with new timelines). The grammar is ambiguous where stray brackets touch a bracket group, and the Earley
parse is cubic in the prompt's length, so knsd parses prompts with its own linear parser
(knsd.serve.prompts.editing) and asks this one only about short runs where the two could differ; the tests
use it as the oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import lark

# The grammar of prompt editing `[from:to:when]` and alternation `[a|b]`, unchanged from A1111.
_SCHEDULE_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@lru_cache(maxsize=1)
def _schedule_parser() -> lark.Lark:
    return lark.Lark(_SCHEDULE_GRAMMAR)


def number_pattern() -> str:
    """The regular expression of the grammar's NUMBER (lark's SIGNED_NUMBER), as its lexer matches it."""
    terminal = next(t for t in _schedule_parser().terminals if t.name == "NUMBER")
    return str(terminal.pattern.to_regexp())


def resolve_when(text: str, steps: int, int_offset: int, flt_offset: float, old: bool) -> int:
    """A1111's step of `[a:b:when]`: a fraction of the steps when it has a dot (or is below 1 with old
    timelines), else a step count; capped at `steps`. ValueError for a non-finite number."""
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"the step of [from:to:when] must be a finite number, got {text!r}")
    if old:
        v = v * steps if v < 1 else v
    elif "." in text:
        v = (v - flt_offset) * steps
    else:
        v = v - int_offset
    return min(steps, int(v))


def _collect_steps(
    tree: lark.Tree[Any], steps: int, int_offset: int, flt_offset: float, old: bool
) -> list[int]:
    """Resolve every `when` in place to an int step; return the sorted boundaries (A1111's collect_steps)."""
    found = [steps]

    class Collect(lark.Visitor[Any]):
        def scheduled(self, tree: lark.Tree[Any]) -> None:
            when = resolve_when(str(tree.children[-2]), steps, int_offset, flt_offset, old)
            tree.children[-2] = when
            if when >= 1:
                found.append(when)

        def alternate(self, tree: lark.Tree[Any]) -> None:
            found.extend(range(1, steps + 1))

    Collect().visit(tree)
    return sorted(set(found))


def _flatten(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    else:
        for item in x:
            yield from _flatten(item)


def _at_step(step: int, tree: lark.Tree[Any]) -> str:
    """The prompt text in effect at `step` (A1111's AtStep transformer, generators and all)."""

    class AtStep(lark.Transformer[Any, Any]):
        def scheduled(self, args: list[Any]) -> Iterator[Any]:
            before, after, _, when, _ = args
            yield before or () if step <= when else after

        def alternate(self, args: list[Any]) -> Iterator[Any]:
            options = [arg or "" for arg in args]
            yield options[(step - 1) % len(options)]

        def start(self, args: list[Any]) -> str:
            return "".join(_flatten(args))

        def plain(self, args: list[Any]) -> Iterator[str]:
            yield args[0].value

        def __default__(self, data: Any, children: list[Any], meta: Any) -> Iterator[Any]:
            yield from children

    return str(AtStep().transform(tree))


def earley_schedules(
    prompt: str, total: int, int_offset: int, flt_offset: float, old: bool
) -> tuple[tuple[int, str], ...]:
    """(end_at_step, text) pairs of the whole prompt as A1111 parses it; unchanged when it does not parse.
    Cubic in the prompt's length: callers bound what they pass."""
    try:
        tree = _schedule_parser().parse(prompt)
    except (lark.exceptions.LarkError, RecursionError):
        return ((total, prompt),)
    boundaries = _collect_steps(tree, total, int_offset, flt_offset, old)
    return tuple((t, _at_step(t, tree)) for t in boundaries)
