"""A1111's prompt styles: CSV parsing, merging and extraction (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from knsd.errors import InvalidField, UsageError
from knsd.serve.api.styles import (
    PromptStyle,
    StyleDatabase,
    apply_styles,
    extract_styles,
    load_styles,
    merge_prompts,
    parse_styles_csv,
)

DB = StyleDatabase(
    {
        "photo": PromptStyle("photo", "photo of {prompt}, 8k", "blurry"),
        "sharp": PromptStyle("sharp", "sharp focus", "lowres, {prompt}"),
        "empty": PromptStyle("empty", "", ""),
    }
)


def test_merge_rules() -> None:
    assert merge_prompts("photo of {prompt}", " cat ") == "photo of  cat "  # placeholder: no strip
    assert merge_prompts("sharp focus", " cat ") == "cat, sharp focus"
    assert merge_prompts("", " cat ") == "cat"  # any style strips the prompt
    assert merge_prompts("sharp", "") == "sharp"
    assert merge_prompts("a {prompt} b {prompt}", "x") == "a x b x"


def test_apply_styles_in_order_to_every_prompt() -> None:
    body = {"prompt": "cat", "negative_prompt": "ugly", "styles": ["photo", "sharp"], "hr_prompt": "dog"}
    out = apply_styles(body, DB)
    assert out["prompt"] == "photo of cat, 8k, sharp focus"
    assert out["negative_prompt"] == "lowres, ugly, blurry"
    assert out["hr_prompt"] == "photo of dog, 8k, sharp focus"
    assert "hr_negative_prompt" not in out  # empty hires prompts fall back to the styled main prompts
    assert body["prompt"] == "cat"  # the request body is not changed in place
    assert apply_styles({"prompt": "cat"}, DB) == {"prompt": "cat"}
    assert apply_styles({"styles": ["empty"]}, DB)["prompt"] == ""


@pytest.mark.parametrize("styles", [["nope"], "photo", [1], {"a": 1}])
def test_unknown_or_malformed_styles_are_422(styles: object) -> None:
    with pytest.raises(InvalidField) as exc:
        apply_styles({"prompt": "cat", "styles": styles}, DB)
    assert exc.value.field == "styles"


def test_unknown_style_message_lists_known_styles() -> None:
    with pytest.raises(InvalidField, match="'photo', 'sharp', 'empty'"):
        apply_styles({"styles": ["nope"]}, DB)


def test_csv_formats(tmp_path: Path) -> None:
    text = '\ufeffname,prompt,negative_prompt\nphoto,"photo of {prompt}, 8k",blurry\nbare, sharp,\n'
    assert parse_styles_csv(text) == [
        PromptStyle("photo", "photo of {prompt}, 8k", "blurry"),
        PromptStyle("bare", "sharp", ""),
    ]
    assert parse_styles_csv("name,text\nold,legacy text\n") == [PromptStyle("old", "legacy text", "")]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("name,prompt,negative_prompt\nx,one,\ny,two,\n")
    b.write_text("name,prompt,negative_prompt\nx,three,\n")
    db = load_styles([a, b])
    assert [s["prompt"] for s in db.items()] == ["three", "two"]  # a later file's row wins


def test_bad_styles_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--styles-file"):
        load_styles([tmp_path / "missing.csv"])
    bad = tmp_path / "bad.csv"
    bad.write_text("title,body\nx,y\n")
    with pytest.raises(UsageError, match="header"):
        load_styles([bad])


def test_extract_styles_inverts_apply() -> None:
    out = apply_styles({"prompt": "cat", "negative_prompt": "ugly", "styles": ["photo", "sharp"]}, DB)
    found, prompt, negative = extract_styles(DB, out["prompt"], out["negative_prompt"])
    assert (found, prompt, negative) == (["photo", "sharp"], "cat", "ugly")
    assert extract_styles(DB, "just a cat", "") == ([], "just a cat", "")


def test_knsd_serve_exits_2_naming_the_flag(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import knsd_env

    proc = subprocess.run(
        [sys.executable, "-m", "knsd", "serve", "--port", "0", "--styles-file", str(tmp_path / "nope.csv")],
        env=knsd_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--styles-file: cannot read styles from" in proc.stderr and "nope.csv" in proc.stderr
