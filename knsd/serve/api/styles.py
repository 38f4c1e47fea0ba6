"""A1111's prompt styles: a `styles.csv` of name,prompt,negative_prompt merged into request prompts.

Ported from AUTOMATIC1111/stable-diffusion-webui `modules/styles.py` (v1.8+: `merge_prompts`,
`extract_styles_from_prompt`) and `modules/processing.py` (styles are applied to every prompt, negative
prompt and hires prompt before anything else reads them).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knsd.errors import InvalidField, UsageError


@dataclass(frozen=True, slots=True)
class PromptStyle:
    """One row of a styles CSV."""

    name: str
    prompt: str
    negative_prompt: str


@dataclass(frozen=True, slots=True)
class StyleDatabase:
    """The styles loaded at start-up, by name, in file order (a later file's row wins, as in A1111)."""

    styles: dict[str, PromptStyle] = field(default_factory=dict)

    def items(self) -> list[dict[str, str]]:
        """`/sdapi/v1/prompt-styles`."""
        return [
            {"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
            for s in self.styles.values()
        ]


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """A style with `{prompt}` wraps the prompt; otherwise it is appended after ", " (A1111's rule)."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles_to_prompt(prompt: str, style_texts: Iterable[str]) -> str:
    """Merge each style text into the prompt in order."""
    for text in style_texts:
        prompt = merge_prompts(text, prompt)
    return prompt


def parse_styles_csv(text: str) -> list[PromptStyle]:
    """Rows of A1111's CSV: header `name,prompt,negative_prompt` (or the legacy `name,text`)."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), skipinitialspace=True)
    fields = reader.fieldnames or []
    if "name" not in fields or not ("prompt" in fields or "text" in fields):
        raise ValueError(f"expected a header name,prompt,negative_prompt, got {','.join(fields)!r}")
    rows = []
    for row in reader:
        prompt = row.get("prompt") if "prompt" in row else row.get("text")
        rows.append(PromptStyle(row["name"] or "", prompt or "", row.get("negative_prompt") or ""))
    return rows


def load_styles(paths: Iterable[Path]) -> StyleDatabase:
    """Read every `--styles-file`; an unreadable or malformed file is a usage error naming it."""
    styles: dict[str, PromptStyle] = {}
    for path in paths:
        try:
            rows = parse_styles_csv(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise UsageError("--styles-file", f"cannot read styles from {path}: {exc}") from exc
        for style in rows:
            styles[style.name] = style
    return StyleDatabase(styles)


def requested_styles(body: dict[str, Any], db: StyleDatabase) -> list[str]:
    """The request's `styles`: a list of known style names (unknown names are a 422, see the README)."""
    names = body.get("styles")
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidField("styles", "a list of style names", names)
    for name in names:
        if name not in db.styles:
            known = ", ".join(repr(n) for n in db.styles) or "none (start knsd serve with --styles-file)"
            raise InvalidField("styles", f"names of styles from /sdapi/v1/prompt-styles: {known}", name)
    return names


def apply_styles(body: dict[str, Any], db: StyleDatabase) -> dict[str, Any]:
    """The request body with its `styles` merged into prompt, negative prompt and hires prompts.

    A1111 merges styles into `prompt` and `negative_prompt`, and into `hr_prompt`/`hr_negative_prompt`
    (an empty hires prompt falls back to the styled main prompt, so only non-empty ones are styled).
    """
    if not isinstance(body, dict):
        return body
    names = requested_styles(body, db)
    if not names:
        return body
    chosen = [db.styles[n] for n in names]
    out = dict(body)
    for key, negative in (
        ("prompt", False),
        ("negative_prompt", True),
        ("hr_prompt", False),
        ("hr_negative_prompt", True),
    ):
        value = body.get(key)
        if key.startswith("hr_") and not value:
            continue
        if value is None:
            value = ""
        if isinstance(value, str):
            out[key] = apply_styles_to_prompt(
                value, [s.negative_prompt if negative else s.prompt for s in chosen]
            )
    return out


_SPACES = re.compile("  +")


def _extract_text(style_text: str, prompt: str) -> tuple[bool, str]:
    stripped_prompt = _SPACES.sub(" ", prompt.strip())
    stripped_style = _SPACES.sub(" ", style_text.strip())
    if "{prompt}" in stripped_style:
        left, _, right = stripped_style.partition("{prompt}")
        right = right.split("{prompt}")[0]
        if stripped_prompt.startswith(left) and stripped_prompt.endswith(right):
            return True, stripped_prompt[len(left) : len(stripped_prompt) - len(right)]
    elif stripped_prompt.endswith(stripped_style):
        rest = stripped_prompt[: len(stripped_prompt) - len(stripped_style)]
        return True, rest.removesuffix(", ")
    return False, prompt


def extract_styles(db: StyleDatabase, prompt: str, negative: str) -> tuple[list[str], str, str]:
    """Which styles a prompt pair was built from, and the pair without them (png-info's "Styles array")."""
    found: list[str] = []
    candidates = list(db.styles.values())
    while True:
        for style in candidates:
            if not style.prompt and not style.negative_prompt:
                continue
            ok_pos, new_prompt = _extract_text(style.prompt, prompt)
            ok_neg, new_negative = _extract_text(style.negative_prompt, negative) if ok_pos else (False, "")
            if ok_pos and ok_neg:
                prompt, negative = new_prompt, new_negative
                candidates.remove(style)
                found.append(style.name)
                break
        else:
            return list(reversed(found)), prompt, negative
