"""The pen process, seen from outside: start it, read its snapshots and events, send commands.

The inner loop (link, controller, flight recorder, records queue: the Session)
runs in its own OS process (devicectl/penloop.py), the only owner of the
controller. This module is the one door to it. It holds no controller: it
sends picklable settings (the child opens the port or builds the simulated
pen itself), then reads what the child publishes (frozen Snapshots at up to
20 Hz, the events in order, the end report) and sends commands through
`submit`. A spawned child, not a forked one: the CLI has threads (the web
page, the view) and a fork would copy their locks mid-use.

Every channel is bounded: the child's publisher sends only the latest
snapshot and keeps a bounded backlog of events for a reader that falls
behind (the records have them all); the handle keeps a bounded queue too.
A CLI that dies closes the command pipe: the pen process then stops the pen.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from devicectl.child_signals import terminal_signals_blocked
from devicectl.controller_core import StartFacts
from devicectl.drain import drain
from devicectl.errors import DevicectlError, RefusedError
from devicectl.plan import PlanRecipe
from devicectl.snapshot import KEPT_FIELDS, Outcome, Snapshot, seal
from devicectl.transitions import Command, ControlEvent

#: Events and progress kept for a reader of the handle that does not drain them.
BACKLOG: Final = 10_000
#: How long opening the link may take (a spawned interpreter, then the port).
OPEN_WAIT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The simulated pen, built by the pen process itself."""

    seed: int
    scenario: str | None = None
    #: a misbehaving pen's name (firmware_sim/data/misbehaviours.yaml)
    misbehave: str | None = None
    position: bool = True
    auth_required: bool = False
    sim_state: Path | None = None
    #: times real time (0 = as fast as possible)
    speed: float = 1.0
    #: the scalp map the simulated hand follows (zones.ZoneMap; None: the shipped one)
    zone_map: Any = None


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where the pen is: a port (path or pyserial URL) or the simulator."""

    port: str | None = None
    sim: SimSettings | None = None

    @property
    def name(self) -> str:
        """The link as the technician knows it."""
        if self.sim is not None:
            return f"the simulator (seed {self.sim.seed})"
        return self.port or "?"


@dataclass(frozen=True, slots=True)
class MapRaster:
    """The zone map rasterised at the controller's cell size (zones.ZoneRaster's fields),
    as plain data: the pen process never loads the zone map's YAML."""

    x0_mm: float
    y0_mm: float
    cell_mm: float
    labels: npt.NDArray[np.uint8]

    @classmethod
    def of(cls, zone_map: Any, cell_mm: float) -> MapRaster:
        r = zone_map.raster(cell_mm)
        return cls(float(r.x0_mm), float(r.y0_mm), float(r.cell_mm), np.asarray(r.labels))

    def raster(self, cell_mm: float) -> MapRaster:
        """What the controller asks of a zone map (controller_core.ZoneMapLike)."""
        if cell_mm != self.cell_mm:
            raise ValueError(f"the map was rasterised at {self.cell_mm} mm, not {cell_mm} mm")
        return self


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Everything the pen process needs to run one session: plain, picklable data."""

    recipe: PlanRecipe
    raster: MapRaster
    facts: StartFacts
    #: the records: an SQLite file, or the clinic's PostgreSQL URL
    db_path: Path | str
    session_id: int
    nonce: int
    started_wall: datetime
    coverage_state: bytes | None = None
    start_zone_index: int = 0
    #: a resumed session's recorded time on each zone: (zone id, seconds)
    zone_seconds_before: tuple[tuple[int, float], ...] = ()
    #: the keys a pen must prove (a picklable callable: serial -> key), or None
    keys: Any = None
    #: --yes: start and next zone by themselves; a fault ends the session
    auto_confirm: bool = False
    end_on_fault: bool = False
    #: claim the pen's cartridge in the records at the GO (claim.py); not for a
    #: session that continues one whose cartridge it already holds
    claim: bool = False
    #: an interrupted session resumed in its own record: refused, it stays interrupted
    in_place: bool = False


@dataclass(frozen=True, slots=True)
class EndReport:
    """How the session ended, and what became of its records (the writer's report)."""

    outcome: Outcome
    #: a user-facing sentence (a DevicectlError), or None
    error: str | None = None
    #: anything else that stopped the loop, as repr (the pen was stopped first)
    internal_error: str | None = None
    #: the pen process's grants (core, priority, frozen heap), as the session log says
    grants: str = ""
    # What records_banner shows (RecordWriter's fields of the same names).
    path: str = ""
    failure: str | None = None
    errors: tuple[str, ...] = ()
    unsaved_path: str = ""
    unsaved_count: int = 0
    unwritten: tuple[str, ...] = ()
    #: why the records failed, with a server's reconnection (RecordWriter.status_line)
    status: str | None = None

    def status_line(self) -> str | None:
        return self.status


def _child(cmds: Connection, pub: Connection, link: LinkSettings) -> None:
    """The pen process's entry: ignore the terminal's signals (the CLI relays them,
    and a CLI that dies closes the pipe), then run devicectl/penloop.py."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from devicectl import penloop

    penloop.main(cmds, pub, link)


class PenProcess:
    """The handle on the pen process; `snapshot`, `drain_events`, `submit`, `wait`."""

    def __init__(self, link: LinkSettings) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.link = link
        self._cmds_r, self._cmds = ctx.Pipe(duplex=False)
        self._pub, pub_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(self._cmds_r, pub_w, link),
                                 name="devicectl-pen", daemon=True)
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        #: the KEPT_FIELDS of the last snapshot, for the next one that comes without them
        self._kept: dict[str, Any] = {}
        self._events: collections.deque[ControlEvent] = collections.deque(maxlen=BACKLOG)
        self._progress: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(
            maxlen=BACKLOG)
        self._opened = threading.Event()
        self._started = threading.Event()
        self._done = threading.Event()
        self._open_error: str | None = None
        self.grants = ""
        #: what the OS granted, as data (os_grants: the views' cores, the loop's slice, ...)
        self.grant_data: dict[str, Any] = {}
        self.report: EndReport | None = None
        sys.stdout.flush()
        with terminal_signals_blocked():
            self._proc.start()
        self._cmds_r.close()
        pub_w.close()
        self._reader = threading.Thread(target=self._read, name="pen-reader", daemon=True)
        self._reader.start()

    @classmethod
    def open(cls, link: LinkSettings) -> PenProcess:
        """Start the pen process and open the link; RefusedError when it cannot be opened."""
        pen = cls(link)
        if not pen._opened.wait(OPEN_WAIT_S) or pen._open_error is not None:
            why = pen._open_error or f"the pen process did not open {link.name}"
            pen.close()
            raise RefusedError(why)
        return pen

    # --- commands in --------------------------------------------------------

    def _send(self, msg: tuple[Any, ...]) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._cmds.send(msg)

    def begin(self, settings: SessionSettings) -> None:
        """Run the session: the pen process builds the controller and starts the loop."""
        self._send(("begin", settings))

    def submit(self, cmd: Command) -> None:
        """A technician's command (the controller decides what it means in its state)."""
        self._send(("command", cmd))

    def request_stop(self, reason: str, *, not_started: bool = False) -> None:
        """Stop the pen and end the session; `not_started`: the technician said no at
        the go/no-go, so a session that ends without a lost link counts as refused."""
        self._send(("stop", reason, not_started))

    # --- what comes out -------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def drain_events(self) -> list[ControlEvent]:
        return drain(self._events)

    def drain_progress(self) -> list[tuple[int, dict[str, Any]]]:
        return drain(self._progress)

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once the session has ended (or the pen process has gone)."""
        return self._done.wait(timeout_s)

    def wait_started(self, timeout_s: float) -> bool:
        return self._started.wait(timeout_s)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _read(self) -> None:
        try:
            while True:
                msg = self._pub.recv()
                self._handle(msg)
        except (EOFError, OSError):
            pass
        finally:
            if not self._opened.is_set() and self._open_error is None:  # `open` refuses it
                self._proc.join(1.0)
                code = self._proc.exitcode
                self._open_error = (f"the pen process ended before it opened {self.link.name}"
                                    + (f" (exit code {code})" if code is not None else "")
                                    + "; nothing was started")
            if self.report is None:
                code = self._proc.exitcode
                self.report = EndReport(
                    Outcome.FAULT, internal_error="the pen process ended unexpectedly"
                    + (f" (exit code {code})" if code is not None else ""))
                self._snapshot = dataclasses.replace(self._snapshot, finished=True,
                                                     outcome=Outcome.FAULT)
            self._opened.set()
            self._started.set()
            self._done.set()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "tick":
            _, snap, same, events, progress = msg
            if snap is not None:
                if same:
                    snap = dataclasses.replace(snap, **{name: self._kept[name] for name in same})
                self._kept = {name: getattr(snap, name) for name in KEPT_FIELDS}
                self._snapshot = seal(snap)
            self._events.extend(events)
            self._progress.extend(progress)
        elif kind == "opened":
            self._opened.set()
        elif kind == "refused":
            self._open_error = msg[1]
            self._opened.set()
        elif kind == "started":
            _, self.grants, self.grant_data = msg
            self._started.set()
        elif kind == "end":
            _, snap, report = msg
            self._snapshot = seal(snap)
            self.report = report
            self._done.set()

    def close(self, timeout_s: float = 10.0) -> None:
        """End the pen process: a running session is stopped first (the loop makes the
        pen safe), a link not yet used is closed."""
        self._send(("close",))
        self._proc.join(timeout_s)
        if self._proc.is_alive():  # stuck: its link dies with it, the pen's watchdog stops it
            self._proc.kill()
            self._proc.join(2.0)
        with contextlib.suppress(OSError):
            self._cmds.close()
        self._reader.join(2.0)
        with contextlib.suppress(OSError):
            self._pub.close()


def user_error(exc: BaseException) -> str | None:
    """A DevicectlError's sentence, for the end report (None for anything else)."""
    return str(exc) if isinstance(exc, DevicectlError) else None
