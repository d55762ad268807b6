"""RecordWriter's guarantees: commits at least every interval and at once on a
safety event, loses nothing to SIGKILL beyond that window, coalesces coverage,
and never raises a write failure (disk full) into the inner loop: it keeps the
records beside the database instead (tests/test_store_failures.py has the rest)."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_mock import MockerFixture

from devicectl import record_writer
from devicectl.store import EventRecord, RecordWriter, Store, ZoneCoverage

REPO = Path(__file__).resolve().parents[1]
_patients = itertools.count()
WALL = "2026-03-01T09:00:01+00:00"


def event(i: int, *, safety: bool = False) -> EventRecord:
    return EventRecord(i, WALL, "fault" if safety else "command", f"event {i}", 1, {"i": i}, safety)


def zone(strokes: int) -> ZoneCoverage:
    return ZoneCoverage(1, "crown", 1000, 1000, strokes / 1000, 0.9, strokes, 0, False, 1.0)


def new_session(path: Path | str) -> tuple[Path | str, int]:
    with Store(path) as store:
        sid = store.create_session(
            patient_ref="P-0001",
            profile_name="crown-standard",
            profile_hash="9f86d081",
            profile_text="name: crown-standard\n",
            started_at="2026-03-01T09:00:00+00:00",
        )
    return path, sid


@pytest.fixture
def session(records: Path | str) -> tuple[Path | str, int]:
    """A session on each backend (an SQLite file, the test server: tests/pg_support.py)."""
    return new_session(records)


@pytest.fixture
def sqlite_session(tmp_path: Path) -> tuple[Path | str, int]:
    return new_session(tmp_path / "sessions.db")


def committed_texts(path: Path | str, sid: int) -> list[str]:
    with Store(path, create=False) as store:
        return [e.text for e in store.events(sid)]


def wait_until_committed(path: Path | str, sid: int, count: int, within_s: float) -> list[str]:
    end = time.monotonic() + within_s
    texts = committed_texts(path, sid)
    while len(texts) < count and time.monotonic() < end:
        time.sleep(0.01)
        texts = committed_texts(path, sid)
    return texts


def test_close_writes_everything_and_sets_the_outcome(session: tuple[Path | str, int]) -> None:
    path, sid = session
    writer = RecordWriter(path, sid)
    writer.start()
    for i in range(300):
        writer.events([event(i)])
    writer.coverage([zone(40)], b"grid")
    writer.close("complete", "2026-03-01T09:30:00+00:00")
    assert writer.errors == []
    with Store(path) as store:
        assert [e.t_us for e in store.events(sid)] == list(range(300))
        rec = store.session(sid)
        assert (rec.outcome, rec.ended_at) == ("complete", "2026-03-01T09:30:00+00:00")
        assert [z.strokes for z in rec.zones] == [40]
        assert store.coverage_state(sid) == b"grid"


def test_close_without_outcome_leaves_the_session_resumable(
    session: tuple[Path | str, int],
) -> None:
    path, sid = session
    writer = RecordWriter(path, sid)
    writer.start()
    writer.events([event(1)])
    writer.close(None, None)
    with Store(path) as store:
        assert store.session(sid).outcome is None
        assert len(store.events(sid)) == 1


def test_events_are_committed_within_the_interval_while_running(
    session: tuple[Path | str, int],
) -> None:
    path, sid = session
    writer = RecordWriter(path, sid, commit_interval_s=0.05)
    writer.start()
    writer.events([event(1), event(2)])
    try:
        assert wait_until_committed(path, sid, 2, within_s=2.0) == ["event 1", "event 2"]
    finally:
        writer.close(None, None)


def test_safety_event_is_committed_at_once(session: tuple[Path | str, int]) -> None:
    path, sid = session
    writer = RecordWriter(path, sid, commit_interval_s=60.0)
    writer.start()
    try:
        writer.events([event(1)])
        time.sleep(0.2)
        assert committed_texts(path, sid) == []  # batched: the interval is a minute
        writer.events([event(2, safety=True)])
        assert wait_until_committed(path, sid, 2, within_s=2.0) == ["event 1", "event 2"]
    finally:
        writer.close(None, None)


def test_pen_identity_is_committed_at_once_so_its_cartridge_counts_as_used(
    session: tuple[Path | str, int],
) -> None:
    path, sid = session
    writer = RecordWriter(path, sid, commit_interval_s=60.0)
    writer.start()
    try:
        writer.device(serial=40961, fw_version=0x0103, cartridge_id=5150, position_mode="grid")
        end = time.monotonic() + 2.0
        used: frozenset[int] = frozenset()
        while not used and time.monotonic() < end:
            time.sleep(0.01)
            with Store(path, create=False) as store:
                used = store.used_cartridge_ids()
        assert used == {5150}
    finally:
        writer.close(None, None)
    with Store(path) as store:
        rec = store.session(sid)
    assert (rec.device_serial, rec.fw_version, rec.position_mode) == (40961, 0x0103, "grid")


def test_only_the_latest_pending_coverage_is_built_and_written(
    session: tuple[Path | str, int],
) -> None:
    import threading

    path, sid = session
    built: list[tuple[int, str]] = []

    def archive(n: int) -> bytes:
        built.append((n, threading.current_thread().name))
        return bytes([n])

    writer = RecordWriter(path, sid, commit_interval_s=60.0)
    writer.start()
    for n in (1, 2, 3):
        writer.coverage([zone(n)], lambda n=n: archive(n))  # type: ignore[misc]
    writer.close(None, None)
    # only the latest, once, off the caller's thread
    assert built == [(3, f"records-session-{sid}")]
    with Store(path) as store:
        assert [z.strokes for z in store.session(sid).zones] == [3]
        assert store.coverage_state(sid) == b"\x03"


def test_a_failed_commit_is_collected_not_raised_and_nothing_is_lost(
    sqlite_session: tuple[Path | str, int], mocker: MockerFixture
) -> None:
    path, sid = sqlite_session  # a full disk: the server's own loss is test_store_pg_writer's
    real = record_writer.insert_events
    calls: list[int] = []

    def full_once(conn: sqlite3.Connection, *args: object) -> None:  # the disk, full once
        calls.append(1)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        real(conn, *args)  # type: ignore[arg-type]

    mocker.patch.object(record_writer, "insert_events", side_effect=full_once)
    writer = RecordWriter(path, sid, commit_interval_s=0.02)
    writer.start()
    writer.events([event(1)])
    assert wait_until_committed(path, sid, 1, within_s=2.0) == ["event 1"]
    writer.events([event(2)])
    writer.events([event(3, safety=True)])
    writer.close("complete", "2026-03-01T09:30:00+00:00")
    assert writer.failure == "records cannot be written: database or disk is full"
    assert committed_texts(path, sid) == ["event 1"]  # no retry: the session stopped
    spilled = [json.loads(x) for x in writer.unsaved_path.read_text().splitlines()]
    assert [(x["record"], x.get("text")) for x in spilled] == [
        ("session", None), ("event", "event 2"), ("event", "event 3"), ("close", None),
    ]  # event 1 is in the database: only what it could not take
    with Store(path) as store:
        assert store.session(sid).outcome is None  # left open until the replay


def test_a_missing_database_fails_at_once_and_keeps_the_events_beside_it(
    tmp_path: Path,
) -> None:
    writer = RecordWriter(tmp_path / "gone.db", 1)
    writer.start()
    assert writer.failed  # before anything was queued: the session can refuse to stamp
    writer.events([event(1)])
    writer.close("complete", "2026-03-01T09:30:00+00:00")
    assert writer.errors and "cannot open" in writer.errors[0]
    assert not (tmp_path / "gone.db").exists()
    spilled = [json.loads(x) for x in writer.unsaved_path.read_text().splitlines()]
    assert [x["record"] for x in spilled] == ["session", "event", "close"]
    assert spilled[0]["base_events"] is None  # the file was never read: position unknown


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(st.booleans(), max_size=8), max_size=12))
def test_every_event_arrives_once_in_order_whatever_the_batching(
    session: tuple[Path | str, int], batches: list[list[bool]]
) -> None:
    path, sid = session
    with Store(path) as store:
        sid = store.create_session(
            patient_ref=f"P-h{next(_patients)}",  # one open session a patient, on a server
            profile_name="p",
            profile_hash="h",
            profile_text="",
            started_at="2026-03-01T09:00:00+00:00",
        )
    writer = RecordWriter(path, sid, commit_interval_s=0.001)
    writer.start()
    n = 0
    for batch in batches:
        writer.events([event(n + k, safety=s) for k, s in enumerate(batch)])
        n += len(batch)
    writer.close(None, None)
    assert writer.errors == []
    with Store(path) as store:
        assert [e.t_us for e in store.events(sid)] == list(range(n))


# -- SIGKILL: a real process, a real file ----------------------------------------

CHILD = r"""
import sys, time
from pathlib import Path
from devicectl.store import EventRecord, RecordWriter, ZoneCoverage

