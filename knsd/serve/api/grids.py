"""A1111's image grids: tiles with overlap for `sd upscale` and their recombination, and the plain image
grid of the grid-making scripts (pure, Pillow). Follows `modules/images.py` (split_grid, combine_grid,
image_grid) of AUTOMATIC1111/stable-diffusion-webui v1.10.1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Tile:
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class TileGrid:
    """Where the tiles of an image lie: rows of tiles, each `tile_w` x `tile_h`, overlapping by `overlap`."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    overlap: int
    rows: tuple[tuple[Tile, ...], ...]

    @property
    def count(self) -> int:
        return sum(len(row) for row in self.rows)


def _positions(size: int, tile: int, overlap: int) -> list[int]:
    step = tile - overlap
    count = max(1, math.ceil((size - overlap) / step))
    delta = (size - tile) / (count - 1) if count > 1 else 0
    out = []
    for i in range(count):
        pos = int(i * delta)
        if pos + tile >= size:
            pos = size - tile
        out.append(pos)
    return out


def tile_grid(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> TileGrid:
    """A1111's split_grid geometry: as few tiles as cover the image with at least `overlap` between them."""
    xs = _positions(width, tile_w, overlap)
    rows = tuple(tuple(Tile(x, y) for x in xs) for y in _positions(height, tile_h, overlap))
    return TileGrid(width, height, tile_w, tile_h, overlap, rows)


def split(image: Any, grid: TileGrid) -> list[Any]:
    """The tiles in row-major order (a tile past the image's edge is padded with black, as PIL crops)."""
    return [image.crop((t.x, t.y, t.x + grid.tile_w, t.y + grid.tile_h)) for row in grid.rows for t in row]


def _ramp(length: int, size: int, horizontal: bool) -> Any:
    from PIL import Image

    values = [int(i * 255 / length) for i in range(length)]  # A1111's float32 ramp cast to uint8
    if horizontal:
        return Image.frombytes("L", (length, size), bytes(values) * size)
    return Image.frombytes("L", (size, length), b"".join(bytes([v]) * size for v in values))


def combine(tiles: list[Any], grid: TileGrid) -> Any:
    """A1111's combine_grid: each tile pasted over its left neighbour through a linear ramp across the
    overlap, then the rows over each other the same way."""
    from PIL import Image

    overlap = grid.overlap
    combined = Image.new("RGB", (grid.width, grid.height))
    it = iter(tiles)
    for row in grid.rows:
        band = Image.new("RGB", (grid.width, grid.tile_h))
        for i, tile in enumerate(row):
            image = next(it)
            if i == 0 or overlap == 0:
                band.paste(image, (tile.x, 0))
                continue
            band.paste(
                image.crop((0, 0, overlap, grid.tile_h)), (tile.x, 0), _ramp(overlap, grid.tile_h, True)
            )
            band.paste(image.crop((overlap, 0, grid.tile_w, grid.tile_h)), (tile.x + overlap, 0))
        y = row[0].y
        if y == 0 or overlap == 0:
            combined.paste(band, (0, y))
            continue
        combined.paste(band.crop((0, 0, grid.width, overlap)), (0, y), _ramp(overlap, grid.width, False))
        combined.paste(band.crop((0, overlap, grid.width, grid.tile_h)), (0, y + overlap))
    return combined


def image_grid(images: list[Any], rows: int, background: str = "black") -> Any:
    """A1111's image_grid: the images left to right, top to bottom, `rows` rows."""
    from PIL import Image

    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), background)
    for i, image in enumerate(images):
        grid.paste(image, (i % cols * w, i // cols * h))
    return grid
