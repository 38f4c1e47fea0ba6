"""Model sources: one loading path for the tiny model, diffusers folders and single-file checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from knsd.errors import ModelError
from knsd.serve.models.loader import model_hash, resolve_source


def test_tiny_is_a_diffusers_folder_in_the_cache(cache: Path) -> None:
    source = resolve_source("tiny", cache)
    assert source.kind == "folder" and (source.path / "model_index.json").is_file()
    assert source.path.is_relative_to(cache)
    assert len(model_hash(source)) == 8


def test_folder_and_single_files(cache: Path, tmp_path: Path) -> None:
    tiny = resolve_source("tiny", cache).path
    assert resolve_source(str(tiny), cache).kind == "folder"
    ckpt = tmp_path / "v1-5-pruned-emaonly.safetensors"
    ckpt.write_bytes(b"\0" * 10)
    source = resolve_source(str(ckpt), cache)
    assert (source.kind, source.name) == ("single_file", "v1-5-pruned-emaonly")
    # a model volume holding exactly one checkpoint file
    assert resolve_source(str(tmp_path), cache).path == ckpt


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["a.safetensors", "b.ckpt"], "found: a.safetensors, b.ckpt"),
        ([], "found: none"),
    ],
)
def test_ambiguous_or_empty_volume(tmp_path: Path, cache: Path, files: list[str], message: str) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ModelError) as err:
        resolve_source(str(tmp_path), cache)
    assert message in str(err.value)


def test_missing_and_wrong_suffix(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        resolve_source(str(tmp_path / "nope"), cache)
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"\.safetensors or \.ckpt"):
        resolve_source(str(odd), cache)
