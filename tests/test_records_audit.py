"""The records' integrity, round 12: the notes anchored across the records (a
session's last note removed), the records read where they cannot be written, and
`records replay` of a huge or endless file. Real files, a real PostgreSQL server
(tests/pg_support.py), the real CLI.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pg_support import raw_connect
from test_chain import tamper

from devicectl.chain import genesis, note_hash
from devicectl.cli import main
from devicectl.records import APPLICATION_ID, MIGRATIONS
from devicectl.store import Store

WALL = "2026-05-04T10:00:00+00:00"


def closed_session(db: Path | str, patient: str) -> int:
    with Store(db) as store:
        sid = store.create_session(patient_ref=patient, profile_name="p", profile_hash="h",
                                   profile_text="t", started_at=WALL)
        store.close_session(sid, "complete", WALL)
    return sid


def note(db: Path | str, sid: int, text: str, *adverse: str) -> None:
    extra = ["--adverse", adverse[0]] if adverse else []
    assert main(["sessions", "note", str(sid), *extra, "--text", text, "--by", "DR-42",
                 "--db", str(db)]) == 0


def verify(db: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["sessions", "verify", "--db", str(db)])
    return code, capsys.readouterr().out


def note_ids(db: Path | str) -> list[int]:
    conn = raw_connect(db)
    ids = [int(r[0]) for r in conn.execute("SELECT id FROM notes ORDER BY id")]
    conn.close()
    return ids


@pytest.fixture
def noted(records: Path | str) -> Path | str:
    """Two closed sessions on each backend, noted: session 1 a note then an adverse
    event, then session 2 a note (the newest of the records)."""
    one, two = closed_session(records, "P-N1"), closed_session(records, "P-N2")
    note(records, one, "follow-up call: fine")
    note(records, one, "scalp infection at day 3", "infection")
    note(records, two, "follow-up call: fine")
    return records


# --- 1. a session's last note, removed ---------------------------------------------------


def test_a_sessions_removed_last_note_breaks_the_records_chain_of_notes(
    noted: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md ("Records that prove themselves"): a session's last notes removed
    were not caught (chain.py:_verify_notes checks a note against the one before it in
    its session; the closure, set before any note, covers the events). Each note now
    also links to the note written before it in the whole records, whichever session
    that is: session 1's adverse event, removed, breaks session 2's note's link."""
    _, adverse, _ = note_ids(noted)
    code, out = verify(noted, capsys)
    assert code == 0, out
    tamper(noted, "notes_no_delete", "DELETE FROM notes WHERE id = ?", adverse)
    code, out = verify(noted, capsys)
    assert code == 1, out
    assert "notes" in out and "removed" in out, out


