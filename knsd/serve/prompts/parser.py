"""A1111's prompt syntax as pure functions: emphasis, AND, extra networks, comments (editing and
alternation schedules: knsd.serve.prompts.editing).

Ported from AUTOMATIC1111/stable-diffusion-webui `modules/prompt_parser.py` (commit 28bd8e14),
`modules/extra_networks.py` (`parse_prompt`) and `modules/processing_scripts/comments.py`; tests replay
reference vectors produced by A1111's own parser.
"""

from __future__ import annotations

import math
import re
from typing import Any

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


# Element-multiplications done one by one in A1111's order (bit-exact); past this, weights are computed
# from the brackets' spans in linear time, equal to within floating-point rounding.
EXACT_WORK = 50_000


def _weight(text: str) -> float:
    """A `(text:weight)` weight: A1111's float(), which must also be finite here (a 400-digit weight is
    infinite and would give a black image)."""
    value = float(text)  # ValueError for a malformed one such as 1.2.3, as in A1111
    if not math.isfinite(value):
        raise ValueError(f"the weight {text[:20]!r}... is not a finite number")
    return value


def _spans(text: str) -> tuple[list[list[Any]], list[tuple[int, int, float]]]:
    """A1111's parse: the (text, 1.0) runs and each bracket's multiplier over [start, end) of them, in the
    order A1111 applies them (as each bracket closes, then the unclosed ones)."""
    res: list[list[Any]] = []
    spans: list[tuple[int, int, float]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []
    for m in _ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            spans.append((round_brackets.pop(), len(res), _weight(weight)))
        elif token == ")" and round_brackets:
            spans.append((round_brackets.pop(), len(res), ROUND))
        elif token == "]" and square_brackets:
            spans.append((square_brackets.pop(), len(res), SQUARE))
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    spans += [(pos, len(res), ROUND) for pos in round_brackets]
    spans += [(pos, len(res), SQUARE) for pos in square_brackets]
    return res, spans


def check_attention(text: str) -> None:
    """Raise ValueError for a malformed weight, or weights that are or multiply to a non-finite number
    (`(a:1e999)`, thousands of nested brackets): A1111 would return a black image."""
    if not all(math.isfinite(w) for _, w in parse_prompt_attention(text)):
        raise ValueError("the weights of nested brackets multiply to a number that is not finite")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """A1111's (text, weight) list: `(a)` x1.1, `[a]` /1.1, `(a:w)` xw, `\\(` literal, BREAK as ("BREAK", -1).

    Unclosed brackets apply to the end; adjacent runs of equal weight are merged. A malformed weight such
    as `(a:1.2.3)` raises ValueError, as A1111's `float()` does; so does a non-finite one.
    """
    res, spans = _spans(text)
    if sum(end - start for start, end, _ in spans) <= EXACT_WORK:
        for start, end, multiplier in spans:
            for p in range(start, end):
                res[p][1] *= multiplier
    else:
        _apply_in_linear_time(res, spans)
    if not res:
        res = [["", 1.0]]
    merged = [res[0]]
    for item in res[1:]:
        if merged[-1][1] == item[1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(str(t), w) for t, w in merged]


def _apply_in_linear_time(res: list[list[Any]], spans: list[tuple[int, int, float]]) -> None:
    """Each run's weight times the product of the multipliers over it: sums of logarithms over the spans
    (a difference array), with zeros and signs counted apart."""
    n = len(res)
    logs, zeros, signs = [0.0] * (n + 1), [0] * (n + 1), [0] * (n + 1)
    for start, end, multiplier in spans:
        if multiplier == 0:
            zeros[start] += 1
            zeros[end] -= 1
            continue
        logs[start] += math.log(abs(multiplier))
        logs[end] -= math.log(abs(multiplier))
        if multiplier < 0:
            signs[start] += 1
            signs[end] -= 1
    total, zero, sign = 0.0, 0, 0
    for p in range(n):
        total, zero, sign = total + logs[p], zero + zeros[p], sign + signs[p]
        factor = 0.0 if zero else (math.exp(total) if total < 709 else math.inf) * (-1 if sign % 2 else 1)
        res[p][1] *= factor


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
