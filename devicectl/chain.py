"""The records' hash chain: each event row carries the SHA-256 of the previous
row's hash and its own canonical form, starting from the session's header; the
session's closure (outcome, end, pen, zones, coverage) is the chain's last link.

Anyone with write access can still rewrite a whole chain; what this catches is
an edited, removed or inserted row, or a changed outcome, whatever the triggers
said at the time. The head printed on the report anchors the chain on paper.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from devicectl.dbconn import Conn

#: The columns of an event row the hash covers, in the order they are hashed.
EVENT_HASHED: Final = "session_id, t_us, wall, kind, text, zone_id, data, safety"
_ZONE_COLUMNS: Final = (
    "zone_id, name, depth_um, rate_dhz, fraction, target_fraction, strokes, cells_at_max,"
    " done, seconds"
)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _link(prev: str, kind: str, value: Any) -> str:
    digest = hashlib.sha256()
    digest.update(prev.encode("ascii"))
    digest.update(b"\n" + kind.encode("ascii") + b"\n")
    digest.update(_canonical(value))
    return digest.hexdigest()


def event_hash(prev: str, row: Sequence[Any]) -> str:
    """The hash of one event row (values in EVENT_HASHED order, as stored) after `prev`."""
    return _link(prev, "event", list(row))


def note_hash(prev: str, row: Sequence[Any]) -> str:
    """The hash of a note row (session_id, wall, adverse_kind, text, author) after `prev`;
    a session's notes chain from its genesis, apart from its events."""
    return _link(prev, "note", list(row))


def anchored_note_hash(prev: str, row: Sequence[Any]) -> str:
    """The hash of a note written with its anchor across the records (note_anchor.py):
    its session's chain says so, so the anchor cannot be cleared unnoticed."""
    return _link(prev, "anchored note", list(row))


