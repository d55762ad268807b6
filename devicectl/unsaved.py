"""The records that could not be written: `<db>.unsaved.jsonl`, and putting them back.

When the record writer cannot commit (disk full, read-only, the file deleted or
replaced), everything it still holds, and everything after, goes to a JSON-lines
file beside the database, one record a line. `replay` puts it back into a
writable database, and is idempotent: what is already there is not added twice.

Line kinds (each has "v", "record" and "session_id"): "session" (the session's
header, so a replaced or recreated database can take it back), "event", "device",
"coverage" (state as base64) and "close" (the outcome).
"""

from __future__ import annotations

import base64
import collections
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from devicectl.errors import StoreError
from devicectl.records import (
    EventRecord,
    ZoneCoverage,
    close_session_row,
    insert_events,
    open_database,
    set_device_row,
    upsert_coverage,
)

FORMAT_VERSION: Final = 1
SUFFIX: Final = ".unsaved.jsonl"
_KINDS: Final = frozenset({"session", "event", "device", "coverage", "close"})


def unsaved_path(db_path: Path) -> Path:
    """Where the records of `db_path` go when it cannot be written."""
    return db_path.with_name(db_path.name + SUFFIX)


def db_path_of(unsaved: Path) -> Path | None:
    """The database an unsaved file belongs to, from its name, or None."""
    name = unsaved.name
    return unsaved.with_name(name[: -len(SUFFIX)]) if name.endswith(SUFFIX) else None


def data_json(data: Mapping[str, Any]) -> str:
    """An event's data as the events table stores it (compared on replay)."""
    return json.dumps(dict(data), default=str, separators=(",", ":"))


def line(record: str, session_id: int, **fields: Any) -> str:
    """One line of the unsaved file (without its newline)."""
    body = {"v": FORMAT_VERSION, "record": record, "session_id": session_id, **fields}
    return json.dumps(body, default=str, ensure_ascii=False, separators=(",", ":"))


def event_line(session_id: int, e: EventRecord) -> str:
    return line("event", session_id, t_us=e.t_us, wall=e.wall, kind=e.kind, text=e.text,
                zone_id=e.zone_id, data=json.loads(data_json(e.data)), safety=e.safety)


def coverage_line(session_id: int, zones: Iterable[ZoneCoverage], state: bytes | None) -> str:
    from dataclasses import asdict

    return line("coverage", session_id, zones=[asdict(z) for z in zones],
                state=None if state is None else base64.b64encode(state).decode("ascii"))


@dataclass
class _Unsaved:
    """One session's records in an unsaved file."""

    header: dict[str, Any] | None = None
    events: list[EventRecord] = field(default_factory=list)
    device: dict[str, Any] | None = None
    coverage: tuple[list[ZoneCoverage], bytes | None] | None = None
    close: tuple[str, str] | None = None


