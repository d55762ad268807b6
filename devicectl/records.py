"""What a session record is, and how it is laid out in SQLite.

The record types, the schema with its migrations and append-only triggers, and
the few SQL writes shared by `Store` and `RecordWriter` (devicectl/store.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from devicectl.chain import closure_hash, hashed_event_rows
from devicectl.continuation import SQLITE_MIGRATION as CONTINUATION_MIGRATION
from devicectl.continuation import SQLITE_REFUSED_MIGRATION
from devicectl.dbconn import Conn, append_rows
from devicectl.errors import StoreError
from devicectl.records_ro import open_read_only

#: PRAGMA application_id of a devicectl database ("DCTL"): tells ours from any SQLite file.
APPLICATION_ID: Final = 0x4443544C
#: How a session can end; None in the records means interrupted (resumable).
OUTCOMES: Final = frozenset({"complete", "aborted", "fault", "link_lost", "refused"})
#: What a NUL in an event's text is recorded as (PostgreSQL's text holds no NUL).
NUL_STANDIN: Final = "\ufffd"
#: Seconds a connection waits for another writer before giving up.
BUSY_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One line of a session's append-only log; `wall` is ISO-8601 UTC."""

    t_us: int
    wall: str
    kind: str
    text: str
    zone_id: int | None
    data: Mapping[str, Any]
    safety: bool = False


