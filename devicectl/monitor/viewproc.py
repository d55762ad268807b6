"""The terminal view in a child process, so drawing never holds the inner loop's GIL.

The host process sends the pen process's latest snapshot, new events and (every
half second) the active zone's coverage crop over a pipe at the view's rate; the child owns
the terminal: it renders with rich and reads the technician's keys, and sends
back the commands they mean. Rich's layout is pure bytecode: in the host's
process it delayed the ESTOP path by milliseconds (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from devicectl.child_signals import terminal_signals_blocked
from devicectl.monitor.terminal import FULL_MIN_SIZE, MAP_PERIOD_S
from devicectl.snapshot import Watched
from devicectl.transitions import Command, ControlEvent

#: Messages to the child: ("show", snapshot, events, grid | None), ("end", snapshot, events).
#: Messages from it: ("command", Command name), ("stop",), ("closed",).


@dataclass(frozen=True)
class ViewOptions:
    title: str
    #: Kept on screen whatever the size: the live page's address and token.
    pinned_line: str | None = None
    #: (zone id, name, the name shown): each zone has one name in the view.
    zones: tuple[tuple[int, str, str], ...] = ()
    #: Where to draw: None for the terminal (stdout), a path (e.g. os.devnull) for benchmarks.
    output: str | None = None
    #: Read the technician's keys from the controlling terminal.
    keys: bool = True


def _child(conn: Connection, options: ViewOptions) -> None:
    """The view process: render what arrives, turn keys into commands."""
    from rich.console import Console
    from rich.live import Live

    from devicectl.monitor.frame import FullFrame
    from devicectl.monitor.keys import KeyMap, KeyReader, cbreak
    from devicectl.monitor.terminal import TerminalView

    # Ctrl-C reaches the whole process group; the host handles it, not the view.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    view = TerminalView(options.title, pinned_line=options.pinned_line, zones=options.zones)
    out = open(options.output, "w") if options.output else None  # noqa: SIM115
    console = Console(file=out, force_terminal=out is not None or None)
    full = FullFrame(view, console)
    sized = out is None  # a real terminal: the layout fits its size (benchmarks: the full one)
    tty_fd = os.open("/dev/tty", os.O_RDONLY) if options.keys else None
    keys = KeyReader(tty_fd) if tty_fd is not None else None
    keymap = KeyMap()
    snapshot: dict[str, Any] = {}
    compact_shown: Any = None

    def draw(live: Live) -> None:
        """The screen for the latest snapshot; nothing when it shows nothing new."""
        nonlocal compact_shown
        at = size(console) if sized else None
        if not snapshot or (at is not None and (at[0] < FULL_MIN_SIZE[0]
                                                or at[1] < FULL_MIN_SIZE[1])):
            shown = (at, snapshot, view.events_version, view.prompt)
            if shown != compact_shown:  # the compact layout (or "connecting")
                compact_shown = shown
                live.update(view.render(snapshot, at), refresh=True)
                full.forget()
            return
        compact_shown = None
        frame = full.frame(snapshot, console.width, at[1] if at is not None else None)
        if frame is not None:
            live.update(frame, refresh=True)

    with contextlib.ExitStack() as stack:
        if tty_fd is not None:
            stack.enter_context(cbreak(tty_fd))
        live = stack.enter_context(
            Live(view.render({}), console=console, auto_refresh=False, screen=False)
        )
        if keys is not None:
            keys.start()
        ended = False
        while not ended:
            timeout = 0.2
            # Everything that came since the last frame, then one frame: a view that
            # fell behind draws the latest state, not each one it missed.
            while conn.poll(timeout):
                timeout = 0
                try:
                    msg = conn.recv()
                except EOFError:
                    ended = True
                    break
                snapshot = msg[1]
                view.add_events(msg[2])
                if msg[0] == "end":
                    ended = True
                    break
                if msg[3] is not None:
                    view.show_grid(*msg[3])
            if keys is not None and not ended:
                while not keys.keys.empty():
                    action = keymap.press(keys.keys.get_nowait())
                    view.prompt = action.prompt
                    if action.stop:
                        conn.send(("stop",))
                    elif action.command is not None:
                        conn.send(("command", action.command.name))
                if keys.closed.is_set():
                    conn.send(("closed",))
                    keys = None
            draw(live)
    if out is not None:
        out.close()


def size(console: Any) -> tuple[int, int] | None:
    """The terminal's (columns, rows), read at each refresh: it may be resized."""
    if not console.is_terminal:
        return None
    size = console.size
    return int(size.width), int(size.height)


class ViewProcess:
    """The host's handle on the view child: push snapshots, collect commands."""

    def __init__(self, options: ViewOptions) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child_conn, options), daemon=True,
                                 name="devicectl-view")
        self._saved_tty = _save_tty()
        self._grid_due = 0.0
        sys.stdout.flush()
        with terminal_signals_blocked():  # a Ctrl-C as it boots reaches it too
            self._proc.start()
        child_conn.close()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def show(self, snapshot: dict[str, Any], events: list[ControlEvent],
             grid: tuple[int, Any] | None) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(("show", snapshot, events, grid))

    def push(self, session: Watched) -> None:
        """One refresh: the latest snapshot, new events, and the active zone's
        coverage crop (copied by the pen process) when the map is due."""
        snap = session.snapshot
        grid = None
        now = time.monotonic()
        if snap.zone_crop is not None and now >= self._grid_due:
            self._grid_due = now + MAP_PERIOD_S
            grid = (snap.zone_crop.zone_id, snap.zone_crop.as_view())
        self.show(snap.view_status(), session.drain_events(), grid)

    def requests(self) -> list[Command | str]:
        """Commands the technician's keys mean, and "stop" / "closed"."""
        out: list[Command | str] = []
        with contextlib.suppress(EOFError, OSError):
            while self._conn.poll():
                msg = self._conn.recv()
                out.append(Command[msg[1]] if msg[0] == "command" else msg[0])
        return out

    def close(self, snapshot: dict[str, Any], events: list[ControlEvent]) -> None:
        """Draw the end state, wait for the child, and give the terminal back as it was."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(("end", snapshot, events))
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(1)
        _restore_tty(self._saved_tty)
        self._conn.close()


def _save_tty() -> Any:
    try:
        import termios

        fd = sys.stdin.fileno()
        return (fd, termios.tcgetattr(fd)) if os.isatty(fd) else None
    except (OSError, ValueError):
        return None


def _restore_tty(saved: Any) -> None:
    if saved is None:
        return
    import termios

    with contextlib.suppress(OSError):
        termios.tcsetattr(saved[0], termios.TCSADRAIN, saved[1])
