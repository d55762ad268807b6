"""No treatment without a record: when the records cannot be written (disk full,
read-only, the file deleted or replaced), stamping stops within 100 ms of the
failed commit, every event is in the database or in `<db>.unsaved.jsonl`, and
`devicectl records replay` puts them back, once.

Real sessions (virtual time, the simulated pen, real SQLite files). The edges:
a full disk is SQLite's own SQLITE_FULL (PRAGMA max_page_count) or, mid-session,
the writer's insert raising "database or disk is full"; a read-only database
mid-session is SQLite's own read-only error (PRAGMA query_only, set on the
writer's connection); deleted and replaced files are real. Before a session, a
read-only file system is a real read-only bind mount (root, in a private mount
namespace) or chmod (not root: root ignores file modes).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from clinic_support import GATE
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_mock import MockerFixture
from test_records_audit import run_read_only
from test_session import virtual_session, wait_for

from devicectl import record_writer
from devicectl.cli import main
from devicectl.session import Outcome, Policy, Session
from devicectl.store import EventRecord, RecordWriter, Store
from devicectl.unsaved import read_unsaved, replay, unsaved_path
from firmware_sim.virtual import VirtualPen

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
WALL = "2026-03-01T09:00:01+00:00"
#: The pen must be stopped this soon after the failed commit (µs of session time).
STOP_WITHIN_US = 100_000


def new_session(db: Path | str, patient: str = "P-rec") -> int:
    with Store(db) as store:
        return store.create_session(
            patient_ref=patient, profile_name="p", profile_hash="h", profile_text="name: p\n",
            started_at="2026-03-01T09:00:00+00:00",
        )


def arm_insert(mocker: MockerFixture, pragma: str | None) -> threading.Event:
    """Once the returned event is set, the writer's next insert fails: with SQLite's
    own error after `pragma` on its connection, or (None) a full disk raised at the edge."""
    armed = threading.Event()
    real = record_writer.insert_events

    def insert(conn: sqlite3.Connection, sid: int, events: list[EventRecord]) -> None:
        if armed.is_set():
            if pragma is None:
                raise sqlite3.OperationalError("database or disk is full")
            conn.execute(pragma)
        real(conn, sid, events)

    mocker.patch.object(record_writer, "insert_events", side_effect=insert)
    return armed


def stamping_session(db: Path, sid: int) -> tuple[Session, VirtualPen, RecordWriter]:
    session, pen = virtual_session(policy=Policy(auto_confirm=True, end_on_fault=True), speed=1.0)
    clock = session._clock
    writer = RecordWriter(db, sid, clock=clock)
    writer.start()
    session.records.writer = writer
    return session, pen, writer


def run_until_the_records_fail(
    session: Session, pen: VirtualPen, writer: RecordWriter, fail: Callable[[], None]
) -> None:
    session.start()
    assert wait_for(session, lambda: pen.firmware.state.name == "STAMPING", 20)
    fail()
    assert wait_for(session, lambda: writer.failed, 20), "the failure was not noticed"
    assert session.wait(20), "the session did not end after its records failed"
    writer.close(session.outcome.value if session.outcome else None, WALL)


def check_stopped_in_time_and_nothing_lost(
    db: Path, sid: int, session: Session, pen: VirtualPen, writer: RecordWriter
) -> list[EventRecord]:
    """The pen stopped within 100 ms of the failed commit; the events and the outcome
    are back after a replay; a second replay adds nothing."""
    assert writer.failure is not None and writer.failure.startswith("records cannot be written")
    assert writer.failed_at_us is not None
    assert session.outcome is Outcome.ABORTED
    assert pen.firmware.state.name != "STAMPING"
    shown = session.drain_events()
    stop = next(e for e in shown if e.kind.name == "SAFETY_STOP"
                and "records cannot be written" in e.text)
    assert 0 <= stop.t_us - writer.failed_at_us <= STOP_WITHIN_US
    sent_stop = [e for e in shown if e.kind.name == "SENT" and e.data.get("type") == "STOP"
                 and e.t_us >= stop.t_us]
    assert sent_stop and sent_stop[0].t_us == stop.t_us  # the STOP went in the same step
    kinds = [e.kind.name for e in shown]
    states = [e for e in shown if e.kind.name == "STATE"]
    assert "STOP_REQUESTED" in kinds and states[-1].data["to"] == "ABORTED"
    # the session ended once the pen was seen stopped (then only the end's depth sample)
    assert [k for k in kinds if k != "SAMPLE"][-1] == "PEN_STOPPED"
    if db.exists():
        with Store(db) as store:
            assert store.session(sid).outcome is None  # not yet: the end is in the unsaved file
    assert writer.unsaved_path.exists() and not writer.unwritten
    said = replay(writer.unsaved_path, db)
    assert "closed as aborted" in said[0]
    with Store(db) as store:
        recorded = store.events(sid)
        assert store.session(sid).outcome == "aborted"
    assert [e.kind for e in recorded if e.kind != "SAMPLE"] == [e.kind.name for e in shown]
    again = replay(writer.unsaved_path, db)
    assert again[0].startswith(f"session {sid}: nothing to add")
    with Store(db) as store:
        assert len(store.events(sid)) == len(recorded)
    return recorded


def test_disk_full_mid_session_stops_the_pen_and_loses_nothing(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    db = tmp_path / "s.db"
    sid = new_session(db)
    armed = arm_insert(mocker, None)
    session, pen, writer = stamping_session(db, sid)
    run_until_the_records_fail(session, pen, writer, armed.set)
    assert "database or disk is full" in writer.failure  # type: ignore[operator]
    check_stopped_in_time_and_nothing_lost(db, sid, session, pen, writer)


def test_a_read_only_database_mid_session_stops_the_pen_and_loses_nothing(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    db = tmp_path / "s.db"
    sid = new_session(db)
    armed = arm_insert(mocker, "PRAGMA query_only = 1")
    session, pen, writer = stamping_session(db, sid)
    run_until_the_records_fail(session, pen, writer, armed.set)
    assert "readonly" in writer.failure  # type: ignore[operator]
    check_stopped_in_time_and_nothing_lost(db, sid, session, pen, writer)


def test_a_deleted_database_is_noticed_copied_back_whole_and_completed_by_replay(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    earlier = new_session(db, "P-earlier")
    with Store(db) as store:
        store.set_device(earlier, serial=1, fw_version=0x0103, cartridge_id=4242,
                         position_mode="tracked")
    sid = new_session(db)
    session, pen, writer = stamping_session(db, sid)

    def delete() -> None:
        for f in tmp_path.glob("s.db*"):
            if f.is_file():  # the database, its WAL and journal
                f.unlink()

    run_until_the_records_fail(session, pen, writer, delete)
    assert "deleted" in writer.failure  # type: ignore[operator]
    assert any("copied back" in e for e in writer.errors)
    check_stopped_in_time_and_nothing_lost(db, sid, session, pen, writer)
    with Store(db) as store:
        assert 4242 in store.used_cartridge_ids()  # the clinic's history came back too
        rec = store.session(sid)
    assert rec.patient_ref == "P-rec" and rec.cartridge_id


def test_a_replaced_database_is_noticed_by_its_identity(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sid = new_session(db)
    session, pen, writer = stamping_session(db, sid)
    other = tmp_path / "other.db"

    def replace() -> None:
        shutil.copyfile(db, other)
        os.replace(other, db)  # the same name, another file: commits would go nowhere

    run_until_the_records_fail(session, pen, writer, replace)
    assert "replaced" in writer.failure  # type: ignore[operator]
    check_stopped_in_time_and_nothing_lost(db, sid, session, pen, writer)


def test_a_real_sqlite_disk_full_goes_to_the_unsaved_file_and_replays_once(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    db = tmp_path / "s.db"
    sid = new_session(db)
    real_open = record_writer.open_database

    def full_disk(path: Path, *, create: bool = True) -> sqlite3.Connection:
        conn = real_open(path, create=create)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL from now
        return conn

    mocker.patch.object(record_writer, "open_database", side_effect=full_disk)
    writer = RecordWriter(db, sid, commit_interval_s=0.01)
    writer.start()
    big = "x" * 20_000  # needs new pages whatever the free space left
    writer.events([EventRecord(i, WALL, "NOTE", f"{i} {big}", None, {"i": i}) for i in range(3)])
    writer.device(serial=7, fw_version=0x0103, cartridge_id=5150, position_mode="tracked")
    writer.close("aborted", "2026-03-01T09:30:00+00:00")
    assert writer.failure is not None and "database or disk is full" in writer.failure
    lines = [json.loads(x) for x in unsaved_path(db).read_text().splitlines()]
    assert [x["record"] for x in lines] == ["session", "device", "event", "event", "event", "close"]
    with Store(db) as store:
        assert store.events(sid) == [] and store.session(sid).outcome is None
    assert main(["records", "replay", str(unsaved_path(db))]) == 0
    assert main(["records", "replay", str(unsaved_path(db))]) == 0
    with Store(db) as store:
        assert [e.data["i"] for e in store.events(sid)] == [0, 1, 2]
        rec = store.session(sid)
    assert (rec.outcome, rec.cartridge_id) == ("aborted", 5150)
    (segment,) = read_unsaved(unsaved_path(db))
    assert (segment.session_id, segment.base) == (sid, 0)
    assert unsaved_path(db).stat().st_mode & 0o777 == 0o600  # patient references inside


EVENTS = st.lists(st.builds(
    lambda t, kind: EventRecord(t, WALL, kind, f"{kind} at {t}", None, {"t": t}),
    st.integers(0, 2), st.sampled_from(["SENT", "STATE"])), max_size=12)


@settings(max_examples=40, deadline=None)
@given(events=EVENTS, data=st.data())
def test_replay_restores_exactly_the_session_whatever_was_committed(
    tmp_path_factory: pytest.TempPathFactory, events: list[EventRecord], data: st.DataObject
) -> None:
    """Identical events included: the file says where its events start in the session."""
    from devicectl import unsaved as u

    db = tmp_path_factory.mktemp("replay") / "s.db"
    sid = new_session(db)
    committed = data.draw(st.integers(0, len(events)), label="committed before the failure")
    moved = data.draw(st.booleans(), label="file replaced: everything spilled")
    with Store(db) as store:
        store.append_events(sid, events[:committed])
    base = 0 if moved else committed
    header = {"patient_ref": "P-rec", "profile_name": "p", "profile_hash": "h",
              "profile_text": "name: p\n", "started_at": "2026-03-01T09:00:00+00:00"}
    lines = [u.line("session", sid, base_events=base, **header)]
    lines += [u.event_line(sid, e) for e in events[base:]]
    unsaved_path(db).write_text("\n".join(lines) + "\n")
    for _ in range(2):
        replay(unsaved_path(db), db)
        with Store(db) as store:
            assert store.events(sid) == events


def replay_argv(unsaved: Path, db: Path | str) -> list[str]:
    """`records replay FILE`; a server's file also names the server (--db)."""
    return ["records", "replay", str(unsaved), *(["--db", db] if isinstance(db, str) else [])]