def genesis(conn: Conn, session_id: int) -> str:
    """The chain's start: the session's header as it was created (the stored profile
    text included, by its own SHA-256)."""
    row = conn.execute(
        "SELECT id, patient_ref, profile_name, profile_hash, profile_text, started_at,"
        " operator, simulated FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return _link("", "session", [session_id, None])
    sid, patient, pname, phash, ptext, started, operator, simulated = row
    text_sha = hashlib.sha256(str(ptext).encode("utf-8")).hexdigest()
    return _link("", "session", [sid, patient, pname, phash, text_sha, started, operator,
                                 simulated])


def last_hash(conn: Conn, session_id: int) -> str:
    """The hash the session's next event chains to: its last event's, or its genesis."""
    row = conn.execute(
        "SELECT hash FROM events WHERE session_id = ? ORDER BY id DESC LIMIT 1", (session_id,)
    ).fetchone()
    if row is None or row[0] is None:
        return genesis(conn, session_id)
    return str(row[0])


def hashed_event_rows(
    conn: Conn, session_id: int, rows: Sequence[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """`rows` (EVENT_HASHED order) each with its chained hash appended, ready to insert
    in the same transaction as this read of the chain's end."""
    prev = last_hash(conn, session_id)
    out = []
    for row in rows:
        prev = event_hash(prev, row)
        out.append((*row, prev))
    return out


def closure_hash(
    conn: Conn, session_id: int, outcome: str, ended_at: str
) -> str:
    """The chain's last link: the outcome and end with what the session row and its
    results hold then (pen, cartridge, zones, the coverage archive's SHA-256)."""
    device = conn.execute(
        "SELECT device_serial, fw_version, cartridge_id, position_mode FROM sessions"
        " WHERE id = ?",
        (session_id,),
    ).fetchone()
    zones = conn.execute(
        f"SELECT {_ZONE_COLUMNS} FROM zone_coverage WHERE session_id = ? ORDER BY zone_id",
        (session_id,),
    ).fetchall()
    state = conn.execute(
        "SELECT state FROM coverage_state WHERE session_id = ?", (session_id,)
    ).fetchone()
    state_sha = (
        None if state is None or state[0] is None else hashlib.sha256(bytes(state[0])).hexdigest()
    )
    count = conn.execute(
        "SELECT count(*) FROM events WHERE session_id = ?", (session_id,)
    ).fetchone()[0]
    closure = [outcome, ended_at, list(device or ()), [list(z) for z in zones], state_sha, count]
    return _link(last_hash(conn, session_id), "close", closure)


# -- verification ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """One session's chain: `problem` is None when it holds."""

    session_id: int
    problem: str | None
    #: the closure hash of a closed session, the last event's of an open one
    head: str | None
    events: int
    closed: bool
    #: recorded before the records kept a chain: nothing to check
    unchained: bool = False


def chain_origin(conn: Conn) -> int:
    """The first session id recorded with a chain (earlier ones predate it)."""
    row = conn.execute("SELECT first_session_id FROM chain_origin").fetchone()
    return 1 if row is None else int(row[0])


def verify_session(conn: Conn, session_id: int) -> ChainCheck:
    """Recomputes the session's chain from its rows; names the first row that breaks it."""
    head = conn.execute(
        "SELECT outcome, ended_at, chain_head FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if head is None:
        return ChainCheck(session_id, f"session {session_id} is missing", None, 0, False)
    outcome, ended_at, stored_head = head
    before_chain = session_id < chain_origin(conn)
    if before_chain and not _carries_chain(conn, session_id, stored_head):
        return ChainCheck(session_id, None, None, 0, outcome is not None, unchained=True)
    prev = genesis(conn, session_id)
    count = 0
    for row_id, *row, stored in conn.execute(
        f"SELECT id, {EVENT_HASHED}, hash FROM events WHERE session_id = ? ORDER BY id",
        (session_id,),
    ):
        count += 1
        if before_chain and stored is None:
            continue  # written before the chain; its first hashed row chains from genesis
        before_chain = False
        prev = event_hash(prev, row)
        if stored != prev:
            problem = (
                f"session {session_id}: event row {row_id} (the {_ordinal(count)} of the "
                f"session, {row[3]}) does not match the chain: it was changed, or a row "
                "before it was removed or inserted"
            )
            return ChainCheck(session_id, problem, None, count, outcome is not None)
    notes_problem = _verify_notes(conn, session_id)
    if notes_problem is not None:
        return ChainCheck(session_id, notes_problem, None, count, outcome is not None)
    if outcome is None:
        if stored_head is not None:
            problem = (
                f"session {session_id} has a closure hash but no outcome: its outcome "
                "was removed after it ended"
            )
            return ChainCheck(session_id, problem, None, count, False)
        return ChainCheck(session_id, None, prev, count, False)
    expected = closure_hash(conn, session_id, str(outcome), str(ended_at))
    if stored_head != expected:
        problem = (
            f"session {session_id}: the session row (outcome {outcome!r}, end, pen, zones "
            "or coverage) does not match its closure hash: it was changed after the "
            "session ended, or its last events were removed"
        )
        return ChainCheck(session_id, problem, None, count, True)
    return ChainCheck(session_id, None, str(stored_head), count, True)


def _carries_chain(conn: Conn, session_id: int, stored_head: object) -> bool:
    """The session's rows hold hashes: it was recorded with the chain, whatever
    chain_origin (one row, which anyone with write access can raise) says."""
    if stored_head is not None:
        return True
    return conn.execute(
        "SELECT 1 FROM events WHERE session_id = ? AND hash IS NOT NULL LIMIT 1", (session_id,)
    ).fetchone() is not None


def _verify_notes(conn: Conn, session_id: int) -> str | None:
    prev = genesis(conn, session_id)
    for row_id, *row, stored, anchor in conn.execute(
        "SELECT id, session_id, wall, adverse_kind, text, author, hash, anchor FROM notes"
        " WHERE session_id = ? ORDER BY id",
        (session_id,),
    ):
        prev = (note_hash if anchor is None else anchored_note_hash)(prev, row)
        if stored != prev:
            return (
                f"session {session_id}: note row {row_id} does not match the chain: it was "
                "changed, or a note before it was removed"
            )
    return None


def verify_all(conn: Conn) -> list[ChainCheck]:
    """Every session's chain, and a problem for each session id missing from the records
    (from 1: no schema ever let a session row be deleted, before the chain or since)."""
    ids = [int(r[0]) for r in conn.execute("SELECT id FROM sessions ORDER BY id")]
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sessions'").fetchone()
    highest = max([int(row[0]) if row else 0, *ids])
    present = set(ids)
    checks = [verify_session(conn, i) for i in ids]
    for missing in range(1, highest + 1):
        if missing not in present:
            checks.append(ChainCheck(missing, f"session {missing} is missing from the records "
                                     "(it was deleted)", None, 0, False))
    return sorted(checks, key=lambda c: c.session_id)


def session_head(conn: Conn, session_id: int) -> str | None:
    """The head to print on a report: the closure hash, else the last event's hash."""
    row = conn.execute("SELECT chain_head FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is not None and row[0] is not None:
        return str(row[0])
    last = conn.execute(
        "SELECT hash FROM events WHERE session_id = ? ORDER BY id DESC LIMIT 1", (session_id,)
    ).fetchone()
    return None if last is None or last[0] is None else str(last[0])


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
