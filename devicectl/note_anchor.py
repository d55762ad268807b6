"""The notes' anchor: one chain through every note of the records, whatever its session.

A session's notes chain from its header (chain.py), and they are added after the
session's closure, so nothing in the session follows its last note. Each note
also carries `anchor = SHA-256(the anchor of the note written before it in the
whole records, "anchor", [session, the note's hash, the highest note id written
before it])`: removing any note but the newest of the records breaks the next
note's link, in whichever session that is. The newest has nothing after it; the
highest note id ever written (SQLite's sqlite_sequence; on the clinic's server,
the same table kept by a trigger, in the note's transaction) says that it was
there, and the next note written names it too. Notes written before the anchor
(below `notes_anchor_origin`) have none: they are said to be not anchored, not
failed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final

from devicectl.dbconn import Conn

#: Where the chain of anchors starts (the first anchored note links to it).
ANCHOR_START: Final = hashlib.sha256(b"devicectl notes anchor").hexdigest()


def anchor_hash(prev: str, session_id: int, note_hash: str, after_id: int) -> str:
    """A note's anchor after `prev`, the anchor of the note written before it, whose
    id is `after_id` (the highest note id written then)."""
    digest = hashlib.sha256()
    digest.update(prev.encode("ascii"))
    digest.update(b"\nanchor\n")
    digest.update(json.dumps([session_id, note_hash, after_id],
                             separators=(",", ":")).encode("ascii"))
    return digest.hexdigest()


def next_anchor(conn: Conn, session_id: int, note_hash: str) -> str:
    """The anchor of a note about to be appended, in the transaction that appends it
    (which holds the notes' end: notes.add_note)."""
    row = conn.execute(
        "SELECT anchor FROM notes WHERE anchor IS NOT NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return anchor_hash(ANCHOR_START if row is None else str(row[0]), session_id, note_hash,
                       _highest_note_id(conn))


def _highest_note_id(conn: Conn) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'notes'").fetchone()
    return 0 if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    """The notes' anchor over the whole records: `problem` is None when it holds."""

    problem: str | None
    #: the newest note's anchor (None when no note is anchored)
    head: str | None
    anchored: int
    #: notes written before the records anchored them
    unanchored: int


def verify_anchors(conn: Conn) -> AnchorCheck:
    """Recomputes every note's anchor in order; names the first note that breaks the
    chain, or the newest note ever written when it is missing."""
    row = conn.execute("SELECT first_note_id FROM notes_anchor_origin").fetchone()
    origin = 1 if row is None else int(row[0])
    prev, anchored, unanchored, last_id = ANCHOR_START, 0, 0, 0
    after_id = origin - 1  # the highest note id when the records began to anchor notes
    for note_id, session_id, digest, stored in conn.execute(
            "SELECT id, session_id, hash, anchor FROM notes ORDER BY id"):
        last_id = int(note_id)
        if stored is None and not anchored and note_id < origin:
            unanchored += 1
            continue
        prev = anchor_hash(prev, int(session_id), str(digest), after_id)
        after_id = last_id
        if stored != prev:
            why = ("has no anchor, though written after the records anchored notes: it was "
                   "removed" if stored is None else "does not match the chain of notes: a "
                   "note before it (of any session) was removed, or it was changed")
            return AnchorCheck(f"notes: note row {note_id} (session {session_id}) {why}",
                               None, anchored, unanchored)
        anchored += 1
    newest = _highest_note_id(conn)
    if newest > last_id:
        return AnchorCheck(
            f"notes: note row {newest}, the newest written, is missing: it was removed",
            None, anchored, unanchored)
    return AnchorCheck(None, prev if anchored else None, anchored, unanchored)
