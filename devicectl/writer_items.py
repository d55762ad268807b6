"""What the session's writer (record_writer.py) queues and holds, and what it
saves of an SQLite file that was deleted or replaced under it."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devicectl.records import (
    EVENT_COLUMNS,
    ZONE_COLUMNS,
    EventRecord,
    ZoneCoverage,
    event_from_row,
    zone_from_row,
)


@dataclass(frozen=True, slots=True)
class Coverage:
    zones: Sequence[ZoneCoverage]
    #: the archive, or a function that builds it (run on the writer's thread)
    state: bytes | Callable[[], bytes] | None


@dataclass(frozen=True, slots=True)
class Device:
    serial: int
    fw_version: int
    cartridge_id: int
    position_mode: str


@dataclass(frozen=True, slots=True)
class Close:
    outcome: str | None
    ended_at: str | None


@dataclass(frozen=True, slots=True)
class Deferred:
    """An event built on the writer's thread (a flight recording: decoding is slow)."""

    make: Callable[[], EventRecord]


@dataclass(slots=True)
class Pending:
    """What the writer thread holds between commits."""

    events: list[EventRecord] = field(default_factory=list)
    cover: Coverage | None = None
    device: Device | None = None

    def __bool__(self) -> bool:
        return bool(self.events) or self.cover is not None or self.device is not None




def rescue_file(conn: sqlite3.Connection, path: Path) -> str:
    """The records file was deleted while open: SQLite still reads it, so all of
    it (every session: cartridges and intervals) is copied back to its place, or
    beside it if something else is there by now. Says what happened."""
    tmp = path.with_name(f"{path.name}.rescue-{os.getpid()}")
    try:
        dest = sqlite3.connect(tmp)
        try:
            conn.backup(dest)
        finally:
            dest.close()
        try:
            os.link(tmp, path)
            where = path
        except FileExistsError:
            where = path.with_name(path.name + ".recovered.db")
            os.replace(tmp, where)
        else:
            os.unlink(tmp)
    except (sqlite3.Error, OSError) as exc:
        return f"the deleted records file {path} could not be copied back: {exc}"
    return f"the deleted records file was copied back from the open connection to {where}"


def committed_rows(conn: sqlite3.Connection, sid: int) -> Pending | str:
    """Session `sid`'s rows as committed so far, or why they cannot be read."""
    try:
        events = [event_from_row(r) for r in conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? ORDER BY id", (sid,))]
        device = conn.execute(
            "SELECT device_serial, fw_version, cartridge_id, position_mode FROM sessions"
            " WHERE id = ?", (sid,)).fetchone()
        zones = [zone_from_row(r) for r in conn.execute(
            f"SELECT {ZONE_COLUMNS} FROM zone_coverage WHERE session_id = ?"
            " ORDER BY zone_id", (sid,))]
        state = conn.execute(
            "SELECT state FROM coverage_state WHERE session_id = ?", (sid,)).fetchone()
    except sqlite3.Error as exc:
        return f"the records of session {sid} so far could not be read back: {exc}"
    done = Pending(events=events)
    if device is not None and device[0] is not None:
        done.device = Device(*device)
    if zones:
        done.cover = Coverage(zones, None if state is None else state[0])
    return done