def test_the_newest_note_of_the_records_removed_is_caught_by_the_count_of_notes(
    noted: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest note of the records has nothing after it to link to it: the highest
    note id ever written (SQLite's sqlite_sequence; on the server, the same table kept
    by a trigger) says a note was there. docs/clinic.md says what this does not catch
    (that count lowered too)."""
    newest = note_ids(noted)[-1]
    tamper(noted, "notes_no_delete", "DELETE FROM notes WHERE id = ?", newest)
    code, out = verify(noted, capsys)
    assert code == 1, out
    assert f"note row {newest}" in out and "removed" in out, out


def test_the_newest_note_removed_stays_caught_after_the_next_note_is_written(
    noted: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md: removing any note but the newest breaks the next one's link. The
    newest removed, the next note written by devicectl anchored to the note before
    the removed one, and the count of notes then matched again: the removal passed.
    Each anchor now also covers the count of notes it was written after, so the
    next note names the gap."""
    newest = note_ids(noted)[-1]
    tamper(noted, "notes_no_delete", "DELETE FROM notes WHERE id = ?", newest)
    note(noted, 1, "a week later: fine")
    code, out = verify(noted, capsys)
    assert code == 1, out
    assert "removed" in out, out


def test_clearing_the_anchors_and_raising_their_origin_does_not_switch_the_check_off(
    noted: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As chain_origin (tests/test_security_audit.py): notes below notes_anchor_origin
    without an anchor are said not anchored, not failed. Session 1's adverse event
    removed, every anchor cleared and the origin raised past them (triggers dropped
    and put back) made every note "written before the records anchored them", exit 0.
    A note written with an anchor says so in its own hash, in its session's chain."""
    _, adverse, _ = note_ids(noted)
    tamper(noted, "notes_no_delete", "DELETE FROM notes WHERE id = ?", adverse)
    tamper(noted, "notes_no_update", "UPDATE notes SET anchor = NULL")
    tamper(noted, "notes_anchor_origin_fixed", "UPDATE notes_anchor_origin SET first_note_id = 99")
    code, out = verify(noted, capsys)
    assert code == 1, out


def records_with_notes_before_the_anchor(db: Path) -> None:
    """A records file at schema 6 (notes chained per session, before the anchor across
    the records), one closed session with two notes, as that devicectl wrote them."""
    conn = sqlite3.connect(db, isolation_level=None)
    for statements in MIGRATIONS[:6]:
        for sql in statements:
            conn.execute(sql)
    conn.execute("UPDATE schema_version SET version = 6")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                 " started_at) VALUES ('P-OLD2', 'p', 'h', 't', ?)", (WALL,))
    prev = genesis(conn, 1)
    for text in ("first", "second"):
        row = (1, WALL, None, text, "DR-1")
        prev = note_hash(prev, row)
        conn.execute("INSERT INTO notes (session_id, wall, adverse_kind, text, author, hash)"
                     " VALUES (?, ?, ?, ?, ?, ?)", (*row, prev))
    conn.close()
    with Store(db) as store:
        store.close_session(1, "complete", WALL)


def test_notes_written_before_the_anchor_are_said_not_anchored_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As sessions from before the chain (chain_origin): an old file still verifies,
    saying in words that its old notes are not anchored; a note written since is
    anchored, and removing an old note but the newest still breaks its session's chain."""
    db = tmp_path / "old.db"
    records_with_notes_before_the_anchor(db)
    code, out = verify(db, capsys)
    assert code == 0, out
    assert "2 notes written before the records anchored them" in out, out
    note(db, 1, "third")
    code, out = verify(db, capsys)
    assert code == 0, out
    assert "1 anchored" in out, out


def test_the_report_carries_the_notes_head_that_verify_prints(
    noted: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md: the notes' head is printed outside the file, by `sessions verify`
    and on the report, so a note removed since a printout changes it."""
    from devicectl.report import write_report

    _, out = verify(noted, capsys)
    head = out.split("ok notes: 3 anchored, head ")[1].split()[0]
    files = write_report(noted, 1, tmp_path / "report")
    assert head in files.html.read_text(encoding="utf-8")


def test_a_servers_notes_from_before_the_anchor_are_said_not_anchored_not_failed(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The clinic's server at schema 4 (before the anchor), a session with a note as that
    devicectl wrote it: it verifies, the note said not anchored; one written since is
    anchored, and the server counts the notes (its sqlite_sequence row) from the last
    note already there, so removing the new one is caught."""
    from devicectl.dbconn import PgConn
    from devicectl.store_pg import PG_MIGRATIONS

    conn = raw_connect(pg_url)
    assert isinstance(conn, PgConn)
    for statements in PG_MIGRATIONS[:4]:
        for sql in statements:
            conn.execute(sql)
    conn.execute("UPDATE schema_version SET version = 4")
    conn.execute("INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                 " started_at) VALUES ('P-OLD3', 'p', 'h', 't', ?)", (WALL,))
    row = (1, WALL, "pain", "sore for a day", "DR-1")
    conn.execute("INSERT INTO notes (session_id, wall, adverse_kind, text, author, hash)"
                 " VALUES (?, ?, ?, ?, ?, ?)", (*row, note_hash(genesis(conn, 1), row)))
    conn.close()
    code, out = verify(pg_url, capsys)
    assert code == 0 and "1 note written before the records anchored them" in out, out
    note(pg_url, 1, "follow-up call: fine")
    code, out = verify(pg_url, capsys)
    assert code == 0 and "1 anchored" in out, out
    tamper(pg_url, "notes_no_delete", "DELETE FROM notes WHERE id = ?", note_ids(pg_url)[-1])
    code, out = verify(pg_url, capsys)
    assert code == 1 and "the newest written, is missing" in out, out


# --- 2. records that cannot be written, read ----------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def run_read_only(db: Path, what: str, *argv: str, db_arg: bool = True,
                  code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`devicectl ARGV --db db` (without --db: `db_arg` False), or the Python `code`,
    with `what` ("folder" or "file") read-only: a real read-only bind mount in a
    private mount namespace as root (as tests/test_store_failures.py), file modes
    otherwise."""
    argv = (*argv, "--db", str(db)) if db_arg else argv
    code = code or f"import sys; from devicectl.cli import main; sys.exit(main({list(argv)!r}))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    target = str(db.parent if what == "folder" else db)
    if os.geteuid() != 0:
        os.chmod(db, 0o444)
        if what == "folder":
            os.chmod(db.parent, 0o555)
        try:
            return subprocess.run([sys.executable, "-c", code], capture_output=True,
                                  text=True, env=env, timeout=120)
        finally:
            os.chmod(db.parent, 0o755)
            os.chmod(db, 0o600)
    if shutil.which("unshare") is None:
        pytest.skip("root without unshare(1): no way here to make a file read-only for root")
    script = (f'mount --bind "{target}" "{target}" && mount -o remount,bind,ro "{target}" '
              f'&& exec "{sys.executable}" -c "$0"')
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           code], capture_output=True, text=True, env=env, timeout=120)
    if "mount:" in done.stderr and "Read-only" not in done.stderr:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    return done


@pytest.fixture
def read_only_records(tmp_path: Path) -> Path:
    """A records file with one closed, noted session, in a folder of its own, closed
    cleanly (no -wal or -shm beside it)."""
    db = tmp_path / "ro" / "sessions.db"
    sid = closed_session(db, "P-RO1")
    note(db, sid, "follow-up call: fine")
    assert sorted(p.name for p in db.parent.iterdir()) == ["sessions.db"]
    return db


@pytest.mark.parametrize("what", ["folder", "file"])
@pytest.mark.parametrize("argv", [
    ("sessions", "list"), ("sessions", "verify"), ("sessions", "show", "1"),
    ("sessions", "report", "1", "--out", "OUT"), ("patients", "list"),
], ids=["list", "verify", "show", "report", "patients"])
def test_commands_that_only_read_work_on_records_that_cannot_be_written(
    read_only_records: Path, tmp_path: Path, what: str, argv: tuple[str, ...]
) -> None:
    """Every bad input has a defined answer, and a records file the user can read but
    not write is not a bad input for a command that only reads: records.open_database
    opened every file for writing (its journal set to WAL, which needs the folder),
    so `sessions list` in a read-only folder said "cannot open the records file
    ... check that it and its folder can be written". They open it read-only."""
    argv = tuple(str(tmp_path / "report") if a == "OUT" else a for a in argv)
    done = run_read_only(read_only_records, what, *argv)
    assert done.returncode == 0, done.stderr
    assert "P-RO1" in done.stdout or "chains hold" in done.stdout or "report" in done.stdout


@pytest.mark.parametrize("what", ["folder", "file"])
def test_monitor_and_its_page_read_a_recorded_session_that_cannot_be_written(
    read_only_records: Path, what: str
) -> None:
    """docs/clinic.md "Records that prove themselves": records that cannot be written
    are still read by the commands that only read. `monitor` (monitor_cmd.py:52) and
    its page (web/records_source.py:72-74, web/hub.py:141) opened them for writing,
    so a recorded session in a read-only folder could not be watched."""
    code = "\n".join((
        "import argparse, sys, threading",
        "from devicectl.commands.monitor_cmd import monitor",
        "from devicectl.web.hub import EventFeed",
        "from devicectl.web.records_source import RecordsSource",
        "from pathlib import Path",
        f"db = Path({str(read_only_records)!r})",
        "stop = threading.Event(); stop.set()",
        "args = argparse.Namespace(db=db, session=1, web_port=0, web_host='127.0.0.1')",
        "assert monitor(args, stop) == 0",
        "feed = EventFeed(db, 1); items = feed.poll()",
        "print('feed', len(items) + feed.hidden, feed.error)",
        "print('status', RecordsSource(db, 1).status())",
    ))
    done = run_read_only(read_only_records, what, db_arg=False, code=code)
    assert done.returncode == 0, done.stderr
    assert "has ended (complete): its record, read-only" in done.stdout, done.stdout
    assert "feed 0 None" in done.stdout, done.stdout  # read, nothing to say (no events)
    assert "'state': 'COMPLETE'" in done.stdout and "'stop_reason': None" in done.stdout


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_note_to_records_that_cannot_be_written_is_one_sentence_naming_the_file(
    read_only_records: Path, what: str
) -> None:
    """Commands that write still refuse: one sentence naming the file (notes.add_note's
    "cannot write the note of session 1: attempt to write a readonly database" named
    none when only the file was read-only)."""
    done = run_read_only(read_only_records, what, "sessions", "note", "1", "--text", "late")
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(read_only_records) in lines[0], lines
    assert "Traceback" not in done.stderr


# --- 3. records replay of a huge or endless file ------------------------------------------


def _replay_held_to_2_gib(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30));"
            "from devicectl.cli import main; sys.exit(main(sys.argv[1:]))")
    env = os.environ | {"XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-c", code, "records", "replay", *argv],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def test_replaying_an_endless_file_is_one_sentence_naming_its_first_line(
    tmp_path: Path
) -> None:
    """Every bad input has a defined answer (a wrong path among them). unsaved.py:
    read_unsaved read the whole file (path.read_text) before looking at a line:
    /dev/zero, or any huge file, was read until memory ran out, then a crash report.
    It reads a line at a time, each at most MAX_LINE_BYTES. Run in a child process
    held to 2 GiB of address space."""
    db = tmp_path / "sessions.db"
    closed_session(db, "P-RP1")
    done = _replay_held_to_2_gib(tmp_path, "/dev/zero", "--db", str(db))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "/dev/zero line 1" in lines[0], lines
    assert "nothing was replayed" in lines[0] and "bug" not in done.stderr


