"""The technician's terminal view and keys: what the screen says, what keys do."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from rich.console import Console

from devicectl.controller import Command, ControlEvent, EventKind
from devicectl.monitor.keys import KeyMap
from devicectl.monitor.terminal import TerminalView, coverage_glyphs, event_line, is_chatty


def screen(renderable: Any, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def status(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "state": "STAMPING",
        "zone": {"zone_id": 3, "name": "vertex"},
        "zones": [
            {"zone_id": 3, "name": "vertex", "depth_um": 1500, "rate_dhz": 1000,
             "target_fraction": 0.9, "fraction": 0.45, "cells_at_max": 7, "strokes": 1234,
             "done": False, "active": True, "seconds": 61.0},
            {"zone_id": 2, "name": "mid_scalp", "depth_um": 1500, "rate_dhz": 1000,
             "target_fraction": 0.9, "fraction": 0.0, "cells_at_max": 0, "strokes": 0,
             "done": False, "active": False, "seconds": 0.0},
        ],
        "pen": {"state": "STAMPING", "depth_cmd_um": 1500, "depth_meas_um": 1492,
                "rate_meas_dhz": 998, "stamp_count": 1234, "contact": True, "battery_mv": 4010,
                "x_mm": 12.5, "y_mm": 160.0, "fault_flags": 0, "faults": []},
        "position_mode": "tracked",
        "stop_reason": None,
        "fault": None,
        "go_no_go": [],
        "elapsed_s": 75.0,
        "remaining_s_est": 600.0,
    }
    base.update(kw)
    return base


def test_the_screen_shows_state_zones_depths_and_time() -> None:
    out = screen(TerminalView("devicectl · P-1").render(status()))
    assert "STAMPING" in out and "vertex" in out and "mid_scalp" in out
    assert "1.49 mm" in out and "1.50 mm" in out  # measured and set depth
    assert "45/90" in out  # coverage against target, per zone
    assert "01:15" in out and "10:00" in out  # elapsed, remaining
    assert "p pause" in out


def test_a_fault_is_a_banner_in_plain_words() -> None:
    out = screen(TerminalView("t").render(status(
        state="FAULT", fault="measured depth 1620 µm is past the 1550 µm limit")))
    assert "FAULT" in out and "measured depth 1620 µm is past the 1550 µm limit" in out


def test_no_go_reasons_are_on_screen() -> None:
    out = screen(TerminalView("t").render(status(
        state="REFUSED", go_no_go=["cartridge 7 was used in an earlier session"])))
    assert "NO-GO: cartridge 7 was used in an earlier session" in out


def test_before_the_first_snapshot_it_says_connecting() -> None:
    assert "connecting" in screen(TerminalView("t").render({}))


def test_coverage_map_shows_untouched_below_target_at_target_and_at_max() -> None:
    mask = np.ones((8, 16), dtype=bool)
    passes = np.zeros((8, 16), dtype=np.int64)
    passes[:, 4:8] = 1
    passes[:, 8:12] = 3
    passes[:, 12:16] = 4
    text = coverage_glyphs(passes, mask, target=3, maximum=4, cols=16, rows=8).plain
    first = text.splitlines()[0]
    assert first == "····░░░░▓▓▓▓████"


def test_the_map_leaves_cells_outside_the_zone_blank() -> None:
    mask = np.zeros((4, 8), dtype=bool)
    mask[:, :4] = True
    text = coverage_glyphs(np.zeros((4, 8), np.int64), mask, 1, 2, cols=8, rows=4).plain
    assert set(text.replace("\n", "")) == {"·"}  # cropped to the zone: nothing outside


def test_event_lines_carry_time_kind_zone_and_sentence() -> None:
    e = ControlEvent(2_500_000, EventKind.ZONE_DONE, "zone vertex reached its target", 3)
    expected = "[00:01.500] ZONE_DONE zone 3: zone vertex reached its target"
    assert event_line(e, 1_000_000) == expected


def test_holds_and_contact_flicker_stay_out_of_the_live_log_only() -> None:
    assert is_chatty(ControlEvent(0, EventKind.COVERAGE_HOLD, "held"))
    assert is_chatty(ControlEvent(0, EventKind.PEN_EVENT, "c", data={"event": "CONTACT_LOST"}))
    assert not is_chatty(ControlEvent(0, EventKind.PEN_EVENT, "b",
                                      data={"event": "BUTTON_PAUSE"}))
    assert not is_chatty(ControlEvent(0, EventKind.ESTOP, "estop", safety=True))


def test_keys_map_to_commands() -> None:
    keys = KeyMap()
    assert keys.press("p").command is Command.PAUSE
    assert keys.press("r").command is Command.RESUME
    assert keys.press("n").command is Command.NEXT_ZONE
    assert keys.press("x").command is None


def test_clear_fault_and_abort_need_y_to_confirm() -> None:
    keys = KeyMap()
    ask = keys.press("c")
    assert ask.command is None and ask.prompt and "Clear the fault" in ask.prompt
    assert keys.press("y").command is Command.CLEAR_FAULT
    assert keys.press("q").prompt
    cancelled = keys.press("n")  # anything but y cancels, and is not taken as a command
    assert cancelled.command is None and not cancelled.stop
    keys.press("q")
    assert keys.press("y").stop


def test_the_view_process_draws_what_the_host_sends(tmp_path: Any) -> None:
    from devicectl.monitor.viewproc import ViewOptions, ViewProcess

    out = tmp_path / "screen.txt"
    view = ViewProcess(ViewOptions("child view", output=str(out), keys=False))
    assert view.alive
    view.show(status(), [ControlEvent(0, EventKind.ZONE_STARTED, "zone vertex started", 3)], None)
    view.close(status(state="COMPLETE"), [])
    assert not view.alive
    drawn = out.read_text()
    assert "child view" in drawn and "vertex" in drawn and "COMPLETE" in drawn
    assert "zone vertex started" in drawn


# --- the live view as it looks in a real terminal (issue 14 item 3) ---------------

import fcntl  # noqa: E402
import os  # noqa: E402
import pty  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import termios  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from clinic_support import GATE  # noqa: E402

pyte = pytest.importorskip("pyte", reason="pyte is not installed: pip install -e '.[dev]'")
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "profiles" / "aga-crown-midscalp.yaml"
KEYS = "p pause · r resume/start · n next zone · c clear fault · q abort"


def _live_screen(tmp_path: Path, cols: int, rows: int, timeout_s: float = 60) -> list[str]:
    """`devicectl run --web` in a pseudo-terminal of this size, through a terminal
    emulator: the screen once a whole frame of the view shows stamping."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command, as a technician starts it
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "devicectl.cli", "run", "--profile",
                                  str(DEMO), "--patient", "P-0042", *GATE, "--sim", "--yes",
                                  "--speed", "1", "--web", "--web-port", "0", "--db",
                                  str(tmp_path / "r.db")])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    term = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(term)
    deadline = time.monotonic() + timeout_s
    shown: list[str] = []
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    stream.feed(os.read(fd, 1 << 16))
                except OSError:
                    break
            lines = list(term.display)
            text = "\n".join(lines)
            keys = [i for i, line in enumerate(lines) if KEYS in line]
            # A whole frame: stamping, the keys, and the frame's bottom edge below them.
            if "STAMPING" in text and "strokes" in text and keys and any(
                    line.strip().startswith("╰") and line.strip().endswith("╯")
                    for line in lines[keys[-1]:]):
                shown = lines
                break
    finally:
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 15
        while time.monotonic() < end:  # drain, so the child can write its summary and exit
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    os.read(fd, 1 << 16)
                except OSError:
                    break
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert shown, "the view never showed a whole frame while stamping:\n" + "\n".join(
        term.display)
    return shown


