"""The full layout, drawn cheaply: each part of the screen is kept as rendered lines
and rendered again only when what it shows has changed.

TerminalView.render builds the same screen with rich's layout in one go (tables
inside a grid inside a panel): about 7 ms a frame of pure Python, 7 % of a core at
10 Hz, most of it measuring and padding cells that did not change. Here the head, the
banners, the zones table, the coverage map, the events and the keys are each rendered
by the view's own builders, at the width the panel gives them, once per change; the
pen's figures (which change with every stroke) are laid out as lines directly, the
way rich's grid lays them out; and a frame that shows nothing new is not drawn at all.
A frame taller than the terminal gives up the events panel's oldest lines, then the
map (fit_height), where rich's Live would cut its bottom: the newest events, the keys.
tests/test_monitor_frame.py holds the two paths to the same screen, frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType
from rich.panel import Panel
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from devicectl.monitor.terminal import (
    BODY_GAP,
    PEN_LABEL_STYLE,
    PEN_WIDTH,
    TerminalView,
    ZoneRow,
    clock,
)
from devicectl.plain import plain

Line = list[Segment]
#: Where a count shows in the zones table: (line, segment, row, characters shown).
Slot = tuple[int, int, int, int]


class Lines:
    """Lines already rendered, drawn as they are."""

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        new_line = Segment.line()
        for line in self.lines:
            yield from line
            yield new_line


class FullFrame:
    """The full layout of `view` at a console's width, from parts kept as lines."""

    def __init__(self, view: TerminalView, console: Console) -> None:
        self._view = view
        self._console = console
        self._parts: dict[str, tuple[Hashable, list[Line]]] = {}
        self._shown: Hashable = None
        #: (what the zones table showed but the counts, its lines, where its counts are)
        self._zones_cache: tuple[Hashable, list[Line], list[Slot]] | None = None
        #: frames drawn, parts rendered, zones tables rendered (the tests read them)
        self.drawn = 0
        self.rendered = 0
        self.zones_rendered = 0

    def frame(self, status: Mapping[str, Any], width: int,
              height: int | None = None) -> Lines | None:
        """The screen for `status`, or None when it would show what the last one showed
        (`height`: the terminal's rows, where rich's Live cuts a taller frame short)."""
        view = self._view
        inner = width - 4  # the panel's borders and its padding
        pen_rows = view.pen_rows(status)
        keys = (
            (width, height),
            self._head_key(status),
            self._banners_key(status),
            tuple(tuple(z.items()) for z in status.get("zones") or ()),
            tuple((k, v.plain, str(v.style)) for k, v in pen_rows),
            self._coverage_key(status),
            view.events_version,
            view.prompt,
            view.title,
        )
        if keys == self._shown:
            return None
        self._shown = keys
        self.drawn += 1
        options = self._console.options.update(width=inner, highlight=False)
        zones_w = inner - PEN_WIDTH - BODY_GAP
        lines: list[Line] = []
        lines += self._part("head", keys[1], lambda: view.head(status), options)
        lines += self._part("banners", keys[2], lambda: _Group(view.banners(status)), options)
        zones = self._zones(status, options.update(width=zones_w, justify="left"))
        pen = pen_lines(pen_rows) or self._console.render_lines(
            view.pen_table(status), options.update(width=PEN_WIDTH, justify="left"))
        lines += _side_by_side(zones, zones_w, pen)
        coverage = self._part("coverage", keys[5], lambda: view.coverage_panel(status), options)
        events = self._part("events", keys[6], view.events_panel, options)
        prompt = self._part("prompt", keys[7], view.prompt_line, options)
        if height is not None:  # what does not fit goes, never the keys below it
            coverage, events = fit_height(height - 2 - len(lines) - len(prompt),
                                          coverage, events)
        lines += coverage + events + prompt
        top, left, right, bottom = self._edges(width)
        return Lines([top, *([*left, *line, *right] for line in lines), bottom])

    def forget(self) -> None:
        """Another layout was drawn over this one: the next frame is drawn whatever it shows."""
        self._shown = None

    # --- the parts ---------------------------------------------------------

    def _part(self, name: str, key: Hashable, build: Callable[[], RenderableType | None],
              options: ConsoleOptions) -> list[Line]:
        cached = self._parts.get(name)
        if cached is not None and cached[0] == (key, options.max_width):
            return cached[1]
        renderable = build()
        lines = [] if renderable is None else self._console.render_lines(renderable, options)
        self._parts[name] = ((key, options.max_width), lines)
        self.rendered += 1
        return lines

    def _zones(self, status: Mapping[str, Any], options: ConsoleOptions) -> list[Line]:
        """The zones table. Its strokes column is as wide as its header for any count
        under ten million, and right-justified: a count that changes (with every stroke)
        moves nothing else. So rich renders the table with a placeholder as long as each
        count in its cell (a private-use character, one cell wide like a digit), again
        only when anything else in it changed, and each frame writes the counts in. (A
        table squeezed below even its figures' width, narrower than the full layout is
        ever drawn, shows only the start of a count, or none of it: then only that start
        is written.)"""
        rows = self._view.zone_rows(status)
        counts = [row[-1] for row in rows]
        key: Hashable = (tuple(self._row_key(row, options) for row in rows), options.max_width)
        cached = self._zones_cache
        if cached is None or cached[0] != key:
            self.zones_rendered += 1
            marked = [(*row[:-1], _mark(i) * len(row[-1])) for i, row in enumerate(rows)]
            table = self._view.zones_table(status, marked)
            lines = self._console.render_lines(table, options)
            slots = _count_slots(lines, [len(c) for c in counts])
            if slots is None:  # a count broken over lines: no placeholders, every frame
                lines = self._console.render_lines(self._view.zones_table(status, rows),
                                                   options)
                slots, key = [], None  # (a key made above is a tuple: never None)
            cached = self._zones_cache = (key, lines, slots)
        _key, lines, slots = cached
        if not slots:
            return lines
        lines = list(lines)
        for n, k, i, shown in slots:
            line = lines[n] = list(lines[n])
            seg = line[k]
            text = seg.text.replace(_mark(i) * shown, counts[i][:shown])
            line[k] = Segment(text, seg.style, seg.control)
        return lines

    def _row_key(self, row: ZoneRow, options: ConsoleOptions) -> Hashable:
        """What a zone's row shows but its strokes: the bar as it is drawn at each width
        it may get (its own, or less in a table squeezed below its natural width)."""
        name, bar, *cells, count = row
        drawn = tuple(tuple(self._console.render(bar, options.update_width(w)))
                      for w in range(1, (bar.width or 1) + 1))
        return (name.plain, str(name.style), drawn, *cells, len(count))

    def _edges(self, width: int) -> tuple[Line, Line, Line, Line]:
        """The panel's top (with the title) and bottom, and each line's two ends."""
        title = self._view.title
        cached = self._parts.get("edges")
        if cached is None or cached[0] != (title, width):
            panel = Panel(Text(""), title=plain(title), border_style="blue")
            top, middle, bottom = self._console.render_lines(
                panel, self._console.options.update_width(width))
            cached = ((title, width), [top, middle[:2], middle[-2:], bottom])
            self._parts["edges"] = cached
        top, left, right, bottom = cached[1]
        return top, left, right, bottom

    # --- what each part shows ----------------------------------------------

    @staticmethod
    def _head_key(status: Mapping[str, Any]) -> Hashable:
        return (status.get("state", "?"), clock(status.get("elapsed_s")),
                clock(status.get("remaining_s_est")))

    def _banners_key(self, status: Mapping[str, Any]) -> Hashable:
        return (self._view.pinned_line, status.get("fault"), status.get("records_failure"),
                status.get("stop_reason"), tuple(status.get("go_no_go") or ()))

    def _coverage_key(self, status: Mapping[str, Any]) -> Hashable:
        zone = status.get("zone")
        return (None if not zone else (zone.get("zone_id"), zone.get("name")),
                status.get("position_mode"), self._view.grid_version)


