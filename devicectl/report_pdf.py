"""The report as A4 PDF pages, for the patient's file: the blocks of
report_content.py laid out in monospace (so widths are known and tables line
up), a running header with the page count, the chain's head in every footer,
and the figures scaled onto the pages.

Nothing is typeset as math: every string is drawn with parse_math off, so a
`$` in a name, a note or a profile prints as itself.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devicectl.report_content import Block, FigureRef, Grid, Heading, Para, ReportContent

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: ISO 216 A4, in inches (210 × 297 mm).
A4_IN: Final = (210 / 25.4, 297 / 25.4)
MARGIN_IN: Final = 0.6
FONT_PT: Final = 7.6
LINE_IN: Final = FONT_PT * 1.32 / 72
#: DejaVu Sans Mono's advance is 0.602 em.
CHAR_IN: Final = FONT_PT * 0.602 / 72
COLS: Final = int((A4_IN[0] - 2 * MARGIN_IN) / CHAR_IN)
TOP_IN: Final = MARGIN_IN + 3 * LINE_IN  # below the running header
BOTTOM_IN: Final = A4_IN[1] - MARGIN_IN - 2 * LINE_IN  # above the footer
#: A figure takes at most this much of a page's height.
FIGURE_MAX_IN: Final = 5.0
_COLORS: Final = {"": "#222222", "note": "#666666", "warn": "#8a5a00", "bad": "#aa0000",
                  "head": "#000000"}


@dataclass(frozen=True, slots=True)
class _Line:
    y_in: float
    text: str
    style: str
    bold: bool = False
    size: float = FONT_PT


@dataclass(frozen=True, slots=True)
class _Image:
    y_in: float
    height_in: float
    width_in: float
    name: str


@dataclass
class _Layout:
    pages: list[list[_Line | _Image]]
    y_in: float = TOP_IN

    def room(self, height_in: float) -> None:
        if self.y_in + height_in > BOTTOM_IN and self.y_in > TOP_IN:
            self.pages.append([])
            self.y_in = TOP_IN

    def line(self, text: str, style: str = "", *, bold: bool = False,
             size: float = FONT_PT) -> None:
        height = LINE_IN * size / FONT_PT
        self.room(height)
        self.pages[-1].append(_Line(self.y_in, text, style, bold, size))
        self.y_in += height

    def gap(self, lines: float = 0.5) -> None:
        self.y_in += LINE_IN * lines


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for part in text.splitlines() or [""]:
        out += textwrap.wrap(part, max(width, 4), break_long_words=True,
                             break_on_hyphens=False) or [""]
    return out


def _widths(grid: Grid) -> list[int]:
    n = len(grid.head)
    natural = [max([len(grid.head[i])] + [len(r[i]) for r in grid.rows if i < len(r)])
               for i in range(n)]
    room = COLS - 2 * (n - 1)
    widths = [min(w, 28) for w in natural]
    if grid.wide is not None:
        others = sum(w for i, w in enumerate(widths) if i != grid.wide)
        widths[grid.wide] = max(20, room - others)
    while sum(widths) > room:  # shrink the widest column until the row fits
        i = max(range(n), key=lambda k: widths[k])
        widths[i] -= 1
    return widths


def _grid(layout: _Layout, grid: Grid) -> None:
    widths = _widths(grid)

    def row(cells: Sequence[str], bold: bool, style: str) -> None:
        wrapped = [_wrap(c, w) for c, w in zip(cells, widths, strict=False)]
        for k in range(max(len(c) for c in wrapped)):
            layout.line("  ".join((c[k] if k < len(c) else "").ljust(w)
                                  for c, w in zip(wrapped, widths, strict=False)).rstrip(),
                        style, bold=bold)

    row(grid.head, True, "head")
    layout.line("  ".join("-" * w for w in widths), "note")
    for cells in grid.rows:
        row(cells, False, "bad" if grid.cls == "fault" else "")
    layout.gap()


def _image_size(png: bytes) -> tuple[int, int]:
    from matplotlib.image import imread

    height, width = imread(io.BytesIO(png)).shape[:2]
    return int(width), int(height)


def _layout(content: ReportContent, figures: dict[str, bytes]) -> list[list[_Line | _Image]]:
    layout = _Layout(pages=[[]])
    layout.line(content.title, "head", bold=True, size=FONT_PT * 1.6)
    layout.gap()
    label = max(len(k) for k, _ in content.header)
    for key, value in content.header:
        for i, part in enumerate(_wrap(value, COLS - label - 2)):
            layout.line(f"{key if i == 0 else '':<{label}}  {part}", bold=False)
    layout.gap()
    blocks = content.blocks
    for i, block in enumerate(blocks):
        if isinstance(block, Heading) and i + 1 < len(blocks):
            follow = blocks[i + 1]  # a heading stays on the page of what follows it
            after = (_figure_size(figures[follow.name])[1] if isinstance(follow, FigureRef)
                     else 4 * LINE_IN)
            layout.room(3 * LINE_IN + after)
        _block(layout, block, figures)
    return layout.pages


def _figure_size(png: bytes) -> tuple[float, float]:
    """The figure's width and height on the page, inches."""
    width_px, height_px = _image_size(png)
    width_in = A4_IN[0] - 2 * MARGIN_IN
    height_in = width_in * height_px / width_px
    if height_in > FIGURE_MAX_IN:
        height_in = FIGURE_MAX_IN
        width_in = height_in * width_px / height_px
    return width_in, height_in