def test_a_session_does_not_start_while_records_wait_to_be_replayed(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    from devicectl import unsaved as u

    db = records
    sid = new_session(db)
    unsaved = unsaved_path(db)
    unsaved.parent.mkdir(parents=True, exist_ok=True)  # a server's goes under XDG_DATA_HOME
    unsaved.write_text(u.line("session", sid, base_events=0) + "\n" + u.line(
        "device", sid, serial=1, fw_version=0x0103, cartridge_id=777, position_mode="tracked"
    ) + "\n")
    run = [*RUN_ARGS, "--db", str(db)]
    assert main(run) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records replay" in err[0] and str(unsaved) in err[0]
    with Store(db) as store:
        assert len(store.sessions()) == 1  # refused before a session row was made
    assert main(replay_argv(unsaved, db)) == 0
    with Store(db) as store:
        assert 777 in store.used_cartridge_ids()  # the check the refusal protected
    assert main(run) == 0  # replayed: the file may stay, it adds nothing now


def test_replay_says_what_it_did_and_adds_nothing_twice(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = records
    sid = new_session(db)
    writer = RecordWriter(db, sid)
    writer.start()
    writer.events([EventRecord(1, WALL, "NOTE", "before", None, {})])
    writer.close(None, None)
    unsaved = unsaved_path(db)
    from devicectl import unsaved as u

    same = EventRecord(2, WALL, "NOTE", "twice", None, {"k": [1, 2]})
    unsaved.write_text("\n".join([
        u.event_line(sid, EventRecord(1, WALL, "NOTE", "before", None, {})),
        u.event_line(sid, same), u.event_line(sid, same),
        u.line("close", sid, outcome="aborted", ended_at=WALL),
    ]) + "\n")
    assert main(replay_argv(unsaved, db)) == 0
    first = capsys.readouterr().out
    assert f"session {sid}: 2 events added, 1 already there, closed as aborted" in first
    assert main(replay_argv(unsaved, db)) == 0
    assert f"session {sid}: nothing to add (3 events already there)" in capsys.readouterr().out
    with Store(db) as store:
        assert [e.text for e in store.events(sid)] == ["before", "twice", "twice"]


def test_replay_of_a_broken_file_names_the_line_and_changes_nothing(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = records
    sid = new_session(db)
    unsaved = unsaved_path(db)
    from devicectl import unsaved as u

    unsaved.parent.mkdir(parents=True, exist_ok=True)
    unsaved.write_text(u.event_line(sid, EventRecord(1, WALL, "NOTE", "ok", None, {}))
                       + "\n{not json\n")
    assert main(replay_argv(unsaved, db)) == 1
    err = capsys.readouterr().err
    assert f"{unsaved} line 2" in err and "nothing was replayed" in err
    assert len(err.strip().splitlines()) == 1
    with Store(db) as store:
        assert store.events(sid) == []


# -- before a session: a database that cannot be written refuses it -----------------

RUN_ARGS = ("run", "--profile", str(DATA / "short-frontal.yaml"), "--patient", "P-0100",
            "--sim", "--yes", "--speed", "0", "--seed", "5", *GATE)


def run_with_read_only_records(db: Path, what: str) -> subprocess.CompletedProcess[str]:
    """`devicectl run` on `db` with `what` ("folder" or "file") read-only: a real
    read-only bind mount in a private mount namespace as root, file modes otherwise
    (test_records_audit.run_read_only)."""
    return run_read_only(db, what, *RUN_ARGS)


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_database_refuses_the_session_before_anything_starts(
    tmp_path: Path, what: str
) -> None:
    db = tmp_path / "ro" / "s.db"
    db.parent.mkdir()
    new_session(db)  # an existing database with one session
    result = run_with_read_only_records(db, what)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "written" in lines[0] and str(db) in lines[0], lines
    assert "Traceback" not in result.stderr and "pen:" not in result.stdout
    with Store(db) as store:
        assert len(store.sessions()) == 1  # no session row was made


def test_while_the_records_fail_resume_and_start_are_refused(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    from devicectl.controller import Command

    db = tmp_path / "s.db"
    sid = new_session(db)
    armed = arm_insert(mocker, None)
    session, pen = virtual_session(policy=Policy(auto_confirm=True), speed=1.0)
    writer = RecordWriter(db, sid)
    writer.start()
    session.records.writer = writer
    session.start()
    assert wait_for(session, lambda: pen.firmware.state.name == "STAMPING", 20)
    armed.set()
    assert wait_for(session, lambda: session.state.name == "PAUSED", 20)
    assert session.snapshot.status.get("records_failure") or wait_for(
        session, lambda: "records_failure" in session.snapshot.status)
    session.submit(Command.RESUME)
    assert wait_for(session, lambda: any(
        e.kind.name == "COMMAND_REFUSED" and "records cannot be written" in e.text
        for e in session.drain_events()), 10)
    assert session.state.name == "PAUSED" and pen.firmware.state.name != "STAMPING"
    session.request_stop("test over")
    assert session.wait(10)
    writer.close("aborted", WALL)


def test_through_the_cli_a_deleted_database_stops_the_run_says_so_in_red_and_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3
    import threading
    import time

    from rich.console import Console

    from devicectl.monitor.terminal import TerminalView
    from devicectl.web.state import page_state

    db = tmp_path / "s.db"
    deleted: list[float] = []
    monkeypatch.setenv("COLUMNS", "250")
    running = threading.Event()
    running.set()

    def delete_once_stamping() -> None:
        # The pen process owns the session: the file goes once the records say it stamps.
        deadline = time.monotonic() + 60
        while running.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                try:
                    started = conn.execute(
                        "SELECT 1 FROM events WHERE kind = 'ZONE_STARTED'").fetchone()
                finally:
                    conn.close()
            except sqlite3.Error:
                continue
            if started:
                deleted.append(time.monotonic())
                for f in tmp_path.glob("s.db*"):
                    if f.is_file():  # the database, its WAL and journal (not <db>.running/)
                        f.unlink()
                return

    watcher = threading.Thread(target=delete_once_stamping)
    watcher.start()
    try:
        code = main(["run", "--profile", str(DATA / "short-two-zones.yaml"), "--patient",
                     "P-0101", "--sim", "--yes", "--speed", "1", "--seed", "31", "--db", str(db),
                     *GATE])
    finally:
        running.clear()
        watcher.join(10)
    out = capsys.readouterr().out
    assert deleted and code == Outcome.ABORTED.exit_code
    assert "records cannot be written: the records file was deleted" in out
    assert "RECORDS: records cannot be written" in out  # the plain view says so as it happens
    assert f"devicectl records replay {unsaved_path(db)}" in out
    assert main(["sessions", "list", "--db", str(db)]) == 0
    assert f"devicectl records replay {unsaved_path(db)}" in capsys.readouterr().out
    assert main(["records", "replay", str(unsaved_path(db))]) == 0
    assert main(["sessions", "list", "--db", str(db)]) == 0
    assert "records replay" not in capsys.readouterr().out  # all back: nothing to say
    with Store(db) as store:
        rec = store.sessions()[0]
        kinds = [e.kind for e in store.events(rec.id)]
    assert rec.outcome == "aborted" and rec.patient_ref == "P-0101" and rec.cartridge_id
    assert [k for k in kinds if k != "SAMPLE"][-1] == "PEN_STOPPED"
    assert "SAFETY_STOP" in kinds and "STOP_REQUESTED" in kinds

    # The live view and the page show it in red, whatever the state.
    status = {"state": "PAUSED", "records_failure": "records cannot be written: disk full"}
    console = Console(record=True, width=120, file=io.StringIO(), color_system="truecolor")
    console.print(TerminalView("t").render(status))
    html = console.export_html(inline_styles=True)
    assert 'background-color: #800000; font-weight: bold">records cannot be written' in html
    assert page_state(status, header={}, trace=[], events=[], heat=None, tracked=False)[
        "records_failure"] == status["records_failure"]


def test_a_nearly_full_disk_refuses_the_session_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import devicectl.store

    db = tmp_path / "s.db"
    new_session(db)
    real = shutil.disk_usage

    def nearly_full(path: str | Path) -> object:  # the edge: what the file system reports
        usage = real(path)
        return type(usage)(usage.total, usage.total - 4096, 4096)

    monkeypatch.setattr(devicectl.store.shutil, "disk_usage", nearly_full)
    assert main([*RUN_ARGS, "--db", str(db)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4 KiB free" in err[0] and str(db) in err[0]
    with Store(db) as store:
        assert len(store.sessions()) == 1


def test_a_refused_write_mid_session_is_named_stops_the_pen_and_is_not_retried(
    records: Path | str,
) -> None:
    """The records answer and refuse a row by their own rules (here: another
    process closed the session, so the append-only trigger refuses its next
    events): a refused write, naming the record, not a lost server; the pen stops
    as on any failure, the events go to the unsaved file, and nothing reconnects."""
    db = records
    sid = new_session(db)
    session, pen, writer = stamping_session(db, sid)  # type: ignore[arg-type]

    def close_elsewhere() -> None:
        with Store(db) as store:
            store.close_session(sid, "aborted", WALL)

    run_until_the_records_fail(session, pen, writer, close_elsewhere)
    failure = writer.failure or ""
    assert failure.startswith("records cannot be written: the records refused ")
    assert f" events of session {sid} (from " in failure or f"the coverage of session {sid}" \
        in failure
    assert "a closed session is final" in failure
    assert "lost" not in failure and writer.link is None and writer._attempts == 0
    assert writer.status_line() == failure
    assert session.outcome is Outcome.ABORTED and pen.firmware.state.name != "STAMPING"
    shown = session.drain_events()
    stop = next(e for e in shown if e.kind.name == "SAFETY_STOP"
                and "records cannot be written" in e.text)
    assert writer.failed_at_us is not None
    assert 0 <= stop.t_us - writer.failed_at_us <= STOP_WITHIN_US
    assert [s.session_id for s in read_unsaved(writer.unsaved_path)] == [sid]
    assert read_unsaved(writer.unsaved_path)[0].events  # what was refused is kept there