class _Group:
    """Renderables one under the other (rich's Group, which the panel uses)."""

    def __init__(self, parts: list[RenderableType]) -> None:
        self.parts = parts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Any]:
        yield from self.parts


_NULL = Style.null()


def fit_height(room: int, coverage: list[Line], events: list[Line]) -> tuple[
        list[Line], list[Line]]:
    """The coverage map and the events panel in `room` lines (rich's Live would cut a
    taller frame at the bottom, hiding the newest events and the keys): the events panel
    keeps its newest lines (at least one, in its borders), else goes; then the map goes."""
    if len(coverage) + len(events) <= room:
        return coverage, events
    left = room - len(coverage)
    if left >= 3:  # the panel's borders and its newest lines
        return coverage, _newest(events, left - 2)
    if len(events) <= room:
        return [], events
    return [], _newest(events, room - 2) if room >= 3 else []


def _newest(panel: list[Line], rows: int) -> list[Line]:
    """The events panel with its last `rows` lines inside its borders, less the tail of
    an event whose start was cut (an event's first line begins with its time, "[")."""
    inner = panel[1:-1][-rows:]
    while len(inner) > 1 and not "".join(seg.text for seg in inner[0]).lstrip("│ ").startswith("["):
        inner = inner[1:]
    return [panel[0], *inner, panel[-1]]


