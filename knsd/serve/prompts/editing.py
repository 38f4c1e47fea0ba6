"""A1111's prompt editing `[from:to:when]` and alternation `[a|b]`, parsed in linear time (pure).

A1111 parses prompts with an ambiguous grammar and lark's Earley parser (knsd.serve.prompts.earley), which is
cubic in the prompt's length: 1,600 characters of `[a:b:1]` took minutes. This parser reads the same
grammar in one pass:

- a bracket group is the span from an opening bracket to the closing one that balances it; it is a
  construct when its content fits one of the grammar's forms: `(p)`, `(p:p)`, `[p]` (emphasis, kept as
  text), `[p:when]`, `[p:p:when]` (editing; `when` a number), `[p|p...]` (alternation), where every
  bracket inside belongs to a construct;
- every other bracket and colon is a stray character, kept as text; a `|` outside an alternation, or a
  backslash escaping nothing, makes the prompt unparsable, and it is used as written (as A1111 does).

The grammar is ambiguous only where stray characters touch a construct with no text between them
(`[a:1]]:`): A1111's parser may then read the construct as stray text too, by an artefact of its
tie-breaking (it depends on the parity of the stray run). Such runs, up to `CONTESTED_LIMIT` characters
each and `CONTESTED_BUDGET` per prompt, are parsed by A1111's Earley parser alone (bounded work); beyond
that a run keeps its constructs. The tests check the whole against A1111's parser on random prompts.
Results are kept in a cache bounded in bytes (`SCHEDULE_CACHE_BYTES`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import TypeAlias

from knsd.serve.lru import LruCache
from knsd.serve.prompts.earley import earley_schedules, number_pattern, resolve_when

# Brackets nested deeper than this are used as text (A1111 would fail with a RecursionError or take minutes).
MAX_NESTING = 32
# Runs of stray characters and constructs without text between them, up to this length each and this
# many characters per prompt, are parsed by A1111's Earley parser (milliseconds); others keep their constructs.
CONTESTED_LIMIT = 32
CONTESTED_BUDGET = 64
SCHEDULE_CACHE_BYTES = 8 << 20

# `[a:b:N]` needs a number before a closing `]`, `[a|b]` needs a `|`: without either the grammar can only
# give the prompt back unchanged.
_MAY_SCHEDULE = re.compile(r"\||:\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*\]")
_WHEN = re.compile(r"\s*(" + number_pattern() + r")\s*")
_OPEN = {"(": ")", "[": "]"}
_CLOSE = {")": "(", "]": "["}


@dataclass(frozen=True, slots=True)
class Stray:
    """A bracket, colon or bar that belongs to no construct."""

    char: str


@dataclass(slots=True)
class Group:
    """A balanced bracket group: a construct once closed (`kind`), with its parts between separators."""

    opener: str
    parts: list[list[Item]] = field(default_factory=lambda: [[]])
    seps: list[str] = field(default_factory=list)
    poisoned: bool = False  # holds a stray character: cannot be a construct
    kind: str = ""  # "emphasis", "edit" or "alternate" once closed
    when: str = ""  # edit: the number

    def exposed(self, closer: str | None) -> list[Item]:
        """The group read as stray brackets and separators around its parts."""
        out: list[Item] = [Stray(self.opener)]
        for i, part in enumerate(self.parts):
            if i:
                out.append(Stray(self.seps[i - 1]))
            out.extend(part)
        if closer is not None:
            out.append(Stray(closer))
        return out

    def close(self) -> bool:
        """Decide what the balanced group is; False when its content fits no construct."""
        seps, parts = self.seps, self.parts
        if self.poisoned:
            return False
        if self.opener == "(":
            self.kind = "emphasis"
            return all(s == ":" for s in seps) and len(seps) <= 1
        if not seps:
            self.kind = "emphasis"
            return True
        if all(s == "|" for s in seps):
            self.kind = "alternate"
            return True
        if len(seps) > 2 or any(s != ":" for s in seps) or not all(isinstance(x, str) for x in parts[-1]):
            return False
        match = _WHEN.fullmatch("".join(x for x in parts[-1] if isinstance(x, str)))
        if match is None:
            return False
        self.kind, self.when = "edit", match.group(1)
        return True


@dataclass(frozen=True, slots=True)
class Fixed:
    """A contested run, scheduled by A1111's parser."""

    schedule: tuple[tuple[int, str], ...]


Item: TypeAlias = str | Stray | Group | Fixed


class Unparsable(Exception):
    """The grammar cannot read the prompt (a stray `|`, a backslash escaping nothing)."""


def _tokens(prompt: str) -> list[str]:
    """Single special characters and runs of text (escapes included)."""
    out: list[str] = []
    i, n, start = 0, len(prompt), 0
    while i < n:
        c = prompt[i]
        if c == "\\":
            if i + 1 >= n or prompt[i + 1] == "\n":
                raise Unparsable("a backslash escaping nothing")
            i += 2
            continue
        if c in "[]():|":
            if i > start:
                out.append(prompt[start:i])
            out.append(c)
            start = i + 1
        i += 1
    if start < n:
        out.append(prompt[start:])
    return out


