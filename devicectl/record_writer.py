"""RecordWriter: one session's records, written on their own thread, so the inner
loop only ever puts onto a queue.

No treatment without a record: the first commit that fails (disk full, read-only),
or a records file that is no longer the one opened (deleted or replaced: its
st_dev/st_ino against the open file's), sets `failure` once. The session sees it
on its next step and stops stamping. From then on nothing more goes to the
database: what was pending and everything after is appended to
`<db>.unsaved.jsonl` (devicectl/unsaved.py), which `devicectl records replay`
puts back.

On the clinic's PostgreSQL (`path` a postgresql:// URL) the same: a server that
goes away fails the next commit (at once on a safety event; keepalive and a
statement timeout notice a dead one, store_pg.DEAD_PEER_S), and the unsaved file
is local (unsaved.unsaved_path). There is no file identity to check there. The
writer then reconnects, with backoff (RETRY_FIRST_S doubling to RETRY_MAX_S);
once the server is back it puts this session's unsaved records back, in order,
and writes to the server again. `link` says how that goes, and `status_line()`
(what every view shows) carries it. The session stays stopped: its record had a
gap while it ran. The failure path (the unsaved file, the rescue of a deleted
file, the reconnection) is writer_fallback.py's, mixed into RecordWriter.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from devicectl import store_pg, unsaved
from devicectl.dbconn import DB_ERRORS, Conn, is_refusal
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
from devicectl.writer_fallback import RETRY_FIRST_S, WriterFallback, first_line
from devicectl.writer_items import (
    Close,
    Coverage,
    Deferred,
    Device,
    Pending,
)


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class RecordWriter(WriterFallback):
    """Writes one session's records on its own thread, committing every
    `commit_interval_s`, and at once after a safety event or the pen's identity.

    `events`, `coverage` and `device` only put onto a queue, so they are safe to
    call from the inner loop; pass sequences you will not mutate afterwards.
    Failures are never raised to the caller: `failure` says why the records
    cannot be written (None while they can), `failed_at_us` when (on `clock`,
    monotonic µs by default; a virtual session passes its clock), `errors`
    collects every message, `unsaved_path` and `unsaved_count` say where the
    records went instead, and `unwritten` holds the lines that could not be
    written even there (the CLI prints them).
    """

    def __init__(
        self,
        path: Path | str,
        session_id: int,
        *,
        commit_interval_s: float = 0.1,
        clock: Callable[[], int] = _monotonic_us,
    ) -> None:
        self.pg = store_pg.is_pg_url(path)
        #: the records as named in messages (a server's URL without its password)
        self.path: Path | str = store_pg.redact(str(path)) if self.pg else Path(path)
        self._target = path
        self.session_id = session_id
        self.commit_interval_s = commit_interval_s
        self.errors: list[str] = []
        self.failure: str | None = None
        self.failed_at_us: int | None = None
        self.unsaved_path = unsaved.unsaved_path(path)
        if self.pg:  # a server's unsaved file is local, beside the default records
            with contextlib.suppress(OSError):
                self.unsaved_path.parent.mkdir(parents=True, exist_ok=True)
        self.unsaved_count = 0
        self.unwritten: list[str] = []
        #: the records server's link once it was lost: reconnecting, or back (None: never lost)
        self.link: str | None = None
        self._down = False  # writing to the unsaved file now
        self._retry_at: float | None = None
        self._retry_s = RETRY_FIRST_S
        self._attempts = 0
        self._clock = clock
        self._fd: int | None = None  # the records file as opened: its identity
        self._header: dict[str, str] | None = None
        self._last_cover: str | None = None
        self._check_due = 0.0  # the file's identity is checked once an interval
        self._committed = 0  # this session's events in the database (a resumed one's too)
        self._writing = f"the records of session {session_id}"  # named if refused
        self._spill_base: int | None = None  # where the unsaved events start in the session
        self._queue: queue.SimpleQueue[
            Sequence[EventRecord] | Coverage | Device | Close | Deferred
        ] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"records-session-{session_id}", daemon=True
        )

    def start(self) -> None:
        """Starts the thread and waits until it has opened the file (or failed to)."""
        self._thread.start()
        self._ready.wait(timeout=5.0)

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def backlog(self) -> int:
        """Items queued and not yet taken by the writer's thread (the pen process's
        door stops treatment when the records fall this far behind)."""
        return self._queue.qsize()

    def status_line(self) -> str | None:
        """Why the records failed, and how the server's link is doing: what the views show."""
        if self.failure is None:
            return None
        return self.failure if self.link is None else f"{self.failure} · {self.link}"

    def events(self, events: Sequence[EventRecord]) -> None:
        self._queue.put_nowait(events)

    def deferred_event(self, make: Callable[[], EventRecord]) -> None:
        """An event that `make` builds on the writer's thread, in its place in the order."""
        self._queue.put_nowait(Deferred(make))

    def coverage(
        self, zones: Sequence[ZoneCoverage], state: bytes | Callable[[], bytes] | None
    ) -> None:
        """The latest coverage; `state` may be a function giving the archive, so
        that building it (milliseconds) happens here, off the caller's thread."""
        self._queue.put_nowait(Coverage(zones, state))

    def device(
        self, *, serial: int, fw_version: int, cartridge_id: int, position_mode: str
    ) -> None:
        """The pen and cartridge of this session, committed at once: a cartridge
        that touched skin must count as used even if the host dies the next moment."""
        self._queue.put_nowait(Device(serial, fw_version, cartridge_id, position_mode))

    def close(self, outcome: str | None, ended_at: str | None, timeout_s: float = 5.0) -> None:
        """Writes everything queued, sets the outcome if given (None leaves the session
        resumable), and stops the thread."""
        if not self._thread.is_alive():
            if self._thread.ident is None:  # never started: write inline, still nothing lost
                self._thread.start()
            else:
                return
        self._queue.put_nowait(Close(outcome, ended_at))
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._note(f"records of session {self.session_id} still writing after {timeout_s} s")

    # -- the writer thread -------------------------------------------------------

    def _connect(self) -> Conn | None:
        if self.pg:
            try:
                return store_pg.connect(str(self._target))
            except StoreError as exc:
                self._fail(str(exc))
                return None
        assert isinstance(self.path, Path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self._fail(f"cannot open {self.path} ({exc.strerror})")
            return None
        try:
            return open_database(self.path, create=False)
        except StoreError as exc:
            self._fail(str(exc))
            return None

    def _open(self) -> Conn | None:
        conn = self._connect()
        if conn is None:
            return None
        try:
            row = conn.execute(
                "SELECT patient_ref, profile_name, profile_hash, profile_text, started_at"
                " FROM sessions WHERE id = ?", (self.session_id,)
            ).fetchone()
        except DB_ERRORS as exc:
            conn.close()
            self._fail(str(exc))
            return None
        if row is None:
            conn.close()
            self._fail(f"session {self.session_id} is not in it")
            return None
        keys = ("patient_ref", "profile_name", "profile_hash", "profile_text", "started_at")
        self._header = dict(zip(keys, (str(v) for v in row), strict=True))
        self._committed = conn.execute(
            "SELECT count(*) FROM events WHERE session_id = ?", (self.session_id,)).fetchone()[0]
        changed = self._file_changed()
        if changed is not None:
            conn.close()
            self._fail(changed)
            return None
        return conn

    def _file_changed(self) -> str | None:
        """Why the file at `path` is no longer the one opened, or None (a server:
        None)."""
        if self._fd is None:
            return None
        assert isinstance(self.path, Path)
        try:
            opened = os.fstat(self._fd)
            now = os.stat(self.path)
        except FileNotFoundError:
            return "the records file was deleted"
        except OSError as exc:
            return f"the records file cannot be checked ({exc.strerror})"
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            return "the records file was replaced by another file"
        if opened.st_nlink == 0:
            return "the records file was deleted"
        return None

    def _run(self) -> None:
        conn = self._open()
        self._ready.set()
        pending = Pending()
        closing: Close | None = None
        deadline: float | None = None
        try:
            while closing is None:
                # Wake at least once an interval: a deleted file is noticed even when idle.
                wait_s = self.commit_interval_s
                if deadline is not None:
                    wait_s = max(0.0, deadline - time.monotonic())
                if self._retry_at is not None:
                    wait_s = max(0.0, min(wait_s, self._retry_at - time.monotonic()))
                try:
                    item = self._queue.get(timeout=wait_s)
                except queue.Empty:
                    item = None
                urgent = False
                while item is not None:
                    if isinstance(item, Close):
                        closing = item
                    elif isinstance(item, Coverage):
                        pending.cover = item  # only the latest coverage matters
                    elif isinstance(item, Device):
                        pending.device = item
                        urgent = True
                    elif isinstance(item, Deferred):
                        built = self._build(item)
                        if built is not None:
                            pending.events.append(built)
                            urgent = urgent or built.safety
                    else:
                        pending.events.extend(item)
                        urgent = urgent or any(e.safety for e in item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    conn = self._reconnect()
                if conn is not None and self.failure is None and (
                    time.monotonic() >= self._check_due
                ):
                    self._check_due = time.monotonic() + self.commit_interval_s
                    changed = self._file_changed()
                    if changed is not None:
                        assert isinstance(conn, sqlite3.Connection)
                        self._fail(changed, conn)
                if deadline is None and pending:
                    deadline = time.monotonic() + self.commit_interval_s
                due = deadline is not None and time.monotonic() >= deadline
                if not (urgent or due or closing is not None):
                    continue
                committed = False
                if not self._down and conn is not None:
                    committed = self._commit(conn, pending)
                if self._down and not committed:
                    self._spill(pending)
                if self._down and self.pg and conn is not None:  # reconnected later
                    with contextlib.suppress(*DB_ERRORS):
                        conn.close()
                    conn = None
                pending, deadline = Pending(), None
            if not self._down and conn is not None and closing.outcome is not None:
                self._close_session(conn, closing.outcome, closing.ended_at)
            if self._down:
                self._spill(pending, closing)
        finally:
            if conn is not None:
                conn.close()
            if self._fd is not None:
                os.close(self._fd)  # after SQLite's: closing a file's fd drops its locks
        if self.unwritten:
            self._note(f"records of session {self.session_id}: {len(self.unwritten)} records "
                       f"could not be written to {self.path} nor to {self.unsaved_path}")

    def _build(self, item: Deferred) -> EventRecord | None:
        try:
            return item.make()
        except Exception as exc:  # a bug in one event must not stop the records
            self._note(f"an event of session {self.session_id} could not be built: {exc!r}")
            return None

    def _commit(self, conn: Conn, pending: Pending) -> bool:
        """One transaction; True once committed (into the file opened, even if it is
        no longer the records: then `failure` is set and the rows already spilled)."""
        try:
            conn.execute("BEGIN" if self.pg else "BEGIN IMMEDIATE")
            try:
                self._write_rows(conn, pending)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    conn.execute("ROLLBACK")
                raise
        except DB_ERRORS as exc:
            if is_refusal(exc):
                self._refused(self._writing, exc)
            else:
                self._fail(first_line(exc))
            return False
        except Exception as exc:  # a row that cannot be written (a bug): failed all the same,
            # never a dead thread under a session that goes on stamping unrecorded
            self._fail(f"{self._writing} could not be written ({type(exc).__name__}: {exc})")
            return False
        self._committed += len(pending.events)
        changed = self._file_changed()
        if changed is not None:  # committed into a file that is no longer the records
            assert isinstance(conn, sqlite3.Connection)
            self._fail(changed, conn)
        return True

    def _write_rows(self, conn: Conn, pending: Pending) -> None:
        """The batch's rows; `_writing` names the record being written (for a refusal)."""
        sid = self.session_id
        if pending.device is not None:
            d = pending.device
            self._writing = f"the pen and cartridge {d.cartridge_id} of session {sid}"
            set_device_row(conn, sid, d.serial, d.fw_version, d.cartridge_id, d.position_mode)
        if pending.events:
            first = pending.events[0]
            self._writing = (f"{len(pending.events)} events of session {sid} (from "
                             f"{first.kind} at {first.wall})")
            insert_events(conn, sid, pending.events)
        if pending.cover is not None:
            self._writing = f"the coverage of session {sid}"
            state = self._built(pending)
            upsert_coverage(conn, sid, pending.cover.zones, state)

    def _close_session(self, conn: Conn, outcome: str, ended_at: str | None) -> None:
        ended = ended_at if ended_at is not None else datetime.now(UTC).isoformat()
        try:
            conn.execute("BEGIN" if self.pg else "BEGIN IMMEDIATE")
            try:
                close_session_row(conn, self.session_id, outcome, ended)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    conn.execute("ROLLBACK")
                raise
        except DB_ERRORS as exc:  # the outcome goes to the unsaved file next
            if is_refusal(exc):
                self._refused(f"the end ({outcome}) of session {self.session_id}", exc)
            else:
                self._fail(first_line(exc))
        except StoreError as exc:
            self._note(f"session {self.session_id} could not be closed: {exc}")
