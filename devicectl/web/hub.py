"""The page's state, kept current on a thread of its own: every SSE client reads it.

A source (a live Session, or the records of a session another process runs)
is read at 10 Hz; the heat map is rebuilt only when coverage changed, at most
twice a second; events are read from the records. The inner loop never waits
for any of this: the hub only reads the snapshot the loop publishes.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from devicectl import store_pg
from devicectl.dbconn import DB_ERRORS, Conn
from devicectl.eventkinds import is_pinned, is_routine
from devicectl.records import EVENT_COLUMNS, event_from_row, open_database
from devicectl.web.state import (
    EVENTS_SHOWN,
    PINNED_SHOWN,
    event_item,
    heat_cells,
    heat_state,
    in_trace_window,
    map_state,
    page_state,
    trace_point,
)
from devicectl.zones import ZoneMap

if TYPE_CHECKING:
    from devicectl.snapshot import Watched
    from devicectl.transitions import Command

#: Hub refresh period: the page's 10 Hz.
PERIOD_S = 0.1
#: The heat map is rebuilt at most this often.
HEAT_PERIOD_S = 0.5
#: The records are polled for new events this often.
EVENTS_PERIOD_S = 0.5
#: Heat-map cells are about this size on the page (mm).
HEAT_CELL_MM = 3.0

#: Told of every new state on the thread that made it: (version, state, stopped).
Watcher = Callable[[int, dict[str, Any], bool], None]


class Source(Protocol):
    """Where the hub reads a session from."""

    def status(self) -> Mapping[str, Any]: ...
    def now_s(self) -> float: ...
    def tracked(self) -> bool: ...
    def heat(self) -> dict[str, Any] | None: ...
    def finished(self) -> bool: ...


class LiveSource:
    """A running session's snapshots (devicectl/snapshot.py): status, coverage, the end.

    Reads only the frozen snapshots the pen process publishes: the heat map is
    rebuilt from the copied coverage crop when its version moves."""

    def __init__(self, session: Watched) -> None:
        self.session = session
        self._version = -1
        self._heat: dict[str, Any] | None = None
        self._layout: Any = None
        self._targets: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None

    def status(self) -> Mapping[str, Any]:
        # One clock for every view: the session's time since it began, as the events'
        # times are (the controller's elapsed_s counts from the first START).
        return self.session.snapshot.view_status()

    def now_s(self) -> float:
        return self.session.snapshot.now_us / 1e6

    def finished(self) -> bool:
        return self.session.wait(0)

    def tracked(self) -> bool:
        snap = self.session.snapshot
        if snap.coverage is not None:
            return snap.coverage.layout.tracked
        return snap.position_mode != "estimated"

    def heat(self) -> dict[str, Any] | None:
        frame = self.session.snapshot.coverage
        if frame is None or not frame.layout.tracked:
            return None
        if frame.version == self._version and frame.layout is self._layout:
            return self._heat
        self._version = frame.version
        layout = frame.layout
        if layout is not self._layout or self._targets is None:
            self._layout = layout
            target_of = np.zeros(256, dtype=np.int64)
            max_of = np.zeros(256, dtype=np.int64)
            for zid, (target, maximum) in layout.hits_of.items():
                target_of[zid], max_of[zid] = target, maximum
            labels = np.asarray(layout.labels, dtype=np.int64)
            self._targets = (target_of[labels], max_of[labels])
        factor = max(1, round(HEAT_CELL_MM / layout.cell_mm))
        target_grid, max_grid = self._targets
        cells = heat_cells(np.asarray(frame.hits, dtype=np.int64), target_grid, max_grid, factor)
        self._heat = heat_state(cells, layout.x0_mm, layout.y0_mm, layout.cell_mm * factor)
        return self._heat

    def submit(self, cmd: Command) -> None:
        self.session.submit(cmd)  # RESUME on a ready zone is the controller's to read


class EventFeed:
    """New event rows of one session, read from the records (on the hub's thread).

    Routine events (devicectl/eventkinds.py: commands sent, holds and resumes,
    contact, SAMPLE) are counted in `hidden`, not passed on."""

    def __init__(self, db_path: Path | str, session_id: int) -> None:
        self.db_path = db_path  # an SQLite file, or the clinic's postgresql:// URL
        self.session_id = session_id
        self._conn: Conn | None = None
        self._last_id = 0
        self._seq = 0
        self.error: str | None = None
        self.hidden = 0

    def poll(self) -> list[list[Any]]:
        try:
            if self._conn is None:
                self._conn = (store_pg.connect(self.db_path) if isinstance(self.db_path, str)
                              else open_database(self.db_path, create=False, read_only=True))
            rows = self._conn.execute(
                f"SELECT id, {EVENT_COLUMNS} FROM events WHERE session_id = ? AND id > ? "
                "ORDER BY id LIMIT 5000",
                (self.session_id, self._last_id),
            ).fetchall()
        except Exception as exc:  # the page says so; the session is not touched
            self.error = f"cannot read the records: {exc}"
            return []
        self.error = None
        out = []
        for row in rows:
            self._last_id = int(row[0])
            event = event_from_row(row[1:])
            if is_routine(event.kind, event.data):
                self.hidden += 1
                continue
            self._seq += 1
            out.append(event_item(self._seq, event))
        return out

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*DB_ERRORS):
                self._conn.close()
            self._conn = None


class Hub:
    """Builds the page state at 10 Hz on a daemon thread; `current` is replaced whole,
    and `version` counts the replacements. Watchers (`watch`) are told of each one."""

    def __init__(
        self,
        source: Source,
        zone_map: ZoneMap,
        header: Mapping[str, Any],
        *,
        events: EventFeed | None = None,
        period_s: float = PERIOD_S,
    ) -> None:
        self.source = source
        self.map = map_state(zone_map)
        self.header = dict(header)
        self.events = events
        self._trace: collections.deque[list[Any]] = collections.deque()
        self._events: collections.deque[list[Any]] = collections.deque(maxlen=EVENTS_SHOWN)
        # Faults and emergency stops stay in view however many events follow them.
        self._pinned: collections.deque[list[Any]] = collections.deque(maxlen=PINNED_SHOWN)
        self._heat: dict[str, Any] | None = None
        self._heat_at = -1e9
        self._events_at = -1e9
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-hub", daemon=True)
        self.period_s = period_s
        self.version = 0
        self._watchers: list[Watcher] = []
        # Held while a new state is published and its watchers told, so that a watcher
        # added meanwhile starts from a (version, state) pair that belong together.
        self._publishing = threading.Lock()
        # No events yet: the feed's SQLite connection belongs to the hub's thread.
        self.current: dict[str, Any] = self.build(time.monotonic(), poll_events=False)

    def start(self) -> None:
        self._thread.start()

    def watch(self, watcher: Watcher) -> tuple[int, dict[str, Any]]:
        """Tell `watcher` of every state from now on (on the thread that published it,
        so it must be quick); returns the current (version, state) it starts from."""
        with self._publishing:
            self._watchers.append(watcher)
            return self.version, self.current

    def _publish(self, state: dict[str, Any] | None) -> None:
        """A new state (None: the same one, when the hub closes); watchers are told."""
        with self._publishing:
            if state is not None:
                self.current = state
                self.version += 1
            for watcher in self._watchers:
                watcher(self.version, self.current, self._closed.is_set())

    def stop(self) -> None:
        """Stop refreshing, after one last state: the streams' "end" carries the final one."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        with contextlib.suppress(Exception):  # the page keeps the state it had
            self._publish(self.build(time.monotonic(), poll_events=False))
        self._closed.set()
        self._publish(None)

    @property
    def stopped(self) -> bool:
        return self._closed.is_set()

    @property
    def session_over(self) -> bool:
        """The session has ended: a page losing the server then has nothing to wait for."""
        return self.source.finished()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.period_s):
                state = self.build(time.monotonic())
                if state != self.current:
                    self._publish(state)
        finally:
            if self.events is not None:
                self.events.close()

    def build(self, wall_s: float, *, poll_events: bool = True) -> dict[str, Any]:
        """One refresh: read the source, extend the trace and events, maybe the heat map."""
        src = self.source
        status = src.status()
        now_s = src.now_s()
        point = trace_point(now_s, status)
        if point is not None and (not self._trace or point[0] > self._trace[-1][0]):
            self._trace.append(point)
        # the last TRACE_WINDOW_S before the newest point, as the page keeps and draws it
        # (state.apply, app.js): the same trace whether a page followed the deltas or
        # came later, also once the points stop (no pen: the link lost)
        while self._trace and not in_trace_window(self._trace[0][0], self._trace[-1][0]):
            self._trace.popleft()
        if wall_s - self._heat_at >= HEAT_PERIOD_S:
            self._heat_at = wall_s
            self._heat = src.heat()
        if (
            poll_events
            and self.events is not None
            and wall_s - self._events_at >= EVENTS_PERIOD_S
        ):
            self._events_at = wall_s
            new = self.events.poll()
            self._events.extend(new)
            self._pinned.extend(e for e in new if is_pinned(e[2]))
        return page_state(
            status,
            header=self.header,
            trace=list(self._trace),
            events=list(self._events),
            pinned=list(self._pinned),
            map_zones=self.map["zones"],
            hidden_events=self.events.hidden if self.events is not None else 0,
            heat=self._heat,
            tracked=src.tracked(),
            records_error=self.events.error if self.events is not None else None,
            finished=src.finished(),
        )