def parse(prompt: str) -> list[Item]:
    """The prompt's top-level items: text, stray characters and constructs. Raises Unparsable."""
    top: list[Item] = []
    stack: list[Group] = []

    def add(items: list[Item]) -> None:
        (stack[-1].parts[-1] if stack else top).extend(items)

    def expose(group: Group, closer: str | None) -> None:
        if stack:
            stack[-1].poisoned = True
        add(group.exposed(closer))

    for tok in _tokens(prompt):
        if tok in _OPEN:
            stack.append(Group(tok))
        elif tok in _CLOSE:
            if stack and stack[-1].opener == _CLOSE[tok]:
                group = stack.pop()
                if group.close():
                    add([group])
                else:
                    expose(group, tok)
            else:  # a closing bracket no open group can take: nothing around it balances
                while stack:
                    expose(stack.pop(), None)
                add([Stray(tok)])
        elif tok in ":|" and stack:
            stack[-1].seps.append(tok)
            stack[-1].parts.append([])
        elif tok in ":|":
            top.append(Stray(tok))
        else:
            add([tok])
    while stack:
        expose(stack.pop(), None)
    if any(isinstance(x, Stray) and x.char == "|" for x in top):
        raise Unparsable("a | outside [a|b]")
    return top


def _depth(prompt: str) -> int:
    depth = deepest = 0
    for c in prompt:
        if c in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]":
            depth = max(depth - 1, 0)
    return deepest


def prompt_schedules(
    prompt: str, steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """(end_at_step, text) pairs of prompt editing and alternation; an unparsable prompt is used as is.

    With `hires_steps`, the schedule is for the hires pass: fractions count from 1.0 and integers from the
    end of the first pass (`steps`), as A1111's new timelines do. ValueError when a `when` is not finite.
    """
    if hires_steps is None or use_old_scheduling:
        timeline = _Timeline(steps, 0, 0.0, use_old_scheduling)
    else:
        timeline = _Timeline(hires_steps, steps, 1.0, False)
    if not _MAY_SCHEDULE.search(prompt) or _depth(prompt) > MAX_NESTING:
        return [(timeline.total, prompt)]
    key = (prompt, timeline)
    cached = _CACHE.get(key)
    if cached is None:
        cached = _schedules(prompt, timeline)
        _CACHE.put(key, cached, sys.getsizeof(prompt) + sum(sys.getsizeof(text) for _, text in cached))
    return list(cached)


_CACHE: LruCache[tuple[tuple[int, str], ...]] = LruCache(SCHEDULE_CACHE_BYTES)


def _schedules(prompt: str, timeline: _Timeline) -> tuple[tuple[int, str], ...]:
    try:
        items = _settle(parse(prompt), timeline)
    except Unparsable:
        return ((timeline.total, prompt),)
    found = {timeline.total}
    _collect(items, timeline, found)
    return tuple((t, "".join(_render(items, t, timeline))) for t in sorted(found))


@dataclass(frozen=True, slots=True)
class _Timeline:
    total: int
    int_offset: int
    flt_offset: float
    old: bool

    def when(self, text: str) -> int:
        return resolve_when(text, self.total, self.int_offset, self.flt_offset, self.old)


def _settle(items: list[Item], timeline: _Timeline) -> list[Item]:
    """Contested runs (stray characters touching constructs, no text between) to A1111's own reading."""
    out: list[Item] = []
    run: list[Item] = []
    budget = [CONTESTED_BUDGET]

    def flush() -> None:
        contested = any(isinstance(x, Stray) for x in run) and any(isinstance(x, Group) for x in run)
        raw = "".join(_raw(x) for x in run) if contested else ""
        if contested and len(raw) <= min(CONTESTED_LIMIT, budget[0]):
            budget[0] -= len(raw)
            t = timeline
            out.append(Fixed(earley_schedules(raw, t.total, t.int_offset, t.flt_offset, t.old)))
        else:
            out.extend(run)
        run.clear()

    for item in items:
        if isinstance(item, str):
            flush()
            out.append(item)
        else:
            run.append(item)
    flush()
    return out


def _raw(item: Item) -> str:
    """The item as written."""
    if isinstance(item, str):
        return item
    if isinstance(item, Stray):
        return item.char
    if isinstance(item, Fixed):
        raise TypeError("a settled run has no text of its own")
    inner = "".join(
        (item.seps[i - 1] if i else "") + "".join(_raw(x) for x in part) for i, part in enumerate(item.parts)
    )
    return item.opener + inner + _OPEN[item.opener]


def _collect(items: list[Item], timeline: _Timeline, found: set[int]) -> None:
    """The steps where the prompt changes (A1111's collect_steps)."""
    for item in items:
        if isinstance(item, Fixed):
            found.update(end for end, _ in item.schedule)
        elif isinstance(item, Group):
            if item.kind == "edit":
                when = timeline.when(item.when)
                if when >= 1:
                    found.add(when)
            elif item.kind == "alternate":
                found.update(range(1, timeline.total + 1))
            for part in item.parts:
                _collect(part, timeline, found)


def _render(items: list[Item], step: int, timeline: _Timeline) -> list[str]:
    """The text in effect at `step` (A1111's AtStep)."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Stray):
            out.append(item.char)
        elif isinstance(item, Fixed):
            out.append(next((text for end, text in item.schedule if step <= end), item.schedule[-1][1]))
        elif item.kind == "emphasis":
            out.append(item.opener)
            for i, part in enumerate(item.parts):
                if i:
                    out.append(item.seps[i - 1])
                out.extend(_render(part, step, timeline))
            out.append(_OPEN[item.opener])
        elif item.kind == "edit":
            if step <= timeline.when(item.when):
                if len(item.parts) == 3:
                    out.extend(_render(item.parts[0], step, timeline))
            else:
                out.extend(_render(item.parts[-2], step, timeline))
        else:
            out.extend(_render(item.parts[(step - 1) % len(item.parts)], step, timeline))
    return out


def text_at_step(schedule: list[tuple[int, str]], step: int) -> int:
    """Index of the schedule entry used at denoiser call `step` (0-based): the first with step <= end."""
    for i, (end, _) in enumerate(schedule):
        if step <= end:
            return i
    return 0
