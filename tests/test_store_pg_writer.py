"""The session's writer on the clinic's PostgreSQL, against a real server that
is killed mid-session: the failure is set at the next commit (at once on a
safety event), nothing more goes to the server, everything unsent goes to the
local unsaved file, and `records replay` writes it back once the server is up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pg_support import PgServer, serve_for_tests

from devicectl.chain import verify_session
from devicectl.cli import main
from devicectl.store import EventRecord, RecordWriter, Store
from devicectl.transitions import RECORDS_FAILED_REASON
from devicectl.unsaved import PG_PREFIX, replay, unsaved_path


@pytest.fixture(scope="module")
def own_server() -> Iterator[PgServer]:
    """A server of this module's own: these tests kill it."""
    yield from serve_for_tests()


def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def event(i: int, *, safety: bool = False) -> EventRecord:
    return EventRecord(i * 1000, f"2026-03-01T09:00:{i:02d}+00:00", "FAULT" if safety else "SENT",
                       f"event {i}", 1, {"i": i}, safety=safety)


def started_writer(server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   patient: str) -> tuple[str, int, RecordWriter]:
    """A new database on `server`, a session in it, and its writer started (committing
    every 50 ms); a server's unsaved file goes under tmp_path."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    url = server.new_database()
    with Store(url) as store:
        sid = store.create_session(patient_ref=patient, profile_name="p", profile_hash="h",
                                   profile_text="t", started_at="2026-03-01T09:00:00+00:00")
    writer = RecordWriter(url, sid, commit_interval_s=0.05)
    writer.start()
    return url, sid, writer


def test_a_server_killed_mid_session_spills_to_the_unsaved_file_and_replay_restores_it(
    own_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, sid, writer = started_writer(own_server, tmp_path, monkeypatch, "P-1")
    writer.device(serial=9, fw_version=0x0103, cartridge_id=77, position_mode="grid")
    writer.events([event(1), event(2)])
    with Store(url) as store:
        until(lambda: len(store.events(sid)) == 2, "the first events on the server")
    assert not writer.failed

    own_server.stop("immediate")
    writer.events([event(3), event(4, safety=True)])  # a safety event: committed at once
    until(lambda: writer.failed, "the writer to notice the server is gone")
    assert writer.failure is not None and writer.failure.startswith(RECORDS_FAILED_REASON)
    assert writer.failed_at_us is not None
    writer.events([event(5)])
    writer.close("fault", "2026-03-01T09:01:00+00:00")
    spilled = unsaved_path(url)
    assert writer.unsaved_path == spilled and spilled.name.startswith(PG_PREFIX)
    assert spilled.parent == tmp_path / "devicectl" and spilled.stat().st_mode & 0o077 == 0
    assert writer.unwritten == []

    own_server.start()
    assert main(["records", "replay", str(spilled)]) == 1  # a server's file: say which
    assert "--db postgresql://" in capsys.readouterr().err
    assert main(["records", "replay", str(spilled), "--db", url]) == 0
    assert "3 events added" in capsys.readouterr().out
    with Store(url) as store:
        assert [e.text for e in store.events(sid)] == [f"event {i}" for i in range(1, 6)]
        rec = store.session(sid)
        assert (rec.outcome, rec.cartridge_id) == ("fault", 77)
        check = verify_session(store.conn, sid)
        assert check.problem is None and check.closed and check.events == 5
    assert all("nothing to add" in line for line in replay(spilled, url))  # idempotent


def test_the_writer_reconnects_with_backoff_says_so_and_puts_the_gap_back_in_order(
    own_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, sid, writer = started_writer(own_server, tmp_path, monkeypatch, "P-2")
    writer.events([event(1)])
    with Store(url) as store:
        until(lambda: len(store.events(sid)) == 1, "the first event on the server")
    assert writer.status_line() is None

    own_server.stop("immediate")
    writer.events([event(2, safety=True)])
    until(lambda: writer.failed, "the writer to notice the server is gone")
    line = writer.status_line()
    assert line is not None and line.startswith(RECORDS_FAILED_REASON)
    assert "was lost at" in line or "reconnecting" in line
    until(lambda: "attempt 2 failed" in (writer.link or ""), "a second attempt, later")
    assert "next in 2 s" in (writer.link or "") or "next in 4 s" in (writer.link or "")
    writer.events([event(3)])
    until(lambda: writer.unsaved_count >= 2, "the gap in the unsaved file")

    own_server.start()
    until(lambda: "is back since" in (writer.link or ""), "the writer to reconnect", 60)
    line = writer.status_line()
    assert line is not None and "is back since" in line and line.startswith(RECORDS_FAILED_REASON)
    writer.events([event(4)])
    writer.close("aborted", "2026-03-01T09:01:00+00:00")
    assert writer.unsaved_count == 0 and writer.unwritten == []
    with Store(url) as store:
        assert [e.text for e in store.events(sid)] == [f"event {i}" for i in range(1, 5)]
        assert store.session(sid).outcome == "aborted"
        check = verify_session(store.conn, sid)
        assert check.problem is None and check.closed
    assert all("nothing to add" in line for line in replay(unsaved_path(url), url))


def test_every_connection_notices_a_dead_server(pg_url: str) -> None:
    with Store(pg_url) as store:
        raw = store.conn.raw  # type: ignore[attr-defined]
        assert raw.execute(b"SHOW statement_timeout").fetchone()[0] == "5s"
        params = raw.info.get_parameters()
        assert params["keepalives"] == "1" and int(params["tcp_user_timeout"]) == 5000


def test_a_server_that_comes_back_and_refuses_the_gap_is_not_tried_again(
    own_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lost, then back, but the session was closed meanwhile (another process): the
    replay of the gap is refused by the records' rule, not by the network, so the
    writer says so and stops reconnecting; the gap stays in the unsaved file."""
    url, sid, writer = started_writer(own_server, tmp_path, monkeypatch, "P-3")
    writer.events([event(1)])
    with Store(url) as store:
        until(lambda: len(store.events(sid)) == 1, "the first event on the server")
    own_server.stop("immediate")
    writer.events([event(2, safety=True)])
    until(lambda: writer.failed, "the writer to notice the server is gone")
    until(lambda: "attempt 1 failed" in (writer.link or ""), "a failed reconnection")
    own_server.start()
    with Store(url) as store:  # closed elsewhere before the writer is back
        store.close_session(sid, "aborted", "2026-03-01T09:01:00+00:00")
    until(lambda: "not tried again" in (writer.link or ""), "the writer to meet the refusal", 60)
    link = writer.link or ""
    assert "is back but refused this session's records" in link and "not tried again" in link
    assert "already closed" in link
    assert writer._retry_at is None  # no further attempt is scheduled
    writer.events([event(3)])
    writer.close(None, None)
    assert writer.link == link
    assert writer.unsaved_path.exists() and writer.unwritten == []
    with Store(url) as store:
        assert [e.text for e in store.events(sid)] == ["event 1"]
