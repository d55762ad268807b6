"""The technician's terminal view: a rich live screen built from status snapshots.

Everything here reads `Session.snapshot` (a dict) and the session's display
events; nothing reaches into the inner loop. Without a terminal the same
events become one plain line each.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from devicectl.dose import DOSE_COLUMNS, LEGEND, dose_cells
from devicectl.eventkinds import is_pinned
from devicectl.monitor.compact import render_compact
from devicectl.plain import escape_controls, plain
from devicectl.safety import DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM
from devicectl.transitions import ControlEvent

STATE_STYLES: Mapping[str, str] = {
    "CONNECTING": "bold yellow",
    "CONFIGURING": "bold yellow",
    "READY": "bold cyan",
    "STAMPING": "bold green",
    "PAUSED": "bold yellow",
    "ZONE_DONE": "bold cyan",
    "COMPLETE": "bold green",
    "FAULT": "bold white on red",
    "ABORTED": "bold red",
    "LINK_LOST": "bold white on red",
    "REFUSED": "bold red",
}
#: Below this size (columns, rows) the compact layout is drawn (monitor/compact.py).
FULL_MIN_SIZE = (120, 40)
#: The coverage map is redrawn at most this often (s): it changes slowly.
MAP_PERIOD_S = 0.5
KEYS_HELP = "p pause · r resume/start · n next zone · c clear fault · q abort"
#: Map glyphs: outside the zone, untouched, below target, at target, at maximum.
GLYPHS = (" ", "·", "░", "▓", "█")
GLYPH_STYLES = ("", *(colour for _word, colour in LEGEND))  # dose.LEGEND: one legend everywhere
#: The body: the zones table, then the pen's figures in a column this wide, this far apart.
PEN_WIDTH = 32
BODY_GAP = 2
PEN_LABEL_STYLE = "grey70"
#: A zone's row in the zones table: name, dose bar, dose cells, depth, strokes.
ZoneRow = tuple[Text, ProgressBar, str, str, str, str, str]


def mm(depth_um: int | None) -> str:
    """A depth in µm as millimetres with two decimals for display, "—" when unknown."""
    return "—" if depth_um is None else f"{depth_um / 1000:.2f} mm"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def zone_time(seconds: float | None) -> str:
    """A zone's treatment time as `clock` says it, but a time under a second that is
    not zero is "<1 s", never "00:00" (nothing treated)."""
    if seconds is not None and 0 < seconds < 1:
        return "<1 s"
    return clock(seconds)


def event_line(event: ControlEvent, t0_us: int = 0,
               zone_names: Mapping[int, str] | None = None) -> str:
    """One plain line for an event: elapsed time, kind, the zone (by its name when
    `zone_names` knows it), the sentence (controls escaped; print it as text, not markup)."""
    t = (event.t_us - t0_us) / 1e6
    zone = ""
    if event.zone_id is not None:
        name = (zone_names or {}).get(event.zone_id)
        zone = f" {escape_controls(name)}" if name else f" zone {event.zone_id}"
    text = escape_controls(event.text)
    return f"[{clock(t)}.{int((t % 1) * 1000):03d}] {event.kind.name}{zone}: {text}"


def coverage_glyphs(
    passes: np.ndarray, mask: np.ndarray, target: int, maximum: int, cols: int = 60, rows: int = 14
) -> Text:
    """A zone's pass counts drawn in characters, one glyph per block of cells.

    Each cell is untouched, below target, at target or at maximum; a block
    shows what most of its zone cells are (blank when mostly outside). A
    character is about twice as tall as it is wide, so a block is twice as
    many cells tall as wide. Vectorised, and one style span per run of equal
    glyphs, so a screen refresh stays cheap.
    """
    text = Text()
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return text
    sub_m = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    sub_p = passes[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    level = np.select(
        [~sub_m, sub_p >= maximum, sub_p >= target, sub_p > 0], [0, 4, 3, 2], default=1
    )
    ny, nx = sub_m.shape
    bx = max(1, -(-nx // cols), -(-ny // (2 * rows)))
    by = 2 * bx
    gy, gx = -(-ny // by), -(-nx // bx)
    padded = np.zeros((gy * by, gx * bx), dtype=np.int64)
    padded[:ny, :nx] = level
    blocks = padded.reshape(gy, by, gx, bx).transpose(0, 2, 1, 3).reshape(gy, gx, by * bx)
    counts = np.stack([(blocks == k).sum(axis=2) for k in range(5)], axis=2)
    inside = counts[:, :, 1:].sum(axis=2)
    glyph = np.where(inside * 2 >= by * bx, counts[:, :, 1:].argmax(axis=2) + 1, 0)
    for row in glyph.tolist():
        start = 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] != row[start]:
                lv = row[start]
                text.append(GLYPHS[lv] * (i - start), style=GLYPH_STYLES[lv])
                start = i
        text.append("\n")
    return text


#: Events that come and go many times a minute: the status lines show them, not the log.
CHATTY = frozenset({"COVERAGE_HOLD", "RESUMED_STAMPING", "SENT", "RESEND"})
CHATTY_PEN_EVENTS = frozenset({"CONTACT_LOST", "CONTACT_MADE"})


def is_chatty(event: ControlEvent) -> bool:
    """True for the events a live log leaves out (they are all still recorded)."""
    return event.kind.name in CHATTY or event.data.get("event") in CHATTY_PEN_EVENTS


class TerminalView:
    """Builds the live screen from the latest snapshot and recent events."""

    def __init__(self, title: str, *, history: int = 8,
                 pinned_line: str | None = None,
                 zones: Sequence[tuple[int, str, str]] = ()) -> None:
        self.title = title
        #: Always on screen: the live page's address and token.
        self.pinned_line = pinned_line
        #: Each zone's one name (the map's label), by name and by id.
        self.labels = {name: label for _, name, label in zones}
        self.zone_names = {zid: label for zid, _, label in zones}
        self._pinned: collections.deque[Text] = collections.deque(maxlen=3)
        self.prompt: str | None = None
        #: The latest coverage crop: (zone id, (passes, mask, target, max)), and a count
        #: of the crops given, so that a cache of the map knows when it changed.
        self.grid: tuple[int, Any] | None = None
        self.grid_version = 0
        self._events: collections.deque[Text] = collections.deque(maxlen=history)
        #: Counts the lines added to the log, for the same reason.
        self.events_version = 0
        self._t0_us: int | None = None

    def show_grid(self, zone_id: int, grid: Any) -> None:
        """The active zone's coverage crop, (passes, mask, target hits, max hits)."""
        self.grid = (zone_id, grid)
        self.grid_version += 1

    def add_events(self, events: Iterable[ControlEvent]) -> None:
        for e in events:
            if self._t0_us is None:
                self._t0_us = e.t_us
            if is_chatty(e):
                continue
            line = Text(event_line(e, self._t0_us, self.zone_names),
                        style="red" if e.safety else "")
            self._events.append(line)
            self.events_version += 1
            if is_pinned(e.kind.name):  # faults stay in view until the session ends
                self._pinned.append(line)

    def render(self, status: Mapping[str, Any],
               size: tuple[int, int] | None = None) -> RenderableType:
        """The screen; with the terminal's `size` (columns, rows), a small one gets
        the compact layout (monitor/compact.py) that fits it whole."""
        if not status:
            return Panel(Text("connecting to the pen…", style="yellow"), title=plain(self.title))
        head = self.head(status)
        if size is not None and (size[0] < FULL_MIN_SIZE[0] or size[1] < FULL_MIN_SIZE[1]):
            return render_compact(
                title=self.title, status=status, width=size[0], height=size[1], head=head,
                pinned_line=self.pinned_line, labels=self.labels,
                pinned_events=list(self._pinned),
                events=[e for e in self._events if e not in self._pinned],
                prompt=self.prompt)
        parts: list[RenderableType] = [head, *self.banners(status)]
        body = Table.grid(expand=True, padding=(0, BODY_GAP))
        body.add_column(ratio=1)
        body.add_column(width=PEN_WIDTH)
        body.add_row(self.zones_table(status), self.pen_table(status))
        parts.append(body)
        cov = self.coverage_panel(status)
        if cov is not None:
            parts.append(cov)
        parts.append(self.events_panel())
        parts.append(self.prompt_line())
        return Panel(Group(*parts), title=plain(self.title), border_style="blue")

    def head(self, status: Mapping[str, Any]) -> Table:
        """The state, and the session's elapsed and remaining time."""
        state = str(status.get("state", "?"))
        head = Table.grid(expand=True)
        head.add_column(ratio=1)
        head.add_column(justify="right")
        head.add_row(
            Text(f" {state.replace('_', ' ')} ", style=STATE_STYLES.get(state, "bold")),
            Text(
                f"elapsed {clock(status.get('elapsed_s'))} · "
                f"remaining ≈ {clock(status.get('remaining_s_est'))}"
            ),
        )
        return head

    def banners(self, status: Mapping[str, Any]) -> list[RenderableType]:
        """The pinned line, and what stops or refuses treatment, between head and body."""
        parts: list[RenderableType] = []
        if self.pinned_line:
            parts.append(plain(self.pinned_line, "bold"))
        fault = status.get("fault")
        if fault:
            parts.append(Panel(plain(fault, "bold white"), style="on red", title="FAULT"))
        records = status.get("records_failure")
        if records:
            parts.append(Panel(plain(records, "bold white"), style="on red", title="RECORDS"))
        stop_reason = status.get("stop_reason")
        if stop_reason and not fault and not records:
            parts.append(plain(f"stamping stopped: {stop_reason}", "yellow"))
        for reason in status.get("go_no_go") or ():
            parts.append(plain(f"NO-GO: {reason}", "bold red"))
        return parts

    def events_panel(self) -> Panel:
        log = Text("\n").join(self._events) if self._events else Text("—")
        return Panel(log, title="events", border_style="grey50")

    def prompt_line(self) -> Text:
        return Text(self.prompt or KEYS_HELP, style="bold yellow" if self.prompt else "dim")

    def zones_table(self, status: Mapping[str, Any],
                    rows: Iterable[ZoneRow] | None = None) -> Table:
        """The zones, a row each (`rows`: their cells, when the caller made them).

        Every figure is shown whole at every width the full layout is drawn at: where
        the table is narrower than its rows (120 columns, long zone names, large
        figures), a zone's name goes on over more lines, and no figure is ever cut to
        its first digits (a count of 1744 shown as "1"). Rules only under the header,
        none between the columns: their room is the figures'."""
        table = Table(title="zones", expand=True, title_justify="left", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False, padding=(0, 0, 0, 1))
        table.add_column("zone", overflow="fold")  # the one column that gives way
        table.add_column("", min_width=6, no_wrap=True)
        for name in (*DOSE_COLUMNS, "mm", "strokes"):
            table.add_column(name, justify="right", no_wrap=True)
        for row in rows if rows is not None else self.zone_rows(status):
            table.add_row(*row)
        return table

    def zone_rows(self, status: Mapping[str, Any]) -> list[ZoneRow]:
        """Each zone's cells: its name, a bar of its dose (which moves with every
        stroke), the dose, the depth (mm) and the strokes (the last cell, always)."""
        rows: list[ZoneRow] = []
        for z in status.get("zones") or ():
            target = float(z.get("target_passes") or 1.0)
            fraction = float(z.get("mean_passes") or 0.0)
            mark = "▶ " if z.get("active") else ("✓ " if z.get("done") else "  ")
            rows.append((
                plain(mark + self.labels.get(str(z.get("name")), str(z.get("name")))),
                ProgressBar(total=target, completed=min(fraction, target), width=6,
                            complete_style="green" if z.get("done") else "cyan"),
                *dose_cells(z),
                f"{(z.get('depth_um') or 0) / 1000:.2f}",
                str(z.get("strokes", 0)),
            ))
        return rows

    def pen_rows(self, status: Mapping[str, Any]) -> tuple[tuple[str, Text], ...]:
        """The pen's figures, (label, value) a row: the body's right-hand column."""
        pen: Mapping[str, Any] = status.get("pen") or {}
        meas = pen.get("depth_meas_um")
        meas_style = "bold"  # over the cap but within the tolerance: yellow; past it: red
        if meas is not None and meas > DEPTH_CAP_UM:
            meas_style = "bold red" if meas > OVERDEPTH_LIMIT_UM else "bold yellow"
        pos = pen.get("x_mm"), pen.get("y_mm")
        return (
            ("pen", plain(str(pen.get("state", "—")))),
            ("depth set", plain(mm(pen.get("depth_cmd_um")))),
            ("depth measured", Text(mm(meas), style=meas_style)),
            ("depth cap", plain(mm(DEPTH_CAP_UM))),
            ("stops above", plain(f"{mm(OVERDEPTH_LIMIT_UM)} measured")),
            ("stamp rate", plain(f"{(pen.get('rate_meas_dhz') or 0) / 10:.1f} Hz")),
            ("strokes", plain(str(pen.get("stamp_count", "—")))),
            ("contact", plain("yes" if pen.get("contact") else "no")),
            ("battery", plain(f"{(pen.get('battery_mv') or 0) / 1000:.2f} V")),
            ("tip", plain("unknown" if pos[0] is None else f"{pos[0]:+.1f}, {pos[1]:.1f} mm")),
            ("coverage", plain(str(status.get("position_mode", "—")))),
            ("faults", plain(", ".join(pen.get("faults") or ()) or "none")),
        )

    def pen_table(self, status: Mapping[str, Any]) -> Table:
        table = Table.grid(padding=(0, 1))
        table.add_column(style=PEN_LABEL_STYLE)
        table.add_column()
        for k, v in self.pen_rows(status):
            table.add_row(k, v)
        return table

    def coverage_panel(self, status: Mapping[str, Any]) -> Panel | None:
        """The active zone's map, from the latest crop the host sent (every MAP_PERIOD_S)."""
        zone = status.get("zone")
        if not zone or status.get("position_mode") != "tracked":
            return None
        if self.grid is None or self.grid[0] != zone["zone_id"]:
            return None
        passes, mask, target, maximum = self.grid[1]
        legend = "  " + "  ".join(f"{g} {word}" for g, (word, _c) in zip(GLYPHS[1:], LEGEND,
                                                                          strict=True))
        return Panel(
            Group(coverage_glyphs(passes, mask, target, maximum), Text(legend, style="dim")),
            title=plain(f"coverage · {zone['name']}"),
            border_style="grey50",
        )