db, sid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = db if db.startswith("postgresql://") else Path(db)
interval_s, safety_last = float(sys.argv[4]), sys.argv[5] == "1"
writer = RecordWriter(path, sid, commit_interval_s=interval_s)
writer.start()
for i in range(n):
    last = i == n - 1
    writer.events([EventRecord(i, "2026-03-01T09:00:01+00:00", "command", f"event {i}", 1,
                               {"i": i}, safety=safety_last and last)])
    if not safety_last:
        writer.coverage([ZoneCoverage(1, "crown", 1000, 1000, 0.5, 0.9, i + 1, 0, False, 1.0)],
                        str(i).encode())
    if i % 100 == 0:
        time.sleep(0.002)  # a session spreads its events over time
print("SUBMITTED", flush=True)
time.sleep(120)
"""


def run_and_kill(path: Path | str, sid: int, n: int, interval_s: float, safety_last: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(sid),
            str(n),
            str(interval_s),
            "1" if safety_last else "0",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30.0)
        assert ready, "the child never submitted its events"
        assert child.stdout.readline() == b"SUBMITTED\n"
        time.sleep(0.5)  # well past the 200 ms window
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.realtime
def test_sigkill_loses_nothing_submitted_200ms_before(session: tuple[Path | str, int]) -> None:
    path, sid = session
    run_and_kill(path, sid, n=2000, interval_s=0.1, safety_last=False)
    with Store(path) as store:
        assert [e.t_us for e in store.events(sid)] == list(range(2000))
        rec = store.session(sid)
        assert rec.outcome is None  # interrupted, so resumable
        assert [z.strokes for z in rec.zones] == [2000]
        assert store.coverage_state(sid) == b"1999"


@pytest.mark.realtime
def test_sigkill_after_a_safety_event_keeps_it_even_with_a_long_interval(
    session: tuple[Path | str, int],
) -> None:
    path, sid = session
    run_and_kill(path, sid, n=50, interval_s=60.0, safety_last=True)
    with Store(path) as store:
        events = store.events(sid)
    assert [e.t_us for e in events] == list(range(50))
    assert events[-1].safety
