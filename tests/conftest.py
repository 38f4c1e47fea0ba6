from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One knsd cache for the session, so the tiny model is built once."""
    path = tmp_path_factory.mktemp("knsd-cache")
    os.environ["KNSD_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(cache: Path) -> Iterator[object]:
    """The tiny model, loaded once through the same code path as a real checkpoint."""
    from knsd.serve.loader import load_model

    yield load_model("tiny", cache, device="cpu")
