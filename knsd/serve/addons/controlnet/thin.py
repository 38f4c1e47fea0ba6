"""Edge maps kept one pixel wide through a resize (the extension's `lvminthin`: Lvmin Zhang's thinning).

`naked_nms` keeps a pixel where it is a maximum along at least one of the four line directions; `thin`
deletes pixels matched by hit-or-miss patterns until nothing changes (at most 32 rounds), then, when the
map was enlarged, prunes spur end points once. In a pattern 1 is an edge pixel, -1 background, 0 either.
"""

from __future__ import annotations

from typing import Any

Array = Any

# Two base patterns and their quarter turns: a pixel on the edge of a stroke, with background on one side.
_THIN = (((-1, -1, -1), (0, 1, 0), (1, 1, 1)), ((0, -1, -1), (1, 1, -1), (0, 1, 0)))
# A one-pixel spur: an end point whose only neighbours lie on one side.
_PRUNE = (((-1, -1, -1), (-1, 1, -1), (0, 0, -1)), ((-1, -1, -1), (-1, 1, -1), (-1, 0, 0)))


def _turns(patterns: tuple[Any, ...]) -> list[Array]:
    import numpy as np

    bases = [np.array(p, dtype=np.int32) for p in patterns]
    return [np.rot90(b, k=k) for k in range(4) for b in bases]


def _sweep(x: Array, kernels: list[Array]) -> bool:
    """Delete every pixel each pattern matches, in turn, in place; True when something was deleted."""
    import cv2
    import numpy as np

    changed = False
    for kernel in kernels:
        hits = np.where(cv2.morphologyEx(x, cv2.MORPH_HITMISS, kernel) > 127)
        x[hits] = 0
        changed = changed or hits[0].size > 0
    return changed


def thin(x: Array, prune: bool = True) -> Array:
    """Thin a binary (0/255) uint8 map to one-pixel lines."""
    y = x.copy()
    kernels = _turns(_THIN)
    for _ in range(32):
        if not _sweep(y, kernels):
            break
    if prune:
        _sweep(y, _turns(_PRUNE))
    return y


def naked_nms(x: Array) -> Array:
    """Non-maximum suppression without smoothing: a pixel survives where it equals its dilation along a
    horizontal, vertical or diagonal line of three."""
    import cv2
    import numpy as np

    lines = (
        ((0, 0, 0), (1, 1, 1), (0, 0, 0)),
        ((0, 1, 0), (0, 1, 0), (0, 1, 0)),
        ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        ((0, 0, 1), (0, 1, 0), (1, 0, 0)),
    )
    y = np.zeros_like(x)
    for line in lines:
        np.putmask(y, cv2.dilate(x, kernel=np.array(line, dtype=np.uint8)) == x, x)
    return y
