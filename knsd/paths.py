"""Where knsd keeps its cache (the tiny model, local runtime state)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$KNSD_CACHE`, else `$XDG_CACHE_HOME/knsd`, else `~/.cache/knsd`."""
    explicit = os.environ.get("KNSD_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "knsd"
