"""`devicectl records migrate`: a chair's SQLite history onto the clinic's server.

Only closed sessions move (an interrupted one may still be resumed at the chair).
Each is checked against its hash chain at the chair first, copied in one
transaction (header, pen, events, coverage, notes, then its closure), re-chained
under its new id on the server, and checked there. The source's closure hash is
kept with the copy (`migrated_from`, unique), so a second run copies nothing twice.

Session ids are each database's own counters (a chair's 7 is not the server's
7), so a copy cannot keep its id, and it need not: its chain is recomputed under
the new id anyway, the chair's closure hash (`migrated_from`) pinning the
original. A continuation (a lost link resumed: the chair's records link it to
the session it continues, `sessions.continues`, devicectl/continuation.py) is
linked to its predecessor's copy on the server, found by the predecessor's
closure hash at the chair, and its first event, CONTINUES, names that copy with
the chair's id beside it (`chair_session_id`, and in its text), so the server's
rules follow the treatment as they do a room's: its cartridge is its
predecessor's. The predecessor is copied first (it is older); a continuation
whose predecessor is not on the server is not copied, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg

from devicectl.chain import verify_session
from devicectl.dbconn import Conn
from devicectl.errors import StoreError
from devicectl.notes import append_note
from devicectl.records import (
    EVENT_COLUMNS,
    SESSION_COLUMNS,
    ZONE_COLUMNS,
    EventRecord,
    close_session_row,
    event_from_row,
    insert_events,
    session_from_row,
    set_device_row,
    upsert_coverage,
    zone_from_row,
)
from devicectl.store import Store


@dataclass(frozen=True, slots=True)
class Moved:
    """What happened to one session of the chair."""

    source_id: int
    target_id: int | None
    #: "copied", "already there", "open: not moved", or why it was not copied
    verdict: str


def parse_source(text: str) -> Path:
    """`sqlite:PATH` (or a bare path) as the chair's records file."""
    # expanduser: the shell leaves a ~ after `sqlite:` as it is (the README writes one)
    path = Path(text.removeprefix("sqlite:")).expanduser()
    if not path.is_file():
        raise StoreError(f"no records file at {path} (--from sqlite:PATH)")
    return path


def migrate(source: Path, target: str) -> Iterator[Moved]:
    """Copies every closed session of `source` not yet on `target`, one by one."""
    with Store(source, create=False, read_only=True) as src, Store(target) as dst:
        if not dst.pg:
            raise StoreError("--to takes the clinic's postgresql:// URL")
        for simulated in (True, False):  # the records' rule (run_checks.check_records_kind)
            if src.holds_sessions(simulated=simulated) and dst.holds_sessions(
                    simulated=not simulated):
                held, there = (("simulator runs", "clinical sessions") if simulated else
                               ("clinical sessions", "simulator runs"))
                raise StoreError(f"{source} holds {held} and {dst.path} {there}: they never "
                                 "share a database; nothing copied")
        ids = [int(r[0]) for r in src.conn.execute("SELECT id FROM sessions ORDER BY id")]
        for sid in ids:
            yield _one(src.conn, dst, sid)


