"""Labels around an image grid, laid out as A1111's draw_grid_annotations does (pure, Pillow): column labels
above, row labels to the left (3/4 of a cell wide), each label's lines centred, inactive ones grey and struck
through; cells `margin` pixels apart. The font is Pillow's bundled one (A1111 ships Roboto), so the pixels of
the text differ from A1111's, the geometry follows it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Label:
    text: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class Colours:
    active: str = "#000000"
    inactive: str = "#999999"
    background: str = "#ffffff"


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(max(size, 1))


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if draw.textlength(line, font=font) <= width:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def annotate(
    grid: Any,
    width: int,
    height: int,
    columns: list[list[Label]],
    rows: list[list[Label]],
    margin: int = 0,
    colours: Colours = Colours(),
) -> Any:
    """`grid` (cells of width x height) with `columns` labels above and `rows` labels beside it."""
    from PIL import Image, ImageDraw

    size = (width + height) // 25
    spacing = size // 2
    font = _font(size)
    pad_left = width * 3 // 4 if any(label.text for labels in rows for label in labels) else 0
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def lay(labels: list[Label], allowed: int) -> list[tuple[Label, tuple[int, int]]]:
        out = []
        for label in labels:
            for text in _wrap(measure, label.text, font, allowed):
                box = measure.multiline_textbbox((0, 0), text, font=font)
                out.append((Label(text, label.active), (int(box[2] - box[0]), int(box[3] - box[1]))))
        return out

    cols_laid = [lay(labels, width) for labels in columns]
    rows_laid = [lay(labels, pad_left) for labels in rows]
    col_heights = [sum(s[1] + spacing for _, s in laid) - spacing for laid in cols_laid]
    row_heights = [sum(s[1] + spacing for _, s in laid) - spacing * len(laid) for laid in rows_laid]
    pad_top = max(col_heights) + spacing * 2 if sum(col_heights) > 0 else 0
    ncols, nrows = grid.width // width, grid.height // height
    result = Image.new(
        "RGB",
        (grid.width + pad_left + margin * (ncols - 1), grid.height + pad_top + margin * (nrows - 1)),
        colours.background,
    )
    for r in range(nrows):
        for c in range(ncols):
            cell = grid.crop((width * c, height * r, width * (c + 1), height * (r + 1)))
            result.paste(cell, (pad_left + (width + margin) * c, pad_top + (height + margin) * r))
    draw = ImageDraw.Draw(result)

    def write(x: float, y: float, laid: list[tuple[Label, tuple[int, int]]]) -> None:
        for label, (w, h) in laid:
            colour = colours.active if label.active else colours.inactive
            draw.multiline_text(
                (x, y + h / 2), label.text, font=font, fill=colour, anchor="mm", align="center"
            )
            if not label.active:
                draw.line((x - w // 2, y + h // 2, x + w // 2, y + h // 2), fill=colour, width=4)
            y += h + spacing

    for c, laid in enumerate(cols_laid):
        write(pad_left + (width + margin) * c + width / 2, pad_top / 2 - col_heights[c] / 2, laid)
    for r, laid in enumerate(rows_laid):
        write(pad_left / 2, pad_top + (height + margin) * r + height / 2 - row_heights[r] / 2, laid)
    return result


def prompt_matrix_labels(parts: list[str]) -> tuple[list[list[Label]], list[list[Label]]]:
    """A1111's draw_prompt_matrix: the first half of the variable parts across, the rest down."""
    variable = parts[1:]
    boundary = (len(variable) + 1) // 2
    across, down = variable[:boundary], variable[boundary:]
    columns = [
        [Label(x, bool(pos & (1 << i))) for i, x in enumerate(across)] for pos in range(1 << len(across))
    ]
    rows = [[Label(x, bool(pos & (1 << i))) for i, x in enumerate(down)] for pos in range(1 << len(down))]
    return columns, rows
