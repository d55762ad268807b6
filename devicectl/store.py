"""Session records in SQLite: `Store` for the CLI and for checks before and after
a session, `RecordWriter` for the session itself (a writer thread, so the 1 kHz
inner loop only ever puts onto a queue). The record types live in records.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from devicectl.errors import DevicectlError, StoreError
from devicectl.records import (
    EVENT_COLUMNS,
    OUTCOMES,
    SESSION_COLUMNS,
    ZONE_COLUMNS,
    EventRecord,
    SessionRecord,
    ZoneCoverage,
    close_session_row,
    event_from_row,
    insert_events,
    open_database,
    session_from_row,
    set_device_row,
    upsert_coverage,
    zone_from_row,
)

__all__ = [
    "OUTCOMES",
    "EventRecord",
    "RecordWriter",
    "SessionRecord",
    "Store",
    "ZoneCoverage",
    "default_db_path",
    "parse_wall",
]

_SECONDS_PER_DAY: Final = 86_400.0


def default_db_path() -> Path:
    """$XDG_DATA_HOME/devicectl/sessions.db, else ~/.local/share/devicectl/sessions.db."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "devicectl" / "sessions.db"


def parse_wall(text: str) -> datetime:
    """An ISO-8601 timestamp as an aware UTC datetime (a naive one is taken as UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise StoreError(f"{text!r} is not an ISO-8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Store:
    """One connection to the records; not shared between threads."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._conn = open_database(path, create=create)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction; any SQLite failure becomes a StoreError saying what was lost."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {what} to {self.path}: {exc}") from exc
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot write {what} to {self.path}: {exc}") from exc
            raise

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the records in {self.path}: {exc}") from exc

    def _require_session(self, session_id: int) -> None:
        if not self._read("SELECT 1 FROM sessions WHERE id = ?", (session_id,)):
            raise StoreError(
                f"no session {session_id} in {self.path}; `devicectl sessions list` shows them"
            )

    # -- writes --------------------------------------------------------------

    def create_session(
        self,
        *,
        patient_ref: str,
        profile_name: str,
        profile_hash: str,
        profile_text: str,
        started_at: str,
    ) -> int:
        if not patient_ref.strip():
            raise StoreError("a session needs a pseudonymous patient reference; it was empty")
        parse_wall(started_at)
        with self._write("a new session") as conn:
            cur = conn.execute(
                "INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                " started_at) VALUES (?, ?, ?, ?, ?)",
                (patient_ref, profile_name, profile_hash, profile_text, started_at),
            )
            session_id = cur.lastrowid
        assert session_id is not None
        return session_id

    def set_device(
        self,
        session_id: int,
        *,
        serial: int,
        fw_version: int,
        cartridge_id: int,
        position_mode: str,
    ) -> None:
        self._require_session(session_id)
        with self._write(f"the pen of session {session_id}") as conn:
            set_device_row(conn, session_id, serial, fw_version, cartridge_id, position_mode)

    def append_events(self, session_id: int, events: Sequence[EventRecord]) -> None:
        self._require_session(session_id)
        with self._write(f"events of session {session_id}") as conn:
            insert_events(conn, session_id, events)

    def save_coverage(
        self, session_id: int, zones: Sequence[ZoneCoverage], state: bytes | None
    ) -> None:
        self._require_session(session_id)
        with self._write(f"coverage of session {session_id}") as conn:
            upsert_coverage(conn, session_id, zones, state)

    def close_session(self, session_id: int, outcome: str, ended_at: str) -> None:
        self._require_session(session_id)
        parse_wall(ended_at)
        with self._write(f"the end of session {session_id}") as conn:
            close_session_row(conn, session_id, outcome, ended_at)

    # -- questions the controller asks -----------------------------------------

    def used_cartridge_ids(self, *, exclude_session: int | None = None) -> frozenset[int]:
        """Cartridges seen in any session (single use), but for `exclude_session` (a resume)."""
        rows = self._read(
            "SELECT DISTINCT cartridge_id FROM sessions"
            " WHERE cartridge_id IS NOT NULL AND cartridge_id != 0 AND id IS NOT ?",
            (exclude_session,),
        )
        return frozenset(int(r[0]) for r in rows)

    def days_since_deep_treatment(
        self,
        patient_ref: str,
        now_iso: str,
        min_depth_um: int,
        *,
        exclude_session: int | None = None,
    ) -> dict[str, float]:
        """Zone name -> days since this patient's last session that stamped it deeper
        than `min_depth_um`. The session counts from its latest known moment (end,
        else last event, else start), the cautious reading of "last treated".
        """
        now = parse_wall(now_iso)
        rows = self._read(
            "SELECT z.name, s.started_at, s.ended_at,"
            " (SELECT max(e.wall) FROM events e WHERE e.session_id = s.id)"
            " FROM zone_coverage z JOIN sessions s ON s.id = z.session_id"
            " WHERE s.patient_ref = ? AND z.strokes > 0 AND z.depth_um > ? AND s.id IS NOT ?",
            (patient_ref, min_depth_um, exclude_session),
        )
        latest: dict[str, datetime] = {}
        for name, *walls in rows:
            moment = max(parse_wall(str(w)) for w in walls if w is not None)
            key = str(name)
            if key not in latest or moment > latest[key]:
                latest[key] = moment
        return {
            name: (now - moment).total_seconds() / _SECONDS_PER_DAY
            for name, moment in latest.items()
        }

    # -- reads -------------------------------------------------------------------

    def session(self, session_id: int) -> SessionRecord:
        self._require_session(session_id)
        return self._sessions("WHERE id = ?", (session_id,))[0]

    def sessions(self, limit: int = 50) -> list[SessionRecord]:
        """The most recent sessions first."""
        return self._sessions("ORDER BY id DESC LIMIT ?", (limit,))

    def _sessions(self, tail: str, args: Sequence[object]) -> list[SessionRecord]:
        rows = self._read(f"SELECT {SESSION_COLUMNS} FROM sessions {tail}", args)
        ids = [int(r[0]) for r in rows]
        zones: dict[int, list[ZoneCoverage]] = {i: [] for i in ids}
        if ids:
            marks = ", ".join("?" * len(ids))
            for row in self._read(
                f"SELECT session_id, {ZONE_COLUMNS} FROM zone_coverage"
                f" WHERE session_id IN ({marks}) ORDER BY session_id, zone_id",
                ids,
            ):
                zones[int(row[0])].append(zone_from_row(row[1:]))
        return [session_from_row(r, tuple(zones[i])) for r, i in zip(rows, ids, strict=True)]

    def events(self, session_id: int) -> list[EventRecord]:
        self._require_session(session_id)
        rows = self._read(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [event_from_row(r) for r in rows]

    def coverage_state(self, session_id: int) -> bytes | None:
        self._require_session(session_id)
        rows = self._read("SELECT state FROM coverage_state WHERE session_id = ?", (session_id,))
        if not rows or rows[0][0] is None:
            return None
        return bytes(rows[0][0])


@dataclass(frozen=True, slots=True)
class _Coverage:
    zones: Sequence[ZoneCoverage]
    #: the archive, or a function that builds it (run on the writer's thread)
    state: bytes | Callable[[], bytes] | None


@dataclass(frozen=True, slots=True)
class _Device:
    serial: int
    fw_version: int
    cartridge_id: int
    position_mode: str


@dataclass(frozen=True, slots=True)
class _Close:
    outcome: str | None
    ended_at: str | None


@dataclass(slots=True)
class _Pending:
    """What the writer thread holds between commits."""

    events: list[EventRecord] = field(default_factory=list)
    cover: _Coverage | None = None
    device: _Device | None = None

    def __bool__(self) -> bool:
        return bool(self.events) or self.cover is not None or self.device is not None


class RecordWriter:
    """Writes one session's records on its own thread, committing every
    `commit_interval_s`, and at once after a safety event or the pen's identity.

    `events`, `coverage` and `device` only put onto a queue, so they are safe to
    call from the inner loop; pass sequences you will not mutate afterwards.
    Failures (disk full, …) are collected in `errors`, never raised to the caller.
    """

    def __init__(self, path: Path, session_id: int, *, commit_interval_s: float = 0.1) -> None:
        self.path = path
        self.session_id = session_id
        self.commit_interval_s = commit_interval_s
        self.errors: list[str] = []
        self._queue: queue.SimpleQueue[Sequence[EventRecord] | _Coverage | _Device | _Close] = (
            queue.SimpleQueue()
        )
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"records-session-{session_id}", daemon=True
        )

    def start(self) -> None:
        """Starts the thread and waits until it has opened the file (or failed to: see errors)."""
        self._thread.start()
        self._ready.wait(timeout=5.0)

    def events(self, events: Sequence[EventRecord]) -> None:
        self._queue.put_nowait(events)

    def coverage(
        self, zones: Sequence[ZoneCoverage], state: bytes | Callable[[], bytes] | None
    ) -> None:
        """The latest coverage; `state` may be a function giving the archive, so
        that building it (milliseconds) happens here, off the caller's thread."""
        self._queue.put_nowait(_Coverage(zones, state))

    def device(
        self, *, serial: int, fw_version: int, cartridge_id: int, position_mode: str
    ) -> None:
        """The pen and cartridge of this session (Store.set_device, from the inner loop).

        Committed at once: a cartridge that touched skin must count as used even if
        the host dies the next moment.
        """
        self._queue.put_nowait(_Device(serial, fw_version, cartridge_id, position_mode))

    def close(self, outcome: str | None, ended_at: str | None, timeout_s: float = 5.0) -> None:
        """Writes everything queued, sets the outcome if given (None leaves the session
        resumable), and stops the thread."""
        if not self._thread.is_alive():
            if self._thread.ident is None:  # never started: write inline, still nothing lost
                self._thread.start()
            else:
                return
        self._queue.put_nowait(_Close(outcome, ended_at))
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._note(f"records of session {self.session_id} still writing after {timeout_s} s")

    # -- the writer thread -------------------------------------------------------

    def _note(self, message: str) -> None:
        if not self.errors or self.errors[-1] != message:
            self.errors.append(message)

    def _open(self) -> sqlite3.Connection | None:
        try:
            return open_database(self.path, create=False)
        except StoreError as exc:
            self._note(f"records of session {self.session_id} not saved: {exc}")
            return None

    def _run(self) -> None:
        conn = self._open()
        self._ready.set()
        pending = _Pending()
        closing: _Close | None = None
        deadline: float | None = None
        while closing is None:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            urgent = False
            while item is not None:
                if isinstance(item, _Close):
                    closing = item
                elif isinstance(item, _Coverage):
                    pending.cover = item  # only the latest coverage matters
                elif isinstance(item, _Device):
                    pending.device = item
                    urgent = True
                else:
                    pending.events.extend(item)
                    urgent = urgent or any(e.safety for e in item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if deadline is None and pending:
                deadline = time.monotonic() + self.commit_interval_s
            due = deadline is not None and time.monotonic() >= deadline
            if not (urgent or due or closing is not None):
                continue
            if conn is None:
                conn = self._open()
            if conn is not None and self._commit(conn, pending):
                pending, deadline = _Pending(), None
            else:  # keep everything and try again one interval later
                deadline = time.monotonic() + self.commit_interval_s
        if pending:
            lost = f"{len(pending.events)} events"
            lost += " and the latest coverage" if pending.cover is not None else ""
            lost += " and the pen's identity" if pending.device is not None else ""
            self._note(f"records of session {self.session_id}: {lost} could not be saved")
        elif conn is not None and closing.outcome is not None:
            self._close_session(conn, closing.outcome, closing.ended_at)
        if conn is not None:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, pending: _Pending) -> bool:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._write(conn, pending)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._note(f"records of session {self.session_id} not saved yet: {exc}")
            return False
        return True

    def _write(self, conn: sqlite3.Connection, pending: _Pending) -> None:
        if pending.device is not None:
            d = pending.device
            set_device_row(
                conn, self.session_id, d.serial, d.fw_version, d.cartridge_id, d.position_mode
            )
        if pending.events:
            insert_events(conn, self.session_id, pending.events)
        if pending.cover is not None:
            state = pending.cover.state
            if callable(state):
                state = state()
                pending.cover = _Coverage(pending.cover.zones, state)  # built once, even on retry
            upsert_coverage(conn, self.session_id, pending.cover.zones, state)

    def _close_session(self, conn: sqlite3.Connection, outcome: str, ended_at: str | None) -> None:
        ended = ended_at if ended_at is not None else datetime.now(UTC).isoformat()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                close_session_row(conn, self.session_id, outcome, ended)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, StoreError) as exc:
            self._note(f"session {self.session_id} could not be closed: {exc}")


def zone_spill_of(store: Store, session_id: int) -> dict[int, tuple[float, int]]:
    """Zones that took spill in a session (from its saved coverage grid): zone id ->
    (cm², deepest spilling treatment in µm); 0 is skin off the zones. The interval
    rules treat a zone with spill deeper than INTERVAL_DEPTH_UM as treated that day."""
    from devicectl.dose import zone_spill

    state = store.coverage_state(session_id)
    if not state:
        return {}
    try:
        return zone_spill(state)
    except DevicectlError:
        return {}  # a grid saved before spill was recorded