def _mark(index: int) -> str:
    """The placeholder of the strokes of the zones table's row `index`."""
    return chr(0xE000 + index)


def _count_slots(lines: list[Line], lengths: list[int]) -> list[Slot] | None:
    """Where the zones table shows its counts' placeholders: (line, segment, row, how many
    of the count's characters show), a count in one run in one segment, whole or cut at
    its end (rich's ellipsis); None when a count shows otherwise (e.g. broken over lines)."""
    slots: list[Slot] = []
    seen: set[int] = set()
    for n, line in enumerate(lines):
        for k, seg in enumerate(line):
            for i, length in enumerate(lengths):
                shown = seg.text.count(_mark(i))
                if not shown:
                    continue
                if i in seen or shown > length or _mark(i) * shown not in seg.text:
                    return None
                seen.add(i)
                slots.append((n, k, i, shown))
    return slots


def pen_lines(rows: tuple[tuple[str, Text], ...]) -> list[Line]:
    """The pen's figures as rich's grid lays them out (TerminalView.pen_table): labels
    in a column as wide as the widest, one space, then the values, each padded in its
    own style; no lines when a value would not fit on one line (rich lays them out then)."""
    label_w = max(cell_len(k) for k, _ in rows)
    value_w = max(v.cell_len for _, v in rows)
    if label_w + 1 + value_w > PEN_WIDTH or any("\n" in v.plain for _, v in rows):
        return []
    label_style = Style.parse(PEN_LABEL_STYLE)
    out: list[Line] = []
    for k, v in rows:
        value_style = Style.parse(str(v.style)) if v.style else _NULL
        out.append([
            Segment(k + " " * (label_w - cell_len(k) + 1), label_style),
            Segment(v.plain, value_style),
            Segment(" " * (value_w - v.cell_len), value_style),
            Segment(" " * (PEN_WIDTH - label_w - 1 - value_w), _NULL),
        ])
    return out


def _side_by_side(left: list[Line], left_w: int, right: list[Line]) -> list[Line]:
    """The body: the zones table, the gap, the pen's figures (rich's grid of two columns,
    the second PEN_WIDTH wide): the shorter column continues in blanks."""
    gap = Segment(" " * BODY_GAP, _NULL)
    blank_left = [Segment(" " * left_w, _NULL)]
    blank_right = [Segment(" " * PEN_WIDTH, _NULL)]
    return [
        [*(left[i] if i < len(left) else blank_left), gap,
         *(right[i] if i < len(right) else blank_right)]
        for i in range(max(len(left), len(right)))
    ]
