from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist (`make test`), share the cores out between the workers (and the pods they start), as
# the local runtime does between its pods: oversubscribed OpenMP threads spin and slow everyone down.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One knsd cache for the session (per xdist worker: its own basetemp), so the tiny model is built once."""
    path = tmp_path_factory.mktemp("knsd-cache")
    os.environ["KNSD_CACHE"] = str(path)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _share_tiny_model(tmp_path_factory.getbasetemp().parent / "knsd-models", path)
    return path


def _share_tiny_model(shared: Path, cache: Path) -> None:
    """Parallel workers: build the tiny model once for the run (the first worker, under a lock) and link it
    into each worker's cache, rather than once per worker, and by every pod at once in local-runtime tests."""
    from knsd.serve.models.tiny import ensure_tiny_model, tiny_model_dir

    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = ensure_tiny_model(shared)
    link = tiny_model_dir(cache)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(built, target_is_directory=True)


@pytest.fixture(scope="session")
def tiny_model(cache: Path) -> Iterator[object]:
    """The tiny model, loaded once through the same code path as a real checkpoint.

    Servers are built on it, and a server's add-ons change it: the tiny embedding's tokens are added to its
    tokenizer and its text encoder's token table grows (514 -> 516 rows). Tests that need the model exactly
    as built (to write a checkpoint of it) use `pristine_tiny_model`.
    """
    from knsd.serve.models.loader import load_model

    yield load_model("tiny", cache, device="cpu")


@pytest.fixture(scope="session")
def pristine_tiny_model(cache: Path) -> Iterator[object]:
    """A second load of the tiny model that is never handed to a server (nor given add-ons), so it stays
    as built whatever ran before in this process; don't pass it to `create_app` or `AddOns`."""
    from knsd.serve.models.loader import load_model

    yield load_model("tiny", cache, device="cpu")
