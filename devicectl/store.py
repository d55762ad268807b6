"""Session records: `Store` for the CLI and for checks before and after a session;
`RecordWriter` (record_writer.py) for the session itself. The record types and
the SQLite schema live in records.py; a clinic's PostgreSQL in store_pg.py. One
`Store` speaks to either: a path is an SQLite file (one chair), a postgresql://
URL the clinic's server (records_where.resolve_db).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import psycopg

from devicectl import store_pg
from devicectl.claim import CONTINUED_CHAIN
from devicectl.continuation import TREATED_ITSELF
from devicectl.dbconn import DB_ERRORS, Conn
from devicectl.errors import StoreError
from devicectl.liveness import is_running
from devicectl.record_writer import RecordWriter
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
from devicectl.transitions import RECORDS_FAILED_REASON

__all__ = [
    "DB_ERRORS",
    "OUTCOMES",
    "RECORDS_FAILED_REASON",
    "CartridgeUsedError",
    "EventRecord",
    "PatientBusyError",
    "RecordWriter",
    "SessionRecord",
    "Store",
    "ZoneCoverage",
    "parse_wall",
]

#: A patient's other open session younger than this blocks a new one (another room).
OPEN_SESSION_BLOCK_S: Final = 12 * 3600.0

class CartridgeUsedError(StoreError):
    """The cartridge is recorded by another session (single use)."""


class PatientBusyError(StoreError):
    """The patient has a session open in another room."""


_SECONDS_PER_DAY: Final = 86_400.0
#: A session is refused when the records' file system has less free space than this.
MIN_FREE_BYTES: Final = 16 * 1024 * 1024


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
    """One connection to the records (an SQLite file, or a PostgreSQL URL); not
    shared between threads. `path` names them in messages. `read_only`: for a
    command that only reads, an SQLite file that cannot be written is read."""

    def __init__(self, target: Path | str, *, create: bool = True,
                 read_only: bool = False) -> None:
        self._conn: Conn
        if store_pg.is_pg_url(target):
            self.pg = True
            self.path: Path | str = store_pg.redact(str(target))
            self._pg = store_pg.connect(str(target))
            self._conn = self._pg
        else:
            self.pg = False
            self.path = Path(target)
            self._sqlite = open_database(self.path, create=create, read_only=read_only)
            self._conn = self._sqlite

    def close(self) -> None:
        if self.pg:
            self._pg.close()
        else:
            self._sqlite.close()

    @property
    def conn(self) -> Conn:
        """The connection, for the chain's checks and the notes (chain.py, notes.py)."""
        return self._conn

    def transaction(self, what: str) -> contextlib.AbstractContextManager[Conn]:
        """One write transaction; a database failure is a StoreError naming `what`."""
        return self._write(what)

    def _begin(self) -> None:
        self._conn.execute("BEGIN" if self.pg else "BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        in_tx = self._pg.in_transaction if self.pg else self._sqlite.in_transaction
        if in_tx:
            self._conn.execute("ROLLBACK")

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
    def _write(self, what: str) -> Iterator[Conn]:
        """One transaction; any database failure becomes a StoreError saying what was lost."""
        try:
            self._begin()
        except DB_ERRORS as exc:
            raise StoreError(f"cannot write {what} to {self.path}: {exc}") from exc
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(*DB_ERRORS):
                self._rollback()
            if isinstance(exc, DB_ERRORS):
                raise StoreError(f"cannot write {what} to {self.path}: {exc}") from exc
            raise

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except DB_ERRORS as exc:
            raise StoreError(f"cannot read the records in {self.path}: {exc}") from exc

    def _require_session(self, session_id: int) -> None:
        if not self._read("SELECT 1 FROM sessions WHERE id = ?", (session_id,)):
            raise StoreError(
                f"no session {session_id} in {self.path}; `devicectl sessions list` shows them"
            )

    def require_writable(self) -> None:
        """Raises StoreError (one sentence) unless a session's records can be written
        here: a write transaction is tried (read-only file or file system, no
        permission) and the file system needs MIN_FREE_BYTES free. On PostgreSQL, the
        login must be able to append events."""
        if self.pg:
            try:
                row = self._conn.execute(
                    "SELECT has_table_privilege('events', 'INSERT')").fetchone()
            except DB_ERRORS as exc:
                raise StoreError(f"the records on {self.path} cannot be read ({exc})") from exc
            if not row[0]:
                raise StoreError(
                    f"the login on {self.path} cannot append events; grant it the role "
                    f"{store_pg.WRITER_ROLE}; no session starts without its record")
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("UPDATE schema_version SET version = version")
            finally:
                self._rollback()
        except sqlite3.Error as exc:
            raise StoreError(
                f"the records database {self.path} cannot be written ({exc}); no session "
                "starts without its record: make it writable, or pass another --db"
            ) from exc
        assert isinstance(self.path, Path)
        free = shutil.disk_usage(self.path.parent).free
        if free < MIN_FREE_BYTES:
            raise StoreError(
                f"the records database {self.path} has {free // 1024} KiB free on its disk, "
                f"under the {MIN_FREE_BYTES // 2**20} MiB a session needs; free some space "
                "or pass another --db"
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
        operator: str | None = None,
        simulated: bool | None = None,
        room: str | None = None,
        continues: int | None = None,
    ) -> int:
        """The new session's id. On PostgreSQL the patient is locked for the
        transaction (rooms queue on it) and a session of theirs still open in
        another room, started under OPEN_SESSION_BLOCK_S ago, refuses this one: the
        interval checks then see every earlier session of the patient. `continues`:
        the session (link lost) this one continues, which the database checks
        (devicectl/continuation.py)."""
        if not patient_ref.strip():
            raise StoreError("a session needs a pseudonymous patient reference; it was empty")
        parse_wall(started_at)
        with self._write("a new session") as conn:
            if self.pg:
                self._refuse_open_elsewhere(conn, patient_ref, started_at)
            row = conn.execute(
                "INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                " started_at, operator, simulated, room, continues)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (patient_ref, profile_name, profile_hash, profile_text, started_at, operator,
                 None if simulated is None else int(simulated), room, continues),
            ).fetchone()
        return int(row[0])

    def _refuse_open_elsewhere(self, conn: Conn, patient_ref: str, started_at: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(upper(trim(?)), 0))",
                     (patient_ref,))
        now = parse_wall(started_at)
        for sid, room, started in conn.execute(
            "SELECT id, room, started_at FROM sessions WHERE outcome IS NULL"
            " AND upper(trim(patient_ref)) = upper(trim(?)) ORDER BY id",
            (patient_ref,),
        ):
            if abs((now - parse_wall(str(started))).total_seconds()) < OPEN_SESSION_BLOCK_S:
                where = f"room {room}" if room else "another room"
                raise PatientBusyError(
                    f"patient {patient_ref.strip()} has session {sid} open in {where} since "
                    f"{started}; finish or resume it there: one patient, one session at a time"
                )

    def set_device(
        self,
        session_id: int,
        *,
        serial: int,
        fw_version: int,
        cartridge_id: int,
        position_mode: str,
    ) -> None:
        """Records the pen and its cartridge. The cartridge is single use: it belongs
        to the session that first recorded it and to the sessions continuing that
        one (a lost link, `continues`: the same treatment), so recording one's own
        cartridge again is idempotent. Any other session's raises CartridgeUsedError
        naming it: checked in the writing transaction (an SQLite file's writers
        queue on it) and, on PostgreSQL, by the claims' primary key whatever room
        writes at the same moment (store_pg.py)."""
        self._require_session(session_id)
        try:
            with self._write(f"the pen of session {session_id}") as conn:
                if cartridge_id:
                    other = self._cartridge_holder(conn, cartridge_id, session_id)
                    if other is not None:
                        raise self._cartridge_used(cartridge_id, other)
                set_device_row(conn, session_id, serial, fw_version, cartridge_id,
                               position_mode)
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                other = self._cartridge_holder(self._conn, cartridge_id, session_id)
                raise self._cartridge_used(cartridge_id, other) from exc
            raise

    @staticmethod
    def _cartridge_holder(conn: Conn, cartridge_id: int, session_id: int) -> Any:
        """(id, room) of a session holding the cartridge that is neither this one nor
        one it continues; None when the cartridge is free or this treatment's."""
        return conn.execute(
            "SELECT id, room FROM sessions WHERE cartridge_id = ?"
            f" AND id NOT IN ({CONTINUED_CHAIN}) ORDER BY id LIMIT 1",
            (cartridge_id, session_id)).fetchone()

    @staticmethod
    def _cartridge_used(cartridge_id: int, other: Any) -> CartridgeUsedError:
        where = ""
        if other is not None:
            where = f" (session {other[0]}{f', room {other[1]}' if other[1] else ''})"
        return CartridgeUsedError(
            f"cartridge {cartridge_id} was already used in another session{where}; it is "
            "single use: fit a new cartridge")

    def record_refusal(self, *, reason: str, wall: str, patient_ref: str | None = None,
                       room: str | None = None, operator: str | None = None,
                       cartridge_id: int | None = None, session_id: int | None = None) -> None:
        """An attempt the records refused, apart from the sessions (never a treatment):
        with `session_id`, its patient, room and operator are that session's."""
        with self._write("a refused attempt") as conn:
            if session_id is not None:
                conn.execute(
                    "INSERT INTO refusals (wall, room, operator, patient_ref, cartridge_id,"
                    " session_id, reason) SELECT ?, room, operator, patient_ref, ?, id, ?"
                    " FROM sessions WHERE id = ?", (wall, cartridge_id, reason, session_id))
            else:
                conn.execute(
                    "INSERT INTO refusals (wall, room, operator, patient_ref, cartridge_id,"
                    " reason) VALUES (?, ?, ?, ?, ?, ?)",
                    (wall, room, operator, patient_ref or "", cartridge_id, reason))

    def refusals(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest refused attempts first."""
        keys = ("id", "wall", "room", "operator", "patient_ref", "cartridge_id", "session_id",
                "reason")
        rows = self._read(f"SELECT {', '.join(keys)} FROM refusals ORDER BY id DESC LIMIT ?",
                          (limit,))
        return [dict(zip(keys, r, strict=True)) for r in rows]

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

    def holds_sessions(self, *, simulated: bool) -> bool:
        """Whether the records hold simulator runs (True) or clinical sessions (False)."""
        return bool(self._read("SELECT 1 FROM sessions WHERE simulated = ? LIMIT 1",
                               (int(simulated),)))

    def used_cartridge_ids(self, *, exclude_session: int | None = None) -> frozenset[int]:
        """Cartridges seen in any session (single use), but for `exclude_session` (a resume):
        the session's cartridge, and every cartridge its pen reported (DEVICE events),
        so that one swapped in mid-session, which the session's row then names
        instead, still counts as used."""
        rows = self._read(
            "SELECT cartridge_id FROM sessions"
            " WHERE cartridge_id IS NOT NULL AND cartridge_id != 0 AND id != coalesce(?, 0)"
            " UNION SELECT CAST(json_extract(data, '$.cartridge_id') AS BIGINT) FROM events"
            " WHERE kind = 'DEVICE' AND session_id != coalesce(?, 0)",
            (exclude_session, exclude_session),
        )
        return frozenset(int(r[0]) for r in rows if r[0])

    def days_since_deep_treatment(
        self,
        patient_ref: str,
        now_iso: str,
        min_depth_um: int,
        *,
        exclude_session: int | None = None,
    ) -> dict[str, float]:
        """Zone name -> days since this patient's last session that stamped it deeper
        than `min_depth_um` (0: at any depth). The session counts from its latest known
        moment (end, else last event, else start), the cautious reading of "last
        treated". References match trimmed and whatever their case (devicectl.patients).
        `exclude_session` (a resume) and the sessions it continues are left out: the
        same treatment, whose strokes its coverage carries.
        """
        now = parse_wall(now_iso)
        rows = self._read(
            "SELECT z.name, s.started_at, s.ended_at,"
            " (SELECT max(e.wall) FROM events e WHERE e.session_id = s.id)"
            " FROM zone_coverage z JOIN sessions s ON s.id = z.session_id"
            " WHERE upper(trim(s.patient_ref)) = upper(trim(?)) AND z.strokes > 0"
            f" AND z.depth_um > ? AND s.id NOT IN ({CONTINUED_CHAIN}) AND {TREATED_ITSELF}",
            (patient_ref, min_depth_um, exclude_session or 0),
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

    def running_ids(self, session_ids: Sequence[int]) -> frozenset[int]:
        """Which of these sessions a process runs now (its lock is held, liveness.py):
        on the clinic's server, one look at the server's locks for them all."""
        if self.pg:
            return store_pg.running_session_ids(self._pg) & frozenset(session_ids)
        assert isinstance(self.path, Path)
        return frozenset(i for i in session_ids if is_running(self.path, i))

    def session(self, session_id: int) -> SessionRecord:
        self._require_session(session_id)
        return self._sessions("WHERE id = ?", (session_id,))[0]

    def days_since_spill(
        self,
        patient_ref: str,
        now_iso: str,
        min_depth_um: int,
        zone_names: Mapping[int, str],
        *,
        exclude_session: int | None = None,
    ) -> dict[str, float]:
        """Zone name -> days since this patient's last session whose footprint spilled
        onto that zone deeper than `min_depth_um` (0: at any depth), from each
        session's saved coverage grid. Spill holds a zone to its interval as treating
        it does: the skin was needled that day, planned or not."""
        now = parse_wall(now_iso)
        rows = self._read(
            "SELECT s.id, s.started_at, s.ended_at,"
            " (SELECT max(e.wall) FROM events e WHERE e.session_id = s.id)"
            " FROM sessions s JOIN coverage_state c ON c.session_id = s.id"
            " WHERE upper(trim(s.patient_ref)) = upper(trim(?))"
            f" AND s.id NOT IN ({CONTINUED_CHAIN}) AND {TREATED_ITSELF}",
            (patient_ref, exclude_session or 0),
        )
        out: dict[str, float] = {}
        for sid, *walls in rows:
            moment = max(parse_wall(str(w)) for w in walls if w is not None)
            days = (now - moment).total_seconds() / _SECONDS_PER_DAY
            for zone_id, (cm2, depth_um) in zone_spill_of(self, int(sid)).items():
                name = zone_names.get(zone_id)
                if name is not None and cm2 > 0 and depth_um > min_depth_um:
                    out[name] = min(days, out.get(name, days))
        return out

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


def zone_spill_of(store: Store, session_id: int) -> dict[int, tuple[float, int]]:
    """Zones that took spill in a session (from its saved coverage grid): zone id ->
    (cm², deepest spilling treatment in µm); 0 is skin off the zones. The interval
    rules treat a zone with spill deeper than INTERVAL_DEPTH_UM as treated that day."""
    from devicectl.dose import zone_spill
    from devicectl.errors import DevicectlError

    state = store.coverage_state(session_id)
    if not state:
        return {}
    try:
        return zone_spill(state)
    except DevicectlError:
        return {}  # a grid saved before spill was recorded
