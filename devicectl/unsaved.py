"""The records that could not be written: `<db>.unsaved.jsonl`, and putting them back.

When the record writer cannot commit (disk full, read-only, the file deleted or
replaced), everything it still holds, and everything after, goes to a JSON-lines
file beside the database, one record a line. `replay` puts it back into a
writable database, and is idempotent: what is already there is not added twice.
It reads the file as it puts it back, a line (ended by "\\n" only) and a few
thousand events at a time: a huge or endless file costs no more memory, and a
line that is not a record is named.

Line kinds (each has "v", "record" and "session_id"): "session" starts what one
writer put there (a segment): the session's header, so a replaced or recreated
database can take it back, and `base_events`, how many of the session's events
come before the segment's first (so that replay knows which are already in);
then "event", "device", "coverage" (state as base64) and "close" (the outcome).
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import psycopg

from devicectl import store_pg
from devicectl.dbconn import DB_ERRORS, Conn
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
#: The longest line read: a coverage line carries the session's grid (a compressed
#: archive, base64); a longer one is not a record (a wrong file, /dev/zero).
MAX_LINE_BYTES: Final = 64 << 20
#: A segment's events are put back this many at a time, so a file of any length
#: replays in bounded memory.
CHUNK_EVENTS: Final = 10_000
_KINDS: Final = frozenset({"session", "event", "device", "coverage", "close"})


#: The name an unsaved file of a PostgreSQL server starts with (beside the default file).
PG_PREFIX: Final = "pg-"


def unsaved_path(db_path: Path | str) -> Path:
    """Where the records of `db_path` go when it cannot be written: beside the
    file; for a server, a local file named after it, beside the default records."""
    if isinstance(db_path, str):
        info = psycopg.conninfo.conninfo_to_dict(db_path)
        name = "-".join(str(info.get(k) or "") for k in ("host", "port", "dbname"))
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in name)
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "devicectl" / f"{PG_PREFIX}{safe}{SUFFIX}"
    return db_path.with_name(db_path.name + SUFFIX)


def db_path_of(unsaved: Path) -> Path | None:
    """The database an unsaved file belongs to, from its name, or None (a server's:
    its URL is not in the name)."""
    name = unsaved.name
    if name.startswith(PG_PREFIX):
        return None
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
class _Segment:
    """What one session's writer put in the file after its records failed: its
    events are the session's events from index `base` on (None: unknown)."""

    session_id: int
    base: int | None = None
    header: dict[str, str] | None = None
    events: list[EventRecord] = field(default_factory=list)
    device: dict[str, Any] | None = None
    coverage: tuple[list[ZoneCoverage], bytes | None] | None = None
    close: tuple[str, str] | None = None
    #: read to its end (a part of it may be all a replay holds: _parts)
    done: bool = False


_HEADER_KEYS: Final = ("patient_ref", "profile_name", "profile_hash", "profile_text", "started_at")


def read_unsaved(path: Path) -> list[_Segment]:
    """The file's segments in order, whole; StoreError names the line at fault."""
    segments: list[_Segment] = []
    with _open_unsaved(path) as f:
        for number, item in _items(f, path):
            _add_line(segments, item, path, number)
    return segments