@dataclass(frozen=True, slots=True)
class ZoneCoverage:
    """A zone's latest results in a session."""

    zone_id: int
    name: str
    depth_um: int
    rate_dhz: int
    fraction: float
    target_fraction: float
    strokes: int
    cells_at_max: int
    done: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as recorded; `outcome` None means interrupted."""

    id: int
    patient_ref: str
    profile_name: str
    profile_hash: str
    profile_text: str
    device_serial: int | None
    fw_version: int | None
    cartridge_id: int | None
    started_at: str
    ended_at: str | None
    outcome: str | None
    position_mode: str | None
    zones: tuple[ZoneCoverage, ...] = field(default=())
    #: who ran the session (--operator); None in records from before it was asked
    operator: str | None = None
    #: a simulator run (True), a clinical one (False), or recorded before this was kept
    simulated: bool | None = None
    #: the hash chain's closure (chain.py), set with the outcome
    chain_head: str | None = None
    #: the treatment room (run --room); None for a single chair
    room: str | None = None
    #: the session (link lost) this one continues, as the records link them
    continues: int | None = None


_FINAL = "a closed session is final"
_OPEN = "(SELECT outcome FROM sessions WHERE id = NEW.session_id) IS NOT NULL"

# Each entry brings the schema from version i to i + 1; never edit a released one.
#: The refused attempts, as both backends spell the table ({id}, {ref}: their types).
REFUSALS_TABLE: Final = """CREATE TABLE refusals (
    id {id},
    wall TEXT NOT NULL,
    room TEXT,
    operator TEXT,
    patient_ref TEXT NOT NULL,
    cartridge_id {ref},
    session_id {ref} REFERENCES sessions(id),
    reason TEXT NOT NULL
)"""

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (0)",
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            patient_ref TEXT NOT NULL CHECK (length(patient_ref) > 0),
            profile_name TEXT NOT NULL,
            profile_hash TEXT NOT NULL,
            profile_text TEXT NOT NULL,
            device_serial INTEGER,
            fw_version INTEGER,
            cartridge_id INTEGER,
            position_mode TEXT,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT CHECK (outcome IS NULL OR outcome IN
                ('complete', 'aborted', 'fault', 'link_lost', 'refused'))
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            t_us INTEGER NOT NULL,
            wall TEXT NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            zone_id INTEGER,
            data TEXT NOT NULL,
            safety INTEGER NOT NULL
        )""",
        """CREATE TABLE zone_coverage (
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            zone_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            depth_um INTEGER NOT NULL,
            rate_dhz INTEGER NOT NULL,
            fraction REAL NOT NULL,
            target_fraction REAL NOT NULL,
            strokes INTEGER NOT NULL,
            cells_at_max INTEGER NOT NULL,
            done INTEGER NOT NULL,
            seconds REAL NOT NULL,
            PRIMARY KEY (session_id, zone_id)
        )""",
        """CREATE TABLE coverage_state (
            session_id INTEGER PRIMARY KEY REFERENCES sessions(id),
            state BLOB
        )""",
        "CREATE INDEX events_by_session ON events (session_id, id)",
        "CREATE INDEX sessions_by_patient ON sessions (patient_ref)",
        "CREATE INDEX sessions_by_cartridge ON sessions (cartridge_id)",
        # The log is evidence: nothing rewrites or removes it, whoever asks.
        """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
        """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
        f"""CREATE TRIGGER events_after_close BEFORE INSERT ON events WHEN {_OPEN}
            BEGIN SELECT RAISE(ABORT, '{_FINAL}'); END""",
        # An outcome is set once; after it, nothing about the session changes.
        f"""CREATE TRIGGER sessions_final BEFORE UPDATE ON sessions
            WHEN OLD.outcome IS NOT NULL BEGIN SELECT RAISE(ABORT, '{_FINAL}'); END""",
        """CREATE TRIGGER sessions_no_delete BEFORE DELETE ON sessions
            BEGIN SELECT RAISE(ABORT, 'sessions are kept'); END""",
        f"""CREATE TRIGGER zone_coverage_insert_final BEFORE INSERT ON zone_coverage
            WHEN {_OPEN} BEGIN SELECT RAISE(ABORT, '{_FINAL}'); END""",
        f"""CREATE TRIGGER zone_coverage_update_final BEFORE UPDATE ON zone_coverage
            WHEN {_OPEN} BEGIN SELECT RAISE(ABORT, '{_FINAL}'); END""",
        f"""CREATE TRIGGER coverage_state_insert_final BEFORE INSERT ON coverage_state
            WHEN {_OPEN} BEGIN SELECT RAISE(ABORT, '{_FINAL}'); END""",
        f"""CREATE TRIGGER coverage_state_update_final BEFORE UPDATE ON coverage_state
            WHEN {_OPEN} BEGIN SELECT RAISE(ABORT, '{_FINAL}'); END""",
    ),
    # 1 -> 2: who ran the session (issue 13).
    ("ALTER TABLE sessions ADD COLUMN operator TEXT",),
    # 2 -> 3: the hash chain (devicectl/chain.py), and simulator runs told from clinical ones.
    (
        "ALTER TABLE events ADD COLUMN hash TEXT",
        "ALTER TABLE sessions ADD COLUMN chain_head TEXT",
        "ALTER TABLE sessions ADD COLUMN simulated INTEGER",
        "CREATE TABLE chain_origin (first_session_id INTEGER NOT NULL)",
        "INSERT INTO chain_origin SELECT coalesce((SELECT max(seq) FROM sqlite_sequence"
        " WHERE name = 'sessions'), 0) + 1",
        """CREATE TRIGGER chain_origin_fixed BEFORE UPDATE ON chain_origin
            BEGIN SELECT RAISE(ABORT, 'the chain origin is fixed'); END""",
        """CREATE TRIGGER chain_origin_kept BEFORE DELETE ON chain_origin
            BEGIN SELECT RAISE(ABORT, 'the chain origin is fixed'); END""",
    ),
    # 3 -> 4: notes and adverse events, added after a session too (devicectl/notes.py).
    (
        """CREATE TABLE notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            wall TEXT NOT NULL,
            adverse_kind TEXT,
            text TEXT NOT NULL,
            author TEXT,
            hash TEXT NOT NULL
        )""",
        "CREATE INDEX notes_by_session ON notes (session_id, id)",
        """CREATE TRIGGER notes_no_update BEFORE UPDATE ON notes
            BEGIN SELECT RAISE(ABORT, 'notes are append-only'); END""",
        """CREATE TRIGGER notes_no_delete BEFORE DELETE ON notes
            BEGIN SELECT RAISE(ABORT, 'notes are append-only'); END""",
    ),
    # 4 -> 5: the treatment room (run --room), as on the clinic's server (store_pg.py).
    ("ALTER TABLE sessions ADD COLUMN room TEXT",),
    # 5 -> 6: attempts the records refused (a cartridge another session holds, a patient
    # open in another room): kept apart from the sessions, never counted as treatments.
    (
        REFUSALS_TABLE.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", ref="INTEGER"),
        """CREATE TRIGGER refusals_no_update BEFORE UPDATE ON refusals
            BEGIN SELECT RAISE(ABORT, 'refusals are append-only'); END""",
        """CREATE TRIGGER refusals_no_delete BEFORE DELETE ON refusals
            BEGIN SELECT RAISE(ABORT, 'refusals are append-only'); END""",
    ),
    # 6 -> 7: each note anchored to the one written before it in the whole records
    # (devicectl/note_anchor.py); the notes already there are not (said so, not failed).
    (
        "ALTER TABLE notes ADD COLUMN anchor TEXT",
        "CREATE TABLE notes_anchor_origin (first_note_id INTEGER NOT NULL)",
        "INSERT INTO notes_anchor_origin SELECT coalesce((SELECT max(seq) FROM sqlite_sequence"
        " WHERE name = 'notes'), 0) + 1",
        """CREATE TRIGGER notes_anchor_origin_fixed BEFORE UPDATE ON notes_anchor_origin
            BEGIN SELECT RAISE(ABORT, 'the notes anchor origin is fixed'); END""",
        """CREATE TRIGGER notes_anchor_origin_kept BEFORE DELETE ON notes_anchor_origin
            BEGIN SELECT RAISE(ABORT, 'the notes anchor origin is fixed'); END""",
    ),
    # 7 -> 8: which session a continuation continues, the records' own link
    # (devicectl/continuation.py), taken at migration from the CONTINUES events.
    CONTINUATION_MIGRATION,
    # 8 -> 9: a continuation that ended refused (no START sent) does not hold the slot.
    SQLITE_REFUSED_MIGRATION,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def open_database(
    path: Path, *, create: bool = True, read_only: bool = False
) -> sqlite3.Connection:
    """A connection to a devicectl database, its schema brought up to date.

    The connection is in autocommit mode: writers wrap their work in
    BEGIN IMMEDIATE … COMMIT themselves. With `read_only` (a command that only
    reads), a file that cannot be written, or in a folder that cannot, is opened
    read-only. Raises StoreError with one sentence.
    """
    if not create and not path.exists():
        raise StoreError(f"no records yet at {path}")
    if read_only and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return open_read_only(path, APPLICATION_ID, SCHEMA_VERSION)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the records folder {path.parent}: {exc.strerror}") from exc
    try:  # created owner-only: the records are health data (the WAL inherits the mode)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the records file {path}: {exc.strerror}") from exc
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the records file {path}: {exc}") from exc
    try:
        _prepare(conn, path)
    except sqlite3.OperationalError as exc:  # not the contents: the file or its folder
        conn.close()
        raise StoreError(
            f"cannot open the records file {path} ({exc}); check that it and its folder "
            "can be written (SQLite keeps its journal beside it), or pass another --db"
        ) from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is not a devicectl records database ({exc})") from exc
    except StoreError:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    foreign = app_id != 0 or conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id != APPLICATION_ID and foreign:
        raise StoreError(f"{path} is not a devicectl records database; pass another --db")
    # WAL lets the CLI read while a session writes; FULL makes each commit survive power loss.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    if app_id == APPLICATION_ID and _schema_version(conn) == SCHEMA_VERSION:
        return  # up to date: no write lock, so a reader never holds up a session's writer
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer devicectl (schema {version}); upgrade devicectl"
            )
        for statements in MIGRATIONS[version:]:
            for sql in statements:
                conn.execute(sql)
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(version)


