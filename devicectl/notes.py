"""Notes and adverse events added to a session after it, by people: append-only,
allowed after the session has ended, each chained by SHA-256 to the one before
(devicectl/chain.py checks them with the session's events) and anchored to the
note written before it in the whole records (devicectl/note_anchor.py).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

from devicectl.chain import anchored_note_hash, genesis
from devicectl.dbconn import DB_ERRORS, Conn, PgConn
from devicectl.errors import StoreError
from devicectl.note_anchor import next_anchor

#: The adverse events the seed article and the literature report after scalp microneedling.
ADVERSE_KINDS: Final = (
    "prolonged_bleeding",
    "infection",
    "scarring",
    "shedding",
    "itching",
    "redness",
    "pain",
    "other",
)
#: The longest note accepted: a clinical note, not a document.
NOTE_MAX_CHARS: Final = 4000

NOTE_COLUMNS: Final = "id, session_id, wall, adverse_kind, text, author, hash"
#: The advisory-lock class under which a note's transaction holds the notes' end
#: on the clinic's server ("DCNT"); key 0: one chain of anchors runs through all.
NOTES_LOCK_CLASS: Final = 0x44434E54


@dataclass(frozen=True, slots=True)
class Note:
    id: int
    session_id: int
    wall: str
    #: one of ADVERSE_KINDS for an adverse event, None for a plain note
    adverse_kind: str | None
    text: str
    author: str | None
    hash: str

    @property
    def label(self) -> str:
        kind = self.adverse_kind
        return "note" if kind is None else f"adverse event: {kind.replace('_', ' ')}"


def adverse_kind(text: str) -> str:
    """A kind as given on the command line ('prolonged bleeding', 'Pain'), or StoreError."""
    kind = "_".join(text.strip().lower().replace("-", " ").split())
    if kind not in ADVERSE_KINDS:
        raise StoreError(
            f"unknown adverse event kind {text!r}; one of {', '.join(ADVERSE_KINDS)}"
        )
    return kind


def add_note(
    conn: Conn,
    session_id: int,
    *,
    wall: str,
    text: str,
    adverse: str | None,
    author: str | None,
    where: object = None,
) -> Note:
    """Appends a note (an adverse event when `adverse` is a kind) in one transaction,
    chained to the session's last note and anchored to the records' last. The
    transaction holds the chains' ends: an SQLite file's writers queue on the file
    (BEGIN IMMEDIATE); on the clinic's server, notes queue on an advisory lock, so
    two rooms that note at the same moment chain one after the other, never both
    to the same predecessor. `where` (the records, as messages name them) is said
    when the note cannot be written."""
    body = text.strip()
    if not body:
        raise StoreError("a note needs its text (--text); it was empty")
    if len(body) > NOTE_MAX_CHARS:
        raise StoreError(f"a note is at most {NOTE_MAX_CHARS} characters; this one has "
                         f"{len(body)}")
    kind = adverse_kind(adverse) if adverse is not None else None
    try:
        sqlite = isinstance(conn, sqlite3.Connection)
        conn.execute("BEGIN IMMEDIATE" if sqlite else "BEGIN")
        try:
            found = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,))
            if found.fetchone() is None:
                raise StoreError(f"no session {session_id}; `devicectl sessions list` shows them")
            note_id, digest = append_note(conn, (session_id, wall, kind, body, author))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except DB_ERRORS as exc:
        into = "" if where is None else f" to {where}"
        raise StoreError(f"cannot write the note of session {session_id}{into}: {exc}") from exc
    return Note(note_id, session_id, wall, kind, body, author, digest)


def append_note(conn: Conn, row: tuple[int, str, str | None, str, str | None]
                ) -> tuple[int, str]:
    """Inserts a note row (session_id, wall, adverse_kind, text, author) with its hash
    and anchor, inside the caller's write transaction; its id and hash."""
    if isinstance(conn, PgConn):
        conn.execute("SELECT pg_advisory_xact_lock(?, 0)", (NOTES_LOCK_CLASS,))
    digest = anchored_note_hash(last_note_hash(conn, row[0]), row)
    note_id = int(conn.execute(
        "INSERT INTO notes (session_id, wall, adverse_kind, text, author, hash, anchor)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (*row, digest, next_anchor(conn, row[0], digest)),
    ).fetchone()[0])
    return note_id, digest


def last_note_hash(conn: Conn, session_id: int) -> str:
    row = conn.execute(
        "SELECT hash FROM notes WHERE session_id = ? ORDER BY id DESC LIMIT 1", (session_id,)
    ).fetchone()
    return genesis(conn, session_id) if row is None else str(row[0])


def notes_of(conn: Conn, session_ids: list[int]) -> dict[int, list[Note]]:
    """Each session's notes, oldest first."""
    out: dict[int, list[Note]] = {i: [] for i in session_ids}
    if not session_ids:
        return out
    marks = ", ".join("?" * len(session_ids))
    try:
        rows = conn.execute(
            f"SELECT {NOTE_COLUMNS} FROM notes WHERE session_id IN ({marks}) ORDER BY id",
            session_ids,
        ).fetchall()
    except DB_ERRORS as exc:
        raise StoreError(f"cannot read the notes: {exc}") from exc
    for nid, sid, wall, kind, text, author, digest in rows:
        out[int(sid)].append(Note(int(nid), int(sid), str(wall), kind, str(text), author,
                                  str(digest)))
    return out