def _open_unsaved(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise StoreError(f"no unsaved records at {path}") from exc
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc


def _not_a_record(path: Path, number: int, exc: Exception) -> StoreError:
    return StoreError(f"{path} line {number} is not an unsaved devicectl record ({exc}); "
                      "nothing was replayed")


def _items(f: BinaryIO, path: Path) -> Iterator[tuple[int, Any]]:
    """Each line's number and JSON, read a line at a time, each at most MAX_LINE_BYTES
    (a line ends at "\\n" only: a U+2028 inside a string is text)."""
    number = 0
    while True:
        number += 1
        try:
            raw = f.readline(MAX_LINE_BYTES + 1)
        except OSError as exc:
            raise StoreError(f"cannot read {path} line {number}: {exc.strerror}; nothing "
                             "was replayed") from exc
        if not raw:
            return
        try:
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(f"it is longer than {MAX_LINE_BYTES >> 20} MiB")
            text = raw.decode("utf-8")
            if text.strip():
                yield number, json.loads(text)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError among them
            raise _not_a_record(path, number, exc) from exc


def _add_line(segments: list[_Segment], item: Any, path: Path, number: int) -> None:
    try:
        _add(segments, item)
    except (ValueError, KeyError, TypeError) as exc:
        raise _not_a_record(path, number, exc) from exc


def _parts(f: BinaryIO, path: Path) -> Iterator[_Segment]:
    """The file's segments in order, in parts of at most CHUNK_EVENTS events: a
    segment's parts are one object, yielded again with the next events once the
    last were put back (`done` on its last part)."""
    segments: list[_Segment] = []
    for number, item in _items(f, path):
        before = segments[-1] if segments else None
        _add_line(segments, item, path, number)
        if before is not None and segments[-1] is not before:
            before.done = True
            yield before
            del segments[:-1]
        elif len(segments[-1].events) >= CHUNK_EVENTS:
            yield segments[-1]
            segments[-1].events = []
    if segments:
        segments[-1].done = True
        yield segments[-1]


def _add(segments: list[_Segment], item: Any) -> None:
    if not isinstance(item, dict) or item.get("v") != FORMAT_VERSION:
        raise ValueError(f"expected a version {FORMAT_VERSION} record")
    kind = item["record"]
    if kind not in _KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    sid = item["session_id"]
    if not isinstance(sid, int) or isinstance(sid, bool):
        raise ValueError("session_id is not a number")
    if kind == "session" or not segments or segments[-1].session_id != sid:
        segments.append(_Segment(sid))
    s = segments[-1]
    if kind == "session":
        base = item.get("base_events")
        s.base = None if base is None else int(base)
        if all(k in item for k in _HEADER_KEYS):
            s.header = {k: str(item[k]) for k in _HEADER_KEYS}
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


def replay(unsaved: Path, db_path: Path | str, *, dry_run: bool = False,
           session_id: int | None = None) -> list[str]:
    """Puts the records of `unsaved` (only `session_id`'s, if given) into `db_path`
    in one transaction; one sentence per segment saying what was done (with
    `dry_run`, what would be, and nothing is written). Replaying twice adds nothing.
    The file is read as it is put back, a line and CHUNK_EVENTS events at a time."""
    with _open_unsaved(unsaved) as f:
        parts = (s for s in _parts(f, unsaved) if session_id is None or s.session_id == session_id)
        first = next(parts, None)
        if first is None:
            return [f"{unsaved} holds no records; nothing to do"]
        pg = isinstance(db_path, str)
        conn: Conn = store_pg.connect(str(db_path)) if pg else open_database(
            Path(db_path), create=not dry_run)
        where = store_pg.redact(db_path) if isinstance(db_path, str) else db_path
        try:
            conn.execute("BEGIN IMMEDIATE" if not (dry_run or pg) else "BEGIN")
            try:
                said = []
                segment: _SegmentReplay | None = None
                for part in itertools.chain([first], parts):
                    segment = segment or _SegmentReplay(conn, part, where)
                    segment.add(part.events)
                    if part.done:
                        said.append(segment.finish())
                        segment = None
                conn.execute("COMMIT" if not dry_run else "ROLLBACK")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except DB_ERRORS as exc:
            raise StoreError(
                f"cannot replay {unsaved} into {where}: {exc}; nothing was replayed"
            ) from exc
        finally:
            conn.close()
    return said


def not_yet_replayed(db_path: Path | str) -> str | None:
    """Why a session must not start yet: `db_path`'s unsaved file holds records the
    database lacks (a used cartridge, a treated zone), or None."""
    path = unsaved_path(db_path)
    if not path.exists():
        return None
    try:
        said = replay(path, db_path, dry_run=True)
    except StoreError as exc:
        return str(exc)
    if all(_NOTHING in line for line in said):
        return None
    if isinstance(db_path, str):
        from devicectl.store_pg import redact

        return (f"{path} holds records that are not on {redact(db_path)} yet; put them back "
                f"first: devicectl records replay {path} --db {redact(db_path)}")
    return (f"{path} holds records that are not in {db_path} yet; put them back first: "
            f"devicectl records replay {path}")


_NOTHING: Final = ": nothing to add"


class _SegmentReplay:
    """One segment put back, its events a part at a time (_parts)."""

    def __init__(self, conn: Conn, s: _Segment, db_path: Path | str) -> None:
        self.conn, self.s, self.db_path = conn, s, db_path
        self.done: list[str] = []
        self.added = self.present = self.refused = self.seen = 0
        sid = s.session_id
        row = conn.execute(
            "SELECT patient_ref, profile_hash, started_at, outcome, device_serial"
            " FROM sessions WHERE id = ?", (sid,)
        ).fetchone()
        if row is None:
            if s.header is None:
                raise StoreError(f"session {sid} is not in {db_path} and the unsaved file has "
                                 "no header for it; replay into the database it came from (--db)")
            conn.execute(
                "INSERT INTO sessions (id, patient_ref, profile_name, profile_hash, profile_text,"
                " started_at) VALUES (?, ?, ?, ?, ?, ?)",
                (sid, *(s.header[k] for k in _HEADER_KEYS)),
            )
            self.done.append("session row recreated")
            self.outcome, self.serial = None, None
        else:
            patient, phash, started, self.outcome, self.serial = row
            if s.header is not None and (patient, phash, started) != (
                s.header["patient_ref"], s.header["profile_hash"], s.header["started_at"]
            ):
                raise StoreError(f"session {sid} in {db_path} is another session (patient, "
                                 "profile or start differ); replay into the database it came "
                                 "from (--db)")
        rows = conn.execute(
            "SELECT t_us, wall, kind, text, zone_id, data, safety FROM events"
            " WHERE session_id = ? ORDER BY id", (sid,)
        ).fetchall()
        self.have = [(t, w, k, x, z, d, bool(f)) for t, w, k, x, z, d, f in rows]
        self.counts = collections.Counter(self.have) if s.base is None else None

    def add(self, events: list[EventRecord]) -> None:
        """The next of the segment's events: those the database lacks are added."""
        missing = self._missing(events)
        self.seen += len(events)
        self.present += len(events) - len(missing)
        if missing and self.outcome is not None:
            self.refused += len(missing)  # said once the segment is read (finish)
        elif missing:
            insert_events(self.conn, self.s.session_id, missing)
            self.added += len(missing)

    def _missing(self, events: list[EventRecord]) -> list[EventRecord]:
        """The events the database lacks. With a known `base`, the segment's i-th
        event is the session's event base + i: present when the database has that
        many, and then it must be the same event. Without one (the writer never read
        the file), identical events are counted as a multiset."""
        if self.counts is not None:
            missing: list[EventRecord] = []
            for e in events:
                if self.counts[_key(e)] > 0:
                    self.counts[_key(e)] -= 1
                else:
                    missing.append(e)
            return missing
        assert self.s.base is not None
        start = self.s.base + self.seen
        present = max(0, min(len(self.have) - start, len(events)))
        for i in range(present):
            if self.have[start + i] != _key(events[i]):
                raise StoreError(
                    f"session {self.s.session_id}'s event {start + i + 1} in the database "
                    "differs from the unsaved one; replay into the database it came from (--db)"
                )
        return events[present:]

    def finish(self) -> str:
        """Puts back the rest (pen, coverage, end); one sentence saying what was done."""
        conn, s, sid, done, present = self.conn, self.s, self.s.session_id, self.done, \
            self.present
        if self.refused:
            raise StoreError(f"session {sid} in {self.db_path} is already closed "
                             f"({self.outcome}); its {self.refused} unsaved events cannot be "
                             "added to a final record")
        if self.added:
            done.append(f"{self.added} events added" + (f", {present} already there"
                                                        if present else ""))
        elif present and (s.device or s.coverage or s.close):
            done.append(f"{present} events already there")
        if s.device is not None and self.serial is None and self.outcome is None:
            set_device_row(conn, sid, int(s.device["serial"]), int(s.device["fw_version"]),
                           int(s.device["cartridge_id"]), str(s.device["position_mode"]))
            done.append("pen and cartridge recorded")
        if s.coverage is not None and self.outcome is None and (
                self.added or not _same_coverage(conn, s)):
            upsert_coverage(conn, sid, s.coverage[0], s.coverage[1])
            done.append("coverage saved")
        if s.close is not None and self.outcome is None:
            close_session_row(conn, sid, *s.close)
            done.append(f"closed as {s.close[0]}")
        if not done or done == [f"{present} events already there"]:
            return f"session {sid}{_NOTHING} ({present} events already there)"
        return f"session {sid}: " + ", ".join(done)


def _same_coverage(conn: Conn, s: _Segment) -> bool:
    assert s.coverage is not None
    row = conn.execute("SELECT state FROM coverage_state WHERE session_id = ?",
                       (s.session_id,)).fetchone()
    return row is not None and (None if row[0] is None else bytes(row[0])) == s.coverage[1]


def _key(e: EventRecord) -> tuple[Any, ...]:
    return (e.t_us, e.wall, e.kind, e.text, e.zone_id, data_json(e.data), bool(e.safety))