_EVENT_INSERT: Final = ("session_id", "t_us", "wall", "kind", "text", "zone_id", "data",
                        "safety", "hash")


def insert_events(conn: Conn, session_id: int, events: Sequence[EventRecord]) -> None:
    """Appends the events, each with its link in the session's hash chain (chain.py);
    call inside the transaction that commits them. A NUL in a line's text is kept as
    U+FFFD on both backends: PostgreSQL's text holds none, and it is never meant."""
    rows = [
        (
            session_id,
            e.t_us,
            e.wall,
            e.kind.replace("\x00", NUL_STANDIN),
            e.text.replace("\x00", NUL_STANDIN),
            e.zone_id,
            json.dumps(dict(e.data), default=str, separators=(",", ":")),
            int(e.safety),
        )
        for e in events
    ]
    append_rows(conn, "events", _EVENT_INSERT, hashed_event_rows(conn, session_id, rows))


def upsert_coverage(
    conn: Conn,
    session_id: int,
    zones: Sequence[ZoneCoverage],
    state: bytes | None,
) -> None:
    conn.executemany(
        "INSERT INTO zone_coverage (session_id, zone_id, name, depth_um, rate_dhz, fraction,"
        " target_fraction, strokes, cells_at_max, done, seconds)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (session_id, zone_id) DO UPDATE SET name = excluded.name,"
        " depth_um = excluded.depth_um, rate_dhz = excluded.rate_dhz,"
        " fraction = excluded.fraction, target_fraction = excluded.target_fraction,"
        " strokes = excluded.strokes, cells_at_max = excluded.cells_at_max,"
        " done = excluded.done, seconds = excluded.seconds",
        [
            (
                session_id,
                z.zone_id,
                z.name,
                z.depth_um,
                z.rate_dhz,
                z.fraction,
                z.target_fraction,
                z.strokes,
                z.cells_at_max,
                int(z.done),
                z.seconds,
            )
            for z in zones
        ],
    )
    conn.execute(
        "INSERT INTO coverage_state (session_id, state) VALUES (?, ?)"
        " ON CONFLICT (session_id) DO UPDATE SET state = excluded.state",
        (session_id, state),
    )


