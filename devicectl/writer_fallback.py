"""When one session's records cannot be written: the failure, the unsaved file, the way back.

`WriterFallback` is mixed into record_writer.RecordWriter and runs on its thread.
`_fail` sets the failure once and turns the writer to the unsaved file
(`<db>.unsaved.jsonl`, devicectl/unsaved.py): `_spill` appends, fsynced, and
holds in memory what it cannot write; a records file deleted under the writer is
copied back from the open connection and this session's committed rows go first
into the unsaved file. On the clinic's server `_reconnect` tries again with
backoff (RETRY_FIRST_S doubling to RETRY_MAX_S) and, once it answers, puts this
session's unsaved records back before writing there again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from devicectl import store_pg, unsaved
from devicectl.dbconn import DB_ERRORS, Conn, is_lost
from devicectl.errors import StoreError
from devicectl.transitions import RECORDS_FAILED_REASON
from devicectl.writer_items import (
    Close,
    Coverage,
    Pending,
    committed_rows,
    rescue_file,
)

#: The first reconnection to a lost server comes after this long (s); each failed
#: attempt doubles the wait, up to RETRY_MAX_S.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


def first_line(exc: BaseException) -> str:
    """An error's first line, for a one-line status (its repr when it has no text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _clock_text() -> str:
    return datetime.now(UTC).astimezone().strftime("%H:%M:%S")