def test_an_event_whose_text_holds_a_line_separator_is_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """unsaved.py writes one JSON object a line (ensure_ascii=False, so U+2028, U+2029
    and U+0085 stay as they are inside a string); read_unsaved split the file with
    str.splitlines(), which breaks a line at those too: an event whose text held one
    (any text the records keep) made the file "line 2 is not an unsaved devicectl
    record", nothing replayed. Lines end at "\\n" only."""
    from devicectl.store import EventRecord
    from devicectl.unsaved import SUFFIX, event_line, line

    db = tmp_path / "sessions.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-RP2", profile_name="p", profile_hash="h",
                                   profile_text="t", started_at=WALL)
    text = "zone crown\u2028left\u0085 edge"
    unsaved = tmp_path / f"sessions.db{SUFFIX}"
    unsaved.write_text(line("session", sid, base_events=0) + "\n"
                       + event_line(sid, EventRecord(1, WALL, "STATE", text, None, {})) + "\n",
                       encoding="utf-8")
    assert main(["records", "replay", str(unsaved)]) == 0, capsys.readouterr().err
    with Store(db) as store:
        assert [e.text for e in store.events(sid)] == [text]


@pytest.mark.parametrize("base", [2, None], ids=["base-known", "base-unknown"])
def test_a_segment_longer_than_a_chunk_replays_as_a_whole_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    base: int | None
) -> None:
    """replay puts a segment's events back CHUNK_EVENTS at a time (here 3): events
    already in the database are told from missing ones across the parts as over the
    whole (by position from `base_events`, or as a multiset), and the rest of the
    segment (its end) is put back after its last part."""
    from devicectl import unsaved as u
    from devicectl.store import EventRecord

    monkeypatch.setattr(u, "CHUNK_EVENTS", 3)
    events = [EventRecord(i, WALL, "STATE", f"event {i}", None, {}) for i in range(9)]
    db = tmp_path / "sessions.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-RP3", profile_name="p", profile_hash="h",
                                   profile_text="t", started_at=WALL)
        store.append_events(sid, events[:4])
    head = u.line("session", sid, **({} if base is None else {"base_events": base}))
    lines = [head, *(u.event_line(sid, e) for e in events[2:]),
             u.line("close", sid, outcome="complete", ended_at=WALL)]
    unsaved = tmp_path / f"sessions.db{u.SUFFIX}"
    unsaved.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    assert main(["records", "replay", str(unsaved)]) == 0
    out = capsys.readouterr().out
    assert f"session {sid}: 5 events added, 2 already there, closed as complete" in out, out
    with Store(db) as store:
        assert store.events(sid) == events
    assert main(["sessions", "verify", "--db", str(db)]) == 0
    assert main(["records", "replay", str(unsaved)]) == 0  # again: nothing twice
    assert "nothing to add (7 events already there)" in capsys.readouterr().out