def _one(src: Conn, dst: Store, sid: int) -> Moved:
    check = verify_session(src, sid)
    if check.problem is not None:
        return Moved(sid, None, f"not copied: its chain at the chair is broken ({check.problem})")
    if check.unchained:
        return Moved(sid, None, "not copied: recorded before the records kept a hash chain")
    if not check.closed or check.head is None:
        return Moved(sid, None, "open at the chair (resume or close it there): not moved")
    found = dst.conn.execute("SELECT id FROM sessions WHERE migrated_from = ?",
                             (check.head,)).fetchone()
    if found is not None:
        return Moved(sid, int(found[0]), "already there")
    row = src.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (sid,)).fetchone()
    rec = session_from_row(row, ())
    events = [event_from_row(r) for r in src.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? ORDER BY id", (sid,))]
    link = None if rec.continues is None else _copy_of(src, dst, rec.continues)
    if rec.continues is not None and link is None:
        return Moved(sid, None, _not_there(rec.continues))
    if events and events[0].kind == "CONTINUES":
        continues = _continues_on_server(src, dst, events[0])
        if isinstance(continues, str):
            return Moved(sid, None, continues)
        events[0] = continues
    zones = [zone_from_row(r) for r in src.execute(
        f"SELECT {ZONE_COLUMNS} FROM zone_coverage WHERE session_id = ? ORDER BY zone_id",
        (sid,))]
    state_row = src.execute("SELECT state FROM coverage_state WHERE session_id = ?",
                            (sid,)).fetchone()
    notes = src.execute("SELECT wall, adverse_kind, text, author FROM notes"
                        " WHERE session_id = ? ORDER BY id", (sid,)).fetchall()
    try:
        with dst.transaction(f"the copy of session {sid}") as conn:
            new_id = int(conn.execute(
                "INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                " started_at, operator, simulated, room, migrated_from, continues)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (rec.patient_ref, rec.profile_name, rec.profile_hash, rec.profile_text,
                 rec.started_at, rec.operator,
                 None if rec.simulated is None else int(rec.simulated), rec.room, check.head,
                 link),
            ).fetchone()[0])
            insert_events(conn, new_id, events)
            if rec.device_serial is not None:
                set_device_row(conn, new_id, int(rec.device_serial), int(rec.fw_version or 0),
                               int(rec.cartridge_id or 0), str(rec.position_mode))
            if zones or state_row is not None:
                upsert_coverage(conn, new_id, zones,
                                None if state_row is None or state_row[0] is None
                                else bytes(state_row[0]))
            for wall, kind, text, author in notes:
                append_note(conn, (new_id, wall, kind, text, author))
            close_session_row(conn, new_id, str(rec.outcome), str(rec.ended_at))
            there = verify_session(conn, new_id)
            if there.problem is not None or there.events != check.events:
                raise StoreError(f"the copy of session {sid} does not check on the server "
                                 f"({there.problem or 'event count differs'}); nothing copied")
    except StoreError as exc:
        if isinstance(exc.__cause__, psycopg.errors.UniqueViolation) and \
                "cartridge" in str(exc):
            return Moved(sid, None, f"not copied: its cartridge {rec.cartridge_id} is already "
                         "recorded on the server by another session")
        raise
    return Moved(sid, new_id, "copied")


def _continues_on_server(src: Conn, dst: Store, first: EventRecord) -> EventRecord | str:
    """A continuation's CONTINUES as the server's copy records it: naming the copy of
    the session it continues there, the chair's id kept beside it; or why the
    continuation cannot be copied (its predecessor is not on the server)."""
    chair_id = first.data.get("session_id")
    if not isinstance(chair_id, int) or isinstance(chair_id, bool):
        return "not copied: its CONTINUES event names no session"
    new_id = _copy_of(src, dst, chair_id)
    if new_id is None:
        return _not_there(chair_id)
    prefix = f"continues session {chair_id} "
    text = first.text
    if text.startswith(prefix):
        text = f"continues session {new_id} (session {chair_id} at the chair) " + \
            text[len(prefix):]
    return replace(first, text=text,
                   data={**first.data, "session_id": new_id, "chair_session_id": chair_id})


def _copy_of(src: Conn, dst: Store, chair_id: int) -> int | None:
    """The server's copy of the chair's session `chair_id`, by its closure hash."""
    pred = verify_session(src, chair_id)
    found = None
    if pred.head is not None and pred.problem is None:
        found = dst.conn.execute("SELECT id FROM sessions WHERE migrated_from = ?",
                                 (pred.head,)).fetchone()
    return None if found is None else int(found[0])


def _not_there(chair_id: int) -> str:
    return (f"not copied: it continues session {chair_id}, which is not on the server "
            "(copy that one first)")