class WriterFallback:
    """The failure path of a RecordWriter; the attributes are RecordWriter's."""

    session_id: int
    pg: bool
    path: Path | str
    errors: list[str]
    failure: str | None
    failed_at_us: int | None
    unsaved_path: Path
    unsaved_count: int
    unwritten: list[str]
    link: str | None
    _target: Path | str
    _clock: Callable[[], int]
    _down: bool
    _retry_at: float | None
    _retry_s: float
    _attempts: int
    _header: dict[str, str] | None
    _last_cover: str | None
    _committed: int
    _spill_base: int | None
    _writing: str

    def _note(self, message: str) -> None:
        if not self.errors or self.errors[-1] != message:
            self.errors.append(message)

    def _refused(self, what: str, exc: BaseException) -> None:
        """The records answered and refused `what` by their own rules (a constraint,
        an append-only trigger): not a lost server. The failure names the record;
        no treatment without a record, so the session stops as on any failure and
        this and everything after go to the unsaved file. Nothing is tried again:
        the same write would be refused again (`records replay` says so, later)."""
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        self._fail(f"the records refused {what}: {reason}", refused=True)

    def _fail(self, why: str, moved_from: sqlite3.Connection | None = None, *,
              refused: bool = False) -> None:
        """Sets the failure (once). When the file was deleted or replaced, the
        connection (`moved_from`) still holds what was committed: the whole file is
        copied back if it was deleted, and this session's rows go first into the
        unsaved file, so that a replay restores the session wherever it lands. A
        server that failed otherwise than `refused` is lost: it is reconnected to."""
        first = self.failure is None
        if first:
            self.failed_at_us = self._clock()
            self.failure = f"{RECORDS_FAILED_REASON}: {why}"
        if not self._down:  # from here on, into the unsaved file
            self._down = True
            self._spill_base = 0 if moved_from is not None else (
                self._committed if self._header is not None else None)
            if refused:
                self._retry_at = None
                if self.link is not None:  # after a reconnection: say it ends here
                    self.link = (f"the records server {self.path} answers but refused a "
                                 "write; not tried again")
            elif self.pg:
                self._retry_s = RETRY_FIRST_S
                self._retry_at = time.monotonic() + self._retry_s
                self.link = (f"the records server {self.path} was lost at {_clock_text()}; "
                             f"reconnecting in {self._retry_s:g} s")
        self._note(f"records of session {self.session_id} not saved in {self.path}: {why}")
        conn = moved_from
        if first and conn is not None:
            assert isinstance(self.path, Path)
            if not self.path.exists():
                self._rescue(conn)
            self._spill_committed(conn)

    def _rescue(self, conn: sqlite3.Connection) -> None:
        assert isinstance(self.path, Path)
        self._note(rescue_file(conn, self.path))

    def _spill_committed(self, conn: sqlite3.Connection) -> None:
        """This session's rows as committed so far, first in the unsaved file."""
        done = committed_rows(conn, self.session_id)
        if isinstance(done, str):
            self._note(done)
        else:
            self._spill(done)

    def _reconnect(self) -> Conn | None:
        """One attempt at the lost server; when it answers, this session's unsaved
        records go back first (in order), and the writer writes there again."""
        self._attempts += 1
        conn: Conn | None = None
        try:
            conn = store_pg.connect(str(self._target))
            if self.unwritten:
                self._spill(Pending())  # lines held in memory join the file first
            if self.unsaved_path.exists():
                unsaved.replay(self.unsaved_path, str(self._target), session_id=self.session_id)
            self._committed = int(conn.execute(
                "SELECT count(*) FROM events WHERE session_id = ?",
                (self.session_id,)).fetchone()[0])
        except (StoreError, *DB_ERRORS) as exc:
            if conn is not None:
                with contextlib.suppress(*DB_ERRORS):
                    conn.close()
            first = first_line(exc)
            if conn is not None and not is_lost(exc):
                # The server is back and refused this session's records from meanwhile
                # (a rule, not the network): they stay in the unsaved file.
                self._retry_at = None
                self.link = (f"the records server {self.path} is back but refused this "
                             f"session's records from meanwhile ({first}); they stay in "
                             f"{self.unsaved_path}; not tried again")
                self._note(self.link)
                return None
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            self._retry_at = time.monotonic() + self._retry_s
            self.link = (f"the records server {self.path} is lost; reconnecting: attempt "
                         f"{self._attempts} failed ({first}), next in {self._retry_s:g} s")
            return None
        self._down, self._retry_at, self._attempts = False, None, 0
        self.unsaved_count = 0  # all of it is on the server now
        self.link = (f"the records server {self.path} is back since {_clock_text()}; this "
                     "session's records from meanwhile were put back on it")
        self._note(self.link)
        return conn

    @staticmethod
    def _built(pending: Pending) -> bytes | None:
        assert pending.cover is not None
        state = pending.cover.state
        if callable(state):
            state = state()
            pending.cover = Coverage(pending.cover.zones, state)  # built once, even on retry
        return state

    def _spill(self, pending: Pending, closing: Close | None = None) -> None:
        """Appends `pending` (and the outcome) to the unsaved file, fsynced; lines that
        cannot be written stay in `unwritten` and are tried again with the next ones."""
        sid = self.session_id
        lines: list[str] = []
        if self.unsaved_count == 0 and not self.unwritten:
            lines.append(unsaved.line("session", sid, base_events=self._spill_base,
                                      **(self._header or {})))
        if pending.device is not None:
            d = pending.device
            lines.append(unsaved.line("device", sid, serial=d.serial, fw_version=d.fw_version,
                                      cartridge_id=d.cartridge_id, position_mode=d.position_mode))
        lines.extend(unsaved.event_line(sid, e) for e in pending.events)
        if pending.cover is not None:
            cover = unsaved.coverage_line(sid, pending.cover.zones, self._built(pending))
            if cover != self._last_cover:
                lines.append(cover)
                self._last_cover = cover
        if closing is not None and closing.outcome is not None:
            ended = closing.ended_at or datetime.now(UTC).isoformat()
            lines.append(unsaved.line("close", sid, outcome=closing.outcome, ended_at=ended))
        if not lines and not self.unwritten:
            return
        todo = self.unwritten + lines
        try:
            # Created for its owner only: it holds patient references.
            fd = os.open(self.unsaved_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            # backslashreplace: a lone surrogate goes in as its JSON escape (\udcff)
            with os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace") as f:
                start = os.fstat(fd).st_size
                try:
                    f.write("".join(text + "\n" for text in todo))
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    with contextlib.suppress(OSError):
                        f.truncate(start)  # no half line: the whole batch is tried again
                    raise
        except OSError as exc:
            self.unwritten = todo
            self._note(f"cannot write {self.unsaved_path} either ({exc.strerror}); "
                       f"{len(todo)} records held in memory")
            return
        self.unwritten = []
        self.unsaved_count += len(todo)


__all__ = ["RETRY_FIRST_S", "RETRY_MAX_S", "WriterFallback"]
