"""A1111's prompt syntax as pure functions: emphasis, editing/alternation schedules, AND, extra networks.

Ported from AUTOMATIC1111/stable-diffusion-webui `modules/prompt_parser.py` (commit 28bd8e14, the v1.6+
parser with new timelines), `modules/extra_networks.py` (`parse_prompt`) and
`modules/processing_scripts/comments.py`; tests replay reference vectors produced by A1111's own parser.
"""

from __future__ import annotations

import re
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


def _collect_steps(
    tree: lark.Tree[Any], steps: int, int_offset: int, flt_offset: float, old: bool
) -> list[int]:
    """Resolve every `when` in place to an int step; return the sorted boundaries (A1111's collect_steps)."""
    found = [steps]

    class Collect(lark.Visitor[Any]):
        def scheduled(self, tree: lark.Tree[Any]) -> None:
            s = tree.children[-2]
            v = float(str(s))
            if old:
                v = v * steps if v < 1 else v
            elif "." in str(s):
                v = (v - flt_offset) * steps
            else:
                v = v - int_offset
            when = min(steps, int(v))
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


def prompt_schedules(
    prompt: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """(end_at_step, text) pairs of prompt editing and alternation; an unparsable prompt is used as is.

    With `hires_steps`, the schedule is for the hires pass: fractions count from 1.0 and integers from the
    end of the first pass (`steps`), as A1111's new timelines do.
    """
    return list(_schedules(prompt, steps, hires_steps, use_old_scheduling))


# `[a:b:N]` needs a number before a closing `]`, `[a|b]` needs a `|`: without either the grammar can only
# give the prompt back unchanged, so the (slow, Earley) parse is skipped.
_MAY_SCHEDULE = re.compile(r"\||:\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*\]")


@lru_cache(maxsize=512)
def _schedules(
    prompt: str, steps: int, hires_steps: int | None, use_old_scheduling: bool
) -> tuple[tuple[int, str], ...]:
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, total = 0, 0.0, steps
    else:
        int_offset, flt_offset, total = steps, 1.0, hires_steps
    if not _MAY_SCHEDULE.search(prompt):
        return ((total, prompt),)
    pieces = _top_level_pieces(prompt)
    if pieces is None or len(pieces) == 1:
        return _parsed_schedules(prompt, total, int_offset, flt_offset, use_old_scheduling)
    # The Earley parse is cubic in the prompt's length: a balanced prompt is parsed group by group (each
    # top-level bracket group on its own) and the schedules are joined; property-tested against the whole.
    parts = [_piece_schedule(p, total, int_offset, flt_offset, use_old_scheduling) for p in pieces]
    if any(part is None for part in parts):
        return ((total, prompt),)
    boundaries = sorted({end for part in parts if part for end, _ in part})
    return tuple((t, "".join(_text_at(part, t) for part in parts if part)) for t in boundaries)


def _text_at(schedule: tuple[tuple[int, str], ...], step: int) -> str:
    return next((text for end, text in schedule if step <= end), schedule[-1][1])


def _top_level_pieces(prompt: str) -> list[str] | None:
    """Text runs and top-level bracket groups, or None when brackets do not nest and balance."""
    pieces: list[str] = []
    stack: list[str] = []
    start = i = 0
    while i < len(prompt):
        c = prompt[i]
        if c == "\\":
            i += 2
            continue
        if c in "([":
            if not stack and i > start:
                pieces.append(prompt[start:i])
                start = i
            stack.append(c)
        elif c in ")]":
            if not stack or stack.pop() != ("(" if c == ")" else "["):
                return None
            if not stack:
                pieces.append(prompt[start : i + 1])
                start = i + 1
        i += 1
    if stack:
        return None
    if start < len(prompt):
        pieces.append(prompt[start:])
    return pieces


@lru_cache(maxsize=2048)
def _piece_schedule(
    piece: str, total: int, int_offset: int, flt_offset: float, old: bool
) -> tuple[tuple[int, str], ...] | None:
    """One piece's schedule; None when it does not parse."""
    if not _MAY_SCHEDULE.search(piece):
        return ((total, piece),)
    if _depth(piece) > MAX_NESTING:
        return None
    try:
        tree = _schedule_parser().parse(piece)
        boundaries = _collect_steps(tree, total, int_offset, flt_offset, old)
        return tuple((t, _at_step(t, tree)) for t in boundaries)
    except (lark.exceptions.LarkError, RecursionError):
        return None


def _parsed_schedules(
    prompt: str, total: int, int_offset: int, flt_offset: float, use_old_scheduling: bool
) -> tuple[tuple[int, str], ...]:
    if _depth(prompt) > MAX_NESTING:
        return ((total, prompt),)
    try:
        tree = _schedule_parser().parse(prompt)
        boundaries = _collect_steps(tree, total, int_offset, flt_offset, use_old_scheduling)
        return tuple((t, _at_step(t, tree)) for t in boundaries)
    except (lark.exceptions.LarkError, RecursionError):
        return ((total, prompt),)


# Brackets nested deeper than this are used as text (A1111 would fail with a RecursionError or take minutes).
MAX_NESTING = 32


def _depth(prompt: str) -> int:
    depth = deepest = 0
    for c in prompt:
        if c in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]":
            depth = max(depth - 1, 0)
    return deepest


def text_at_step(schedule: list[tuple[int, str]], step: int) -> int:
    """Index of the schedule entry used at denoiser call `step` (0-based): the first with step <= end."""
    for i, (end, _) in enumerate(schedule):
        if step <= end:
            return i
    return 0


_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
ROUND, SQUARE = 1.1, 1 / 1.1


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """A1111's (text, weight) list: `(a)` x1.1, `[a]` /1.1, `(a:w)` xw, `\\(` literal, BREAK as ("BREAK", -1).

    Unclosed brackets apply to the end; adjacent runs of equal weight are merged. A malformed weight such
    as `(a:1.2.3)` raises ValueError, as A1111's `float()` does.
    """
    res: list[list[Any]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in _ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, ROUND)
    for pos in square_brackets:
        multiply_range(pos, SQUARE)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return [(str(t), w) for t, w in res]


_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def parse_extra_networks(prompt: str) -> tuple[str, dict[str, list[list[str]]]]:
    """Remove `<type:arg1:arg2...>` tags; return the prompt and each tag's arguments by network type."""
    found: dict[str, list[list[str]]] = {}

    def take(m: re.Match[str]) -> str:
        found.setdefault(m.group(1), []).append(m.group(2).split(":"))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), found


_AND = re.compile(r"\bAND\b")
_AND_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Composable-diffusion sub-prompts `a AND b:0.5` as (text, weight); one item when there is no AND."""
    parts: list[tuple[str, float]] = []
    for sub in _AND.split(prompt):
        m = _AND_WEIGHT.search(sub)
        text, weight = m.groups() if m is not None else (sub, None)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


def strip_comments(text: str) -> str:
    """A1111 v1.8+ prompt comments: `#` to the end of the line is removed."""
    text = re.sub("(^|\n)#[^\n]*(\n|$)", "\n", text)
    return re.sub("#[^\n]*(\n|$)", "\n", text)