def set_device_row(
    conn: Conn,
    session_id: int,
    serial: int,
    fw_version: int,
    cartridge_id: int,
    position_mode: str,
) -> None:
    conn.execute(
        "UPDATE sessions SET device_serial = ?, fw_version = ?, cartridge_id = ?,"
        " position_mode = ? WHERE id = ?",
        (serial, fw_version, cartridge_id, position_mode, session_id),
    )


def close_session_row(
    conn: Conn, session_id: int, outcome: str, ended_at: str
) -> None:
    """Sets the outcome once; StoreError names the session if it is unknown or closed."""
    if outcome not in OUTCOMES:
        raise StoreError(
            f"unknown session outcome {outcome!r}; one of {', '.join(sorted(OUTCOMES))}"
        )
    row = conn.execute("SELECT outcome FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise StoreError(f"no session {session_id} to close")
    if row[0] is not None:
        raise StoreError(f"session {session_id} is already closed ({row[0]}); records are final")
    conn.execute(
        "UPDATE sessions SET outcome = ?, ended_at = ?, chain_head = ? WHERE id = ?",
        (outcome, ended_at, closure_hash(conn, session_id, outcome, ended_at), session_id),
    )


def event_from_row(row: Sequence[Any]) -> EventRecord:
    t_us, wall, kind, text, zone_id, data, safety = row
    return EventRecord(
        t_us=int(t_us),
        wall=str(wall),
        kind=str(kind),
        text=str(text),
        zone_id=None if zone_id is None else int(zone_id),
        data=json.loads(data),
        safety=bool(safety),
    )


def zone_from_row(row: Sequence[Any]) -> ZoneCoverage:
    zone_id, name, depth_um, rate_dhz, fraction, target, strokes, at_max, done, seconds = row
    return ZoneCoverage(
        zone_id=int(zone_id),
        name=str(name),
        depth_um=int(depth_um),
        rate_dhz=int(rate_dhz),
        fraction=float(fraction),
        target_fraction=float(target),
        strokes=int(strokes),
        cells_at_max=int(at_max),
        done=bool(done),
        seconds=float(seconds),
    )


EVENT_COLUMNS: Final = "t_us, wall, kind, text, zone_id, data, safety"
ZONE_COLUMNS: Final = (
    "zone_id, name, depth_um, rate_dhz, fraction, target_fraction, strokes, cells_at_max,"
    " done, seconds"
)
SESSION_COLUMNS: Final = (
    "id, patient_ref, profile_name, profile_hash, profile_text, device_serial, fw_version,"
    " cartridge_id, started_at, ended_at, outcome, position_mode, operator, simulated,"
    " chain_head, room, continues"
)


def session_from_row(row: Sequence[Any], zones: tuple[ZoneCoverage, ...]) -> SessionRecord:
    (sid, patient, pname, phash, ptext, serial, fw, cart, started, ended, outcome, mode,
     operator, simulated, head, room, continues) = row
    return SessionRecord(
        id=int(sid),
        patient_ref=str(patient),
        profile_name=str(pname),
        profile_hash=str(phash),
        profile_text=str(ptext),
        device_serial=serial,
        fw_version=fw,
        cartridge_id=cart,
        started_at=str(started),
        ended_at=ended,
        outcome=outcome,
        position_mode=mode,
        zones=zones,
        operator=operator,
        simulated=None if simulated is None else bool(simulated),
        chain_head=head,
        room=room,
        continues=None if continues is None else int(continues),
    )