def _block(layout: _Layout, block: Block, figures: dict[str, bytes]) -> None:
    if isinstance(block, Heading):
        layout.gap()
        layout.line(block.text, "head", bold=True, size=FONT_PT * 1.25)
    elif isinstance(block, Para):
        for part in _wrap(block.text, COLS):
            layout.line(part, block.style)
        layout.gap(0.3)
    elif isinstance(block, Grid):
        _grid(layout, block)
    elif isinstance(block, FigureRef):
        width_in, height_in = _figure_size(figures[block.name])
        layout.room(height_in)
        layout.pages[-1].append(_Image(layout.y_in, height_in, width_in, block.name))
        layout.y_in += height_in + LINE_IN


def _text(fig: Figure, x_in: float, y_in: float, text: str, **kw: Any) -> None:
    fig.text(x_in / A4_IN[0], 1 - y_in / A4_IN[1], text, va="top", family="monospace",
             parse_math=False, usetex=False, **kw)


def _draw(page: list[_Line | _Image], number: int, total: int, content: ReportContent,
          figures: dict[str, bytes]) -> Figure:
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    fig = Figure(figsize=A4_IN)
    _text(fig, MARGIN_IN, MARGIN_IN, content.running, fontsize=FONT_PT, color="#444444")
    _text(fig, A4_IN[0] - MARGIN_IN, MARGIN_IN, f"page {number} of {total}", fontsize=FONT_PT,
          color="#444444", ha="right")
    fig.add_artist(_rule(MARGIN_IN + 1.3 * LINE_IN))
    _text(fig, MARGIN_IN, A4_IN[1] - MARGIN_IN - LINE_IN,
          f"records' hash chain head {content.chain_head}", fontsize=FONT_PT * 0.85,
          color="#444444")
    for item in page:
        if isinstance(item, _Line):
            _text(fig, MARGIN_IN, item.y_in, item.text, fontsize=item.size,
                  color=_COLORS.get(item.style, "#222222"),
                  fontweight="bold" if item.bold else "normal")
        else:
            left = (A4_IN[0] - item.width_in) / 2
            ax = fig.add_axes((left / A4_IN[0], 1 - (item.y_in + item.height_in) / A4_IN[1],
                               item.width_in / A4_IN[0], item.height_in / A4_IN[1]))
            ax.imshow(imread(io.BytesIO(figures[item.name])), interpolation="antialiased")
            ax.set_axis_off()
    return fig


def _rule(y_in: float) -> Any:
    from matplotlib.lines import Line2D

    y = 1 - y_in / A4_IN[1]
    return Line2D([MARGIN_IN / A4_IN[0], 1 - MARGIN_IN / A4_IN[0]], [y, y], linewidth=0.5,
                  color="#999999")


def write_pdf(path: Path, content: ReportContent, figures: dict[str, bytes]) -> int:
    """Writes the report as A4 pages; returns how many."""
    from matplotlib.backends.backend_pdf import PdfPages

    pages = [p for p in _layout(content, figures) if p]
    with PdfPages(path, metadata={"Title": content.title, "Creator": "devicectl"}) as pdf:
        for number, page in enumerate(pages, start=1):
            pdf.savefig(_draw(page, number, len(pages), content, figures))
    return len(pages)
