"""Unknown add-on names rescan their folder at most once per interval; explicit refreshes always scan."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.models import ControlNetStore
from knsd.serve.addons.files import scan
from knsd.serve.addons.rescan import Rescans


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_miss_rescans_then_once_per_interval() -> None:
    clock = Clock()
    rescans = Rescans(5.0, clock)
    assert rescans.due()
    clock.now += 4.9
    assert not rescans.due()
    clock.now += 0.2
    assert rescans.due()
    assert not rescans.due()


def write_model(path: Path) -> None:
    header = json.dumps({"__metadata__": {}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))


def test_a_flood_of_unknown_names_walks_the_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ControlNetStore(tmp_path)
    clock = Clock()
    store._rescans = Rescans(5.0, clock)
    walks: list[Path] = []

    def counted(folder: Path, *args: object, **kwargs: object) -> object:
        walks.append(folder)
        return scan(folder, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("knsd.serve.addons.controlnet.models.scan", counted)
    for i in range(50):
        with pytest.raises(InvalidField):
            store.resolve(f"missing-{i}", "controlnet_model")
    assert len(walks) == 1
    write_model(tmp_path / "canny.safetensors")  # copied onto the volume within the interval
    with pytest.raises(InvalidField):
        store.resolve("canny", "controlnet_model")
    clock.now += 5.0  # the next miss after the interval finds it
    assert store.resolve("canny", "controlnet_model").item.name == "canny"
    assert len(walks) == 2
    store.refresh()  # an explicit refresh always scans
    assert len(walks) == 3