def read_unsaved(path: Path) -> dict[int, _Unsaved]:
    """Session id -> its records, in file order; StoreError names the line at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise StoreError(f"no unsaved records at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    sessions: dict[int, _Unsaved] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            _add(sessions, item)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{path} line {number} is not an unsaved devicectl record ({exc}); "
                "nothing was replayed"
            ) from exc
    return sessions


def _add(sessions: dict[int, _Unsaved], item: Any) -> None:
    if not isinstance(item, dict) or item.get("v") != FORMAT_VERSION:
        raise ValueError(f"expected a version {FORMAT_VERSION} record")
    kind = item["record"]
    if kind not in _KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    sid = item["session_id"]
    if not isinstance(sid, int):
        raise ValueError("session_id is not a number")
    s = sessions.setdefault(sid, _Unsaved())
    if kind == "session":
        s.header = {k: str(item[k]) for k in
                    ("patient_ref", "profile_name", "profile_hash", "profile_text", "started_at")}
    elif kind == "event":
        s.events.append(EventRecord(
            int(item["t_us"]), str(item["wall"]), str(item["kind"]), str(item["text"]),
            None if item["zone_id"] is None else int(item["zone_id"]),
            dict(item["data"]), bool(item["safety"]),
        ))
    elif kind == "device":
        s.device = {k: item[k] for k in ("serial", "fw_version", "cartridge_id", "position_mode")}
    elif kind == "coverage":
        zones = [ZoneCoverage(**z) for z in item["zones"]]
        state = None if item["state"] is None else base64.b64decode(item["state"])
        s.coverage = (zones, state)
    else:
        s.close = (str(item["outcome"]), str(item["ended_at"]))


def replay(unsaved: Path, db_path: Path) -> list[str]:
    """Puts the records of `unsaved` into `db_path` in one transaction; one
    sentence per session saying what was done. Replaying twice adds nothing."""
    sessions = read_unsaved(unsaved)
    if not sessions:
        return [f"{unsaved} holds no records; nothing to do"]
    conn = open_database(db_path, create=True)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            said = [_replay_session(conn, sid, s, db_path) for sid, s in sorted(sessions.items())]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot replay {unsaved} into {db_path}: {exc}; nothing was replayed"
        ) from exc
    finally:
        conn.close()
    return said


def _replay_session(conn: sqlite3.Connection, sid: int, s: _Unsaved, db_path: Path) -> str:
    done: list[str] = []
    row = conn.execute(
        "SELECT patient_ref, profile_hash, started_at, outcome, device_serial"
        " FROM sessions WHERE id = ?", (sid,)
    ).fetchone()
    if row is None:
        if s.header is None:
            raise StoreError(f"session {sid} is not in {db_path} and the unsaved file has no "
                             "header for it; replay into the database it came from (--db)")
        conn.execute(
            "INSERT INTO sessions (id, patient_ref, profile_name, profile_hash, profile_text,"
            " started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (sid, s.header["patient_ref"], s.header["profile_name"], s.header["profile_hash"],
             s.header["profile_text"], s.header["started_at"]),
        )
        done.append("session row recreated")
        outcome, serial = None, None
    else:
        patient, phash, started, outcome, serial = row
        if s.header is not None and (patient, phash, started) != (
            s.header["patient_ref"], s.header["profile_hash"], s.header["started_at"]
        ):
            raise StoreError(f"session {sid} in {db_path} is another session (patient, profile "
                             "or start differ); replay into the database it came from (--db)")
    added, present = _missing_events(conn, sid, s.events)
    if added and outcome is not None:
        raise StoreError(f"session {sid} in {db_path} is already closed ({outcome}); its "
                         f"{len(added)} unsaved events cannot be added to a final record")
    if added:
        insert_events(conn, sid, added)
    done.append(f"{len(added)} events added" + (f", {present} already there" if present else ""))
    if s.device is not None and serial is None and outcome is None:
        set_device_row(conn, sid, int(s.device["serial"]), int(s.device["fw_version"]),
                       int(s.device["cartridge_id"]), str(s.device["position_mode"]))
        done.append("pen and cartridge recorded")
    if s.coverage is not None and outcome is None:
        upsert_coverage(conn, sid, s.coverage[0], s.coverage[1])
        done.append("coverage saved")
    if s.close is not None and outcome is None:
        close_session_row(conn, sid, *s.close)
        done.append(f"closed as {s.close[0]}")
    return f"session {sid}: " + ", ".join(done)


def _missing_events(
    conn: sqlite3.Connection, sid: int, events: list[EventRecord]
) -> tuple[list[EventRecord], int]:
    """The events not yet in the database (as a multiset: identical events count
    each), and how many were there already."""
    def key(t_us: int, wall: str, kind: str, text: str, zone: int | None, data: str,
            safety: bool) -> tuple[Any, ...]:
        return (t_us, wall, kind, text, zone, data, bool(safety))

    have = collections.Counter(
        key(*r) for r in conn.execute(
            "SELECT t_us, wall, kind, text, zone_id, data, safety FROM events"
            " WHERE session_id = ?", (sid,)
        )
    )
    missing: list[EventRecord] = []
    present = 0
    for e in events:
        k = key(e.t_us, e.wall, e.kind, e.text, e.zone_id, data_json(e.data), e.safety)
        if have[k] > 0:
            have[k] -= 1
            present += 1
        else:
            missing.append(e)
    return missing, present
