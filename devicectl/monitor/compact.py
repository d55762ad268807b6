"""The live view for a small terminal (80×24 and up): one line per thing, nothing cut.

The full layout (monitor/terminal.py) needs about 120×40. Below that, this one
is drawn instead: the state and the session clock, the live page's address and
token (pinned: they never scroll away), the zones in treatment order with a
bar each, the pen on one line, the faults pinned, as many recent events as fit,
and the keys. Every line is a single screen line (long ones end in "…"), so the
layout's height is known and fits the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from devicectl.plain import plain
from devicectl.safety import DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM

#: The keys, short enough for 80 columns.
KEYS_SHORT = "p pause · r resume/start · n next zone · c clear fault · q abort"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def _line(text: Text | str, style: str = "") -> Text:
    t = text if isinstance(text, Text) else plain(text, style)
    t.no_wrap = True
    t.overflow = "ellipsis"
    return t


def _mm(um: Any) -> str:
    return "—" if um is None else f"{um / 1000:.2f}"


def pen_line(pen: Mapping[str, Any]) -> Text:
    """depth measured, set, cap and where the pen stops (the tolerance), rate, contact,
    battery: one line of at most 76 characters."""
    meas = pen.get("depth_meas_um")
    style = "bold"
    if meas is not None and meas > DEPTH_CAP_UM:  # within the tolerance: yellow; past: red
        style = "bold red" if meas > OVERDEPTH_LIMIT_UM else "bold yellow"
    text = Text("depth ")
    text.append(_mm(meas), style=style)
    text.append(f" set {_mm(pen.get('depth_cmd_um'))} cap {_mm(DEPTH_CAP_UM)}"
                f" (stops >{_mm(OVERDEPTH_LIMIT_UM)}) mm")
    text.append(f" · {(pen.get('rate_meas_dhz') or 0) / 10:.0f} Hz")
    text.append(f" · {'on skin' if pen.get('contact') else 'lifted'}")
    text.append(f" · {(pen.get('battery_mv') or 0) / 1000:.2f} V")
    return _line(text)


def zones_table(zones: Sequence[Mapping[str, Any]], labels: Mapping[str, str],
                width: int) -> Table:
    """The zones in the plan's order (the treatment order), each by its one name."""
    names = [labels.get(str(z.get("name")), str(z.get("name"))) for z in zones]
    name_w = min(max([len(n) for n in names] + [4]) + 2, 28)
    bar_w = max(6, min(30, width - name_w - 26))
    table = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
    table.add_column("zone", no_wrap=True, width=name_w, overflow="ellipsis")
    table.add_column("coverage", width=bar_w, no_wrap=True)
    table.add_column("% / goal", justify="right", no_wrap=True)
    table.add_column("strokes", justify="right", no_wrap=True)
    for z, name in zip(zones, names, strict=True):
        target = float(z.get("target_fraction") or 1.0)
        fraction = float(z.get("fraction") or 0.0)
        mark = "▶ " if z.get("active") else ("✓ " if z.get("done") else "  ")
        table.add_row(
            plain(mark + name),
            ProgressBar(total=target, completed=min(fraction, target), width=bar_w,
                        complete_style="green" if z.get("done") else "cyan"),
            f"{100 * fraction:.0f}/{100 * target:.0f}",
            str(z.get("strokes", 0)),
        )
    return table


def render_compact(
    *,
    title: str,
    status: Mapping[str, Any],
    width: int,
    height: int,
    head: RenderableType,
    pinned_line: str | None,
    labels: Mapping[str, str],
    pinned_events: Sequence[Text],
    events: Sequence[Text],
    prompt: str | None,
) -> RenderableType:
    parts: list[RenderableType] = [head]
    used = 2 + 1  # the panel's borders, the head
    if pinned_line:
        parts.append(_line(pinned_line, "bold"))
        used += 1
    fault = status.get("fault")
    if fault:
        parts.append(_line(f"FAULT: {fault}", "bold white on red"))
        used += 1
    records = status.get("records_failure")
    if records:
        parts.append(_line(f"RECORDS: {records}", "bold white on red"))
        used += 1
    stop_reason = status.get("stop_reason")
    if stop_reason and not fault and not records:
        parts.append(_line(f"stamping stopped: {stop_reason}", "yellow"))
        used += 1
    for reason in status.get("go_no_go") or ():
        parts.append(_line(f"NO-GO: {reason}", "bold red"))
        used += 1
    zones = list(status.get("zones") or ())
    if zones:
        parts.append(zones_table(zones, labels, width - 4))
        used += 1 + len(zones)
    parts.append(pen_line(status.get("pen") or {}))
    used += 1
    room = max(0, height - 1 - used - 1)  # a line for the keys, one for the cursor
    shown_pinned = list(pinned_events)[-room:] if room else []
    room -= len(shown_pinned)
    shown = list(events)[-room:] if room > 0 else []
    for t in shown_pinned:
        line = t.copy()
        line.stylize("bold red")
        parts.append(_line(line))
    for t in shown:
        parts.append(_line(t.copy()))
    parts.append(_line(prompt or KEYS_SHORT, "bold yellow" if prompt else "dim"))
    return Panel(Group(*parts), title=plain(title), border_style="blue", width=width)
