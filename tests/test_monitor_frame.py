"""The terminal view's full layout drawn from cached parts (monitor/frame.py) is the
screen TerminalView.render draws with rich's layout in one go: the same characters in
the same styles, frame by frame, over a real session; and every figure it shows, when
it changes, reaches the screen."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from view_support import Frame, record_frames

from devicectl.monitor.frame import FullFrame, Lines, _count_slots, fit_height
from devicectl.monitor.terminal import FULL_MIN_SIZE, KEYS_HELP, TerminalView
from devicectl.transitions import ControlEvent, EventKind

DATA = Path(__file__).parent / "data"
ZONES = ((3, "vertex", "Vertex (crown)"), (2, "mid_scalp", "Mid-scalp"))
PINNED = "page http://127.0.0.1:8765/#token=abcdefghijklmnopqrstuv"


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    """15 s of a two-zone session (the short profile: both zones), as the host sends it."""
    return record_frames(DATA / "short-two-zones.yaml", 150)


def console(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, height=60, force_terminal=True,
                   color_system="truecolor")


def cells(c: Console, renderable: RenderableType) -> list[list[tuple[str, str]]]:
    """The screen as a technician sees it: each line's characters with their styles
    (however rich cut the line into segments)."""
    null = Style.null()
    return [[(ch, str(seg.style or null)) for seg in line for ch in seg.text]
            for line in c.render_lines(renderable, c.options)]


def views(**kw: Any) -> tuple[TerminalView, TerminalView]:
    return TerminalView("devicectl · patient P-0042", **kw), TerminalView(
        "devicectl · patient P-0042", **kw)


#: 120 columns, the least the full layout is drawn at, squeezes the zones table (long zone
#: names): a name goes on over two lines there; 80, narrower than it is ever drawn, cuts
#: even the counts short.
@pytest.mark.parametrize("width", [80, 120, 173])
def test_the_full_layout_is_the_same_screen_frame_by_frame(frames: list[Frame],
                                                           width: int) -> None:
    c = console(width)
    reference, cached = views(pinned_line=PINNED, zones=ZONES)
    full = FullFrame(cached, c)
    shown = None
    for n, (status, events, grid) in enumerate(frames):
        for view in (reference, cached):
            view.add_events(events)
            if grid is not None:
                view.show_grid(*grid)
        expected = cells(c, reference.render(status))
        frame = full.frame(status, width)
        if frame is not None:
            shown = cells(c, frame)
        assert shown == expected, f"frame {n} differs"
    stamping = sum(1 for s, _, _ in frames if s.get("state") == "STAMPING")
    assert stamping > 100 and full.drawn > 100  # the session stamped; frames were drawn
    # ... from parts kept: the zones table, whose counts change with every stroke, is
    # rendered again only when something else in it changed
    assert full.zones_rendered < full.drawn / 3


def test_every_figure_of_the_zones_table_is_shown_whole_at_the_least_width(
        frames: list[Frame]) -> None:
    """At 120 columns, the least the full layout is drawn at, with long zone names and
    the widest figures a session can show, every figure of every zone is on the screen
    whole: the zone's name gives way (over more lines), never a figure. (The table used
    to cut a count of 1234567 strokes to its first digits, or show none of it.)"""
    width = FULL_MIN_SIZE[0]
    c = console(width)
    reference, cached = views(pinned_line=PINNED, zones=ZONES)
    status = stamping_status(frames)
    for z in status["zones"]:
        z.update(strokes=1_234_567, mean_passes=12.3, target_passes=10, fraction=1.0,
                 target_fraction=1.0, at_max_fraction=1.0, at_max_cm2=775.0, depth_um=1500)
    frame = FullFrame(cached, c).frame(status, width)
    assert frame is not None
    for screen in (_text(frame), ["".join(ch for ch, _ in line)
                                  for line in cells(c, reference.render(status))]):
        rows = [line for line in screen if "passes" in line]
        assert len(rows) == len(status["zones"])
        for row in rows:
            words = row.split()
            for figure in ("12.3/10", "100/100", "100.0", "775.0", "1.50", "1234567"):
                assert figure in words, f"{figure} not whole in {row!r}"


def stamping_status(frames: list[Frame]) -> dict[str, Any]:
    status = next(s for s, _, grid in reversed(frames) if s.get("state") == "STAMPING")
    return copy.deepcopy(status)


def test_each_figure_shown_reaches_the_screen_when_it_changes(frames: list[Frame]) -> None:
    """A cache that missed any one of these changes would draw a stale screen."""
    width = 140
    c = console(width)
    reference, cached = views(pinned_line=PINNED, zones=ZONES)
    full = FullFrame(cached, c)
    status = stamping_status(frames)
    grid = next(g for _, _, g in reversed(frames) if g is not None)
    for view in (reference, cached):
        view.show_grid(*grid)
    zone = status["zone"]
    assert status["position_mode"] == "tracked" and zone["zone_id"] == grid[0]
    first = full.frame(status, width)
    assert first is not None
    before = cells(c, first)
    assert full.frame(copy.deepcopy(status), width) is None  # the same: nothing drawn
    status["elapsed_s"] = int(status["elapsed_s"]) + 0.5
    full.frame(status, width)
    status["elapsed_s"] += 0.4  # the same second on the clock: nothing drawn
    assert full.frame(status, width) is None
    before = cells(c, reference.render(status))
    z0, z1, pen = status["zones"][0], status["zones"][1], status["pen"]
    passes, mask, target, maximum = grid[1]

    def new_grid() -> None:
        more = passes.copy()
        more[mask] = maximum  # the whole zone at its maximum
        for view in (reference, cached):
            view.show_grid(grid[0], (more, mask, target, maximum))

    def new_event() -> None:
        e = ControlEvent(int(status["elapsed_s"] * 1e6), EventKind.ZONE_DONE,
                         "zone vertex reached its target", 3)
        for view in (reference, cached):
            view.add_events([e])

    def prompt() -> None:
        for view in (reference, cached):
            view.prompt = "Clear the fault? y / n"

    changes: list[tuple[str, Any]] = [
        ("state", lambda: status.update(state="PAUSED")),
        ("elapsed", lambda: status.update(elapsed_s=status["elapsed_s"] + 1)),
        ("remaining", lambda: status.update(remaining_s_est=status["remaining_s_est"] - 60)),
        ("stop reason", lambda: status.update(stop_reason="the pen lost contact")),
        ("fault", lambda: status.update(fault="measured depth 1620 µm is past the limit")),
        ("records", lambda: status.update(records_failure="the records' disk is full")),
        ("no-go", lambda: status.update(go_no_go=["cartridge 7 was used before"])),
        ("strokes", lambda: z0.update(strokes=z0["strokes"] + 1)),
        ("strokes, one digit more", lambda: z0.update(strokes=z0["strokes"] * 10)),
        ("other zone's strokes", lambda: z1.update(strokes=z1["strokes"] + 7)),
        ("dose", lambda: z0.update(mean_passes=float(z0["target_passes"]) * 0.6)),
        # a quarter more of the zone at target: half the goal was the figure shown already
        # in some recordings (0.6 % and 1 % both show as "1")
        ("at target", lambda: z0.update(fraction=z0["fraction"] + 0.25)),
        ("goal", lambda: z0.update(target_fraction=0.5)),
        ("at maximum", lambda: z0.update(at_max_fraction=0.25, at_max_cm2=1.5)),
        ("depth", lambda: z0.update(depth_um=1200)),
        ("done", lambda: z0.update(done=True, active=False)),
        ("active", lambda: z1.update(active=True)),
        ("target passes", lambda: z1.update(target_passes=5)),
        ("pen state", lambda: pen.update(state="PAUSED")),
        ("depth set", lambda: pen.update(depth_cmd_um=1200)),
        ("depth measured", lambda: pen.update(depth_meas_um=1190)),
        ("depth over the cap", lambda: pen.update(depth_meas_um=1560)),
        ("rate", lambda: pen.update(rate_meas_dhz=950)),
        ("pen's strokes", lambda: pen.update(stamp_count=pen["stamp_count"] + 1)),
        ("contact", lambda: pen.update(contact=not pen["contact"])),
        ("battery", lambda: pen.update(battery_mv=3610)),
        ("tip x", lambda: pen.update(x_mm=(pen["x_mm"] or 0) + 1)),
        ("tip y", lambda: pen.update(y_mm=(pen["y_mm"] or 0) + 1)),
        ("faults", lambda: pen.update(faults=["OVERDEPTH"])),
        ("many faults", lambda: pen.update(faults=["OVERDEPTH", "MOTOR_STALL", "LOW_BATT",
                                                   "WATCHDOG"])),  # too wide: rich lays out
        ("map", new_grid),
        ("zone name", lambda: status.update(zone=dict(zone, name="crown"))),
        ("event", new_event),
        ("prompt", prompt),
        ("coverage mode", lambda: status.update(position_mode="estimated")),
    ]
    for what, change in changes:
        change()
        expected = cells(c, reference.render(status))
        assert expected != before, f"{what}: the test changed nothing on screen"
        frame = full.frame(status, width)
        assert frame is not None, f"{what}: not drawn"
        assert cells(c, frame) == expected, f"{what}: drawn differently"
        before = expected


def test_a_frame_after_another_layout_or_at_another_size_is_drawn(
        frames: list[Frame]) -> None:
    """The terminal went small (the compact layout was drawn) and back, or changed its
    height (where Live cuts a tall frame): the same status is drawn again."""
    c = console(140)
    view = TerminalView("t")
    full = FullFrame(view, c)
    status = stamping_status(frames)
    assert full.frame(status, 140, 50) is not None
    assert full.frame(status, 140, 50) is None
    assert full.frame(status, 140, 45) is not None
    full.forget()
    assert full.frame(status, 140, 45) is not None


def test_a_count_the_table_does_not_show_in_one_run_is_not_written_in() -> None:
    """The counts are written into their placeholders only where rich drew each in one
    run, whole or cut at its end; anywhere else the table is rendered every frame."""
    mark = chr(0xE000)
    assert _count_slots([[Segment("│ "), Segment(mark * 3)]], [3]) == [(0, 1, 0, 3)]
    assert _count_slots([[Segment(mark * 2 + "…")]], [4]) == [(0, 0, 0, 2)]  # cut short
    assert _count_slots([[Segment("│ st")]], [4]) == []  # not shown at all
    assert _count_slots([[Segment(mark * 2)], [Segment(mark * 2)]], [4]) is None  # broken
    assert _count_slots([[Segment(mark + " " + mark)]], [4]) is None  # not in one run


def test_the_map_shows_the_latest_crop_only_for_its_zone() -> None:
    view = TerminalView("t")
    mask = np.ones((4, 8), dtype=bool)
    view.show_grid(5, (np.zeros((4, 8), np.int32), mask, 1, 2))
    tracked = {"zone": {"zone_id": 5, "name": "temple"}, "position_mode": "tracked"}
    assert view.coverage_panel(tracked) is not None
    assert view.coverage_panel(dict(tracked, zone={"zone_id": 6, "name": "x"})) is None
    assert view.coverage_panel(dict(tracked, position_mode="estimated")) is None


def _text(full: Lines) -> list[str]:
    return ["".join(seg.text for seg in line) for line in full.lines]


def test_a_frame_taller_than_the_terminal_keeps_the_keys_and_the_newest_events(
        frames: list[Frame]) -> None:
    """At the least height the full layout is drawn at (FULL_MIN_SIZE), a session's
    frame with its map and eight events is taller than the terminal, and rich's Live
    would cut its bottom: the newest events and the keys. The events panel gives up its
    oldest lines instead (then the map, if even that is not enough): the frame fits,
    ends with the keys, and shows the newest event; where it fits, nothing changes."""
    width, height = FULL_MIN_SIZE
    view = TerminalView("devicectl · patient P-0042", pinned_line=PINNED, zones=ZONES)
    for _status, events, grid in frames:
        view.add_events(events)
        if grid is not None:
            view.show_grid(*grid)
    status = stamping_status(frames)
    tall = FullFrame(view, console(width)).frame(status, width, None)
    fitted = FullFrame(view, console(width)).frame(status, width, height)
    assert tall is not None and fitted is not None
    assert len(tall.lines) > height, "the case needs a frame taller than the terminal"
    text = _text(fitted)
    assert len(text) <= height
    assert KEYS_HELP in text[-2]  # the last line inside the panel's border
    newest = view.events_panel().renderable
    assert isinstance(newest, Text)
    last_event = newest.plain.splitlines()[-1][:40]
    assert any(last_event in line for line in text)
    assert any("coverage" in line for line in text)  # the map kept: the events gave way
    top = next(i for i, line in enumerate(text) if " events " in line)
    assert text[top + 1].lstrip("│ ").startswith("[")  # whole events, not an event's tail
    roomy = FullFrame(view, console(width)).frame(status, width, len(tall.lines) + 2)
    assert roomy is not None and _text(roomy) == _text(tall)
    assert fit_height(10, [], []) == ([], [])