@pytest.mark.parametrize("cols,rows", [(80, 24), (160, 50)])
def test_the_live_view_is_usable_at_this_terminal_size(tmp_path: Path, cols: int,
                                                       rows: int) -> None:
    screen_lines = _live_screen(tmp_path, cols, rows)
    top = max(i for i, line in enumerate(screen_lines) if "devicectl · patient P-0042" in line)
    lines = screen_lines[top:]  # the view's frame (the plan printed before it is above)
    text = "\n".join(lines)
    # The page's address and token are on screen, whole.
    page = next(line for line in lines if "page http://127.0.0.1:" in line)
    assert re.search(r"#token=[A-Za-z0-9_-]{22}\b", page), page
    # The keys, whole, and the frame's bottom edge below them: nothing cut off.
    assert any(KEYS in line for line in lines)
    # The zones in treatment order (the profile's: vertex first), each by its one name.
    vertex = next(i for i, line in enumerate(lines) if "Vertex (crown)" in line)
    mid = next(i for i, line in enumerate(lines) if "Mid-scalp" in line)
    assert vertex < mid
    zone_rows = [line for line in lines if ("Vertex (crown)" in line or "Mid-scalp" in line)
                 and "[00:" not in line]  # the zones table, not the event lines
    assert len(zone_rows) == 2, zone_rows
    assert all("…" not in row for row in zone_rows), zone_rows
    assert not re.search(r"\bmid_scalp\b", "\n".join(zone_rows))  # not a second name
    assert re.search(r"elapsed \d\d:\d\d", text) and "depth" in text


def test_the_pen_line_shows_the_tolerance_and_fits_80_columns() -> None:
    from devicectl.monitor.compact import pen_line
    from devicectl.safety import DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM

    def styles(meas: int) -> set[str]:
        t = pen_line({"depth_meas_um": meas, "depth_cmd_um": 1500, "rate_meas_dhz": 1000,
                      "contact": True, "battery_mv": 4100})
        assert len(t.plain) <= 76  # inside an 80-column frame
        assert f"cap {DEPTH_CAP_UM / 1000:.2f}" in t.plain
        assert f"stops >{OVERDEPTH_LIMIT_UM / 1000:.2f}" in t.plain
        return {str(span.style) for span in t.spans}

    assert "bold" in styles(1490)
    assert "bold yellow" in styles(DEPTH_CAP_UM + 10)  # over the cap, within the tolerance
    assert "bold red" in styles(OVERDEPTH_LIMIT_UM + 10)  # past it: the pen stops