def test_two_rooms_noting_two_sessions_at_once_anchor_one_after_the_other(
    pg_url: str
) -> None:
    """notes.add_note: on the clinic's server, notes queue on one advisory lock, so two
    rooms that note at the same moment chain one after the other. With the anchor
    the chain runs through every session's notes: room B, noting another session
    while room A's note is written but not committed, waits for it (seen in pg_locks,
    not a clock), then anchors to it; with a lock per session both anchored to the
    same predecessor (B waited only on the count of notes, after reading it), a fork
    the check names."""
    import threading

    from devicectl.dbconn import PgConn
    from devicectl.note_anchor import verify_anchors
    from devicectl.notes import add_note, append_note

    one, two = closed_session(pg_url, "P-R1"), closed_session(pg_url, "P-R2")
    note(pg_url, one, "before")
    room_a = raw_connect(pg_url)
    assert isinstance(room_a, PgConn)
    room_a.execute("BEGIN")
    append_note(room_a, (one, WALL, None, "room A", "A"))
    errors: list[BaseException] = []

    def room_b() -> None:
        try:
            with Store(pg_url) as store:
                add_note(store.conn, two, wall=WALL, text="room B", adverse=None, author="B")
        except BaseException as exc:
            errors.append(exc)

    b = threading.Thread(target=room_b)
    b.start()
    watcher = raw_connect(pg_url)
    for _ in range(6000):  # until room B waits on a lock, or has finished
        waiting = watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]
        if waiting or not b.is_alive():
            break
        b.join(0.01)
    room_a.execute("COMMIT")
    b.join(60)
    room_a.close()
    assert not errors
    check = verify_anchors(watcher)
    watcher.close()
    assert check.problem is None and check.anchored == 3, check


def test_a_rooms_login_notes_and_verifies_the_anchors(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md: the rooms' logins hold devicectl_writer and no more; a note, its
    anchor and the count of notes (a trigger's UPDATE of sqlite_sequence) are theirs
    to write, and verify reads notes_anchor_origin."""
    from test_clinic_run import room_login

    sid = closed_session(pg_url, "P-RM1")
    room = room_login(pg_url)
    note(room, sid, "follow-up call: fine")
    note(room, sid, "itching at day 2", "itching")
    code, out = verify(room, capsys)
    assert code == 0 and "ok notes: 2 anchored" in out, out


def test_a_chair_whose_records_cannot_be_written_is_migrated(
    read_only_records: Path, pg_url: str
) -> None:
    """`records migrate --from sqlite:PATH` only reads the chair's file (migrate.py):
    it opened it for writing, so a chair's file on a read-only medium, or in a folder
    the user cannot write, could not be copied to the clinic's server."""
    done = run_read_only(read_only_records, "folder", "records", "migrate", "--from",
                         f"sqlite:{read_only_records}", "--to", pg_url, db_arg=False)
    assert done.returncode == 0, done.stderr
    assert "session 1 -> 1: copied" in done.stdout, done.stdout
