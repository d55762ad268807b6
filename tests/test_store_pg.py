"""What a clinic's PostgreSQL adds, on a real server (tests/pg_support.py): the
rooms' role cannot rewrite the log, the chain catches what a superuser changes,
and the clinic's rules hold between two real processes at the same moment."""

from __future__ import annotations

import argparse
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devicectl import cli
from devicectl.chain import verify_all
from devicectl.dbconn import PgConn
from devicectl.errors import StoreError
from devicectl.notes import add_note, notes_of
from devicectl.records_where import resolve_db
from devicectl.store import EventRecord, Store
from devicectl.store_pg import WRITER_ROLE

START = "2026-03-01T09:00:00+00:00"


def new_session(store: Store, patient: str, room: str | None = None) -> int:
    return store.create_session(
        patient_ref=patient, profile_name="crown-standard", profile_hash="9f86d081",
        profile_text="name: crown-standard\n", started_at=START, room=room)


def event(i: int) -> EventRecord:
    return EventRecord(i * 1000, "2026-03-01T09:00:01+00:00", "command", f"event {i}", 1,
                       {"i": i})


def test_the_rooms_role_cannot_rewrite_or_empty_the_log(pg_url: str) -> None:
    with Store(pg_url) as store:
        sid = new_session(store, "P-1")
        store.append_events(sid, [event(1), event(2)])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {WRITER_ROLE}".encode())
        conn.execute(b"INSERT INTO events (session_id, t_us, wall, kind, text, data, safety)"
                     b" SELECT id, 3, 'w', 'k', 't', '{}', 0 FROM sessions")
        for sql in (b"UPDATE events SET text = 'nothing happened'", b"DELETE FROM events",
                    b"TRUNCATE events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        conn.execute(b"RESET ROLE")  # the owner: the triggers still refuse
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(b"TRUNCATE events")
        with pytest.raises(psycopg.errors.RaiseException, match="kept"):
            conn.execute(b"DELETE FROM sessions")
    with Store(pg_url) as store:
        assert [e.text for e in store.events(sid)][:2] == ["event 1", "event 2"]


def test_the_chain_holds_on_the_server_and_names_a_row_a_superuser_changed(pg_url: str) -> None:
    with Store(pg_url) as store:
        sid = new_session(store, "P-1")
        store.append_events(sid, [event(1), event(2), event(3)])
        store.close_session(sid, "complete", "2026-03-01T09:30:00+00:00")
        other = new_session(store, "P-2")
    conn = PgConn(psycopg.connect(pg_url, autocommit=True))
    checks = verify_all(conn)
    assert [(c.session_id, c.problem, c.closed) for c in checks] == [
        (sid, None, True), (other, None, False)]
    conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
    conn.execute("UPDATE events SET text = 'nothing happened' WHERE text = 'event 2'")
    problem = verify_all(conn)[0].problem
    assert problem is not None and "the 2nd of the session" in problem
    conn.close()


def test_db_env_selects_the_server_and_a_flag_overrides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "postgresql://clinic@db.example:5432/records"
    monkeypatch.setenv("DEVICECTL_DB", url)
    assert resolve_db(None) == url
    assert resolve_db(tmp_path / "a.db") == tmp_path / "a.db"
    monkeypatch.delenv("DEVICECTL_DB")
    assert isinstance(resolve_db(None), Path)


def test_an_unreachable_server_is_one_sentence_without_the_password() -> None:
    with pytest.raises(StoreError) as info:
        Store("postgresql://clinic:s3cret@127.0.0.1:1/records")
    text = str(info.value)
    assert text.startswith("cannot reach the records server postgresql://127.0.0.1:1/records")
    assert "s3cret" not in text and "\n" not in text


# -- two rooms at the same moment ---------------------------------------------------


def _room(url: str, room: str, patient: str, cartridge: int, gate: object,
          results: object) -> None:
    """One room's host: its session and its pen's cartridge, at the gate's moment."""
    with Store(url) as store:
        gate.wait()  # type: ignore[attr-defined]
        try:
            sid = new_session(store, patient, room=room)
            store.set_device(sid, serial=1, fw_version=1, cartridge_id=cartridge,
                             position_mode="grid")
        except StoreError as exc:
            results.put((room, f"NO-GO: {exc}"))  # type: ignore[attr-defined]
            return
        results.put((room, "GO"))  # type: ignore[attr-defined]


def _two_rooms(url: str, patients: tuple[str, str], cartridges: tuple[int, int]) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    gate, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_room, args=(url, f"room-{i + 1}", patients[i], cartridges[i],
                                             gate, results)) for i in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return [verdict for _room_name, verdict in got]


def test_two_rooms_one_cartridge_exactly_one_go(pg_url: str) -> None:
    Store(pg_url).close()  # the schema, before the rooms race for the rows
    verdicts = _two_rooms(pg_url, ("P-1", "P-2"), (4242, 4242))
    assert sorted(v == "GO" for v in verdicts) == [False, True]
    refused = next(v for v in verdicts if v != "GO")
    assert "cartridge 4242" in refused and "single use" in refused
    with Store(pg_url) as store:
        assert store.used_cartridge_ids() == frozenset({4242})


def test_two_rooms_one_patient_exactly_one_go(pg_url: str) -> None:
    Store(pg_url).close()
    verdicts = _two_rooms(pg_url, ("P-7", "p-7 "), (1, 2))
    assert sorted(v == "GO" for v in verdicts) == [False, True]
    refused = next(v for v in verdicts if v != "GO")
    assert "patient p-7 has session" in refused.lower() and "room-" in refused
    with Store(pg_url) as store:
        assert [s.room for s in store.sessions()] in (["room-1"], ["room-2"])


def _db_options(parser: argparse.ArgumentParser, path: str = "devicectl"
                ) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _db_options(sub, f"{path} {name}")
        elif "--db" in action.option_strings:
            yield path, action


def test_every_command_that_takes_db_takes_the_clinics_url() -> None:
    """The audit of issue 15: no --db says "SQLite only" (a URL taken as a file name
    or refused); each command's own run on the server is in its tests."""
    url = "postgresql://room1@db.clinic.example:5432/records"
    found = []
    for path, action in _db_options(cli.build_parser("*")):
        assert action.type is not None, path
        parsed = action.type(url)  # type: ignore[operator]
        assert parsed == url and resolve_db(parsed) == url, path
        found.append(path.removeprefix("devicectl "))
    assert {"run", "demo", "monitor", "sessions list", "sessions note", "patients list",
            "patients show", "sessions report", "sessions verify", "records replay"} <= set(found)


@pytest.mark.parametrize("records", ["sqlite", "postgresql"], indirect=True)
def test_notes_from_two_rooms_at_once_chain_one_after_the_other(records: Path | str) -> None:
    """Two rooms note one session at the same moment: each note is chained to the
    one before it, never both to the same predecessor (a fork the check would name)."""
    with Store(records) as store:
        sid = new_session(store, "P-N1")
        store.close_session(sid, "complete", "2026-03-01T09:30:00+00:00")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def room(name: str) -> None:
        try:
            with Store(records) as store:
                start.wait(10)
                for i in range(15):
                    add_note(store.conn, sid, wall=f"2026-03-01T10:00:{i:02d}+00:00",
                             text=f"{name} note {i}", adverse=None, author=name)
        except BaseException as exc:
            errors.append(exc)

    rooms = [threading.Thread(target=room, args=(n,)) for n in ("R1", "R2")]
    for t in rooms:
        t.start()
    for t in rooms:
        t.join(60)
    assert not errors
    with Store(records, create=False) as store:
        assert len(notes_of(store.conn, [sid])[sid]) == 30
        checks = verify_all(store.conn)
    assert [c.problem for c in checks] == [None]


@pytest.mark.parametrize("records", ["sqlite", "postgresql"], indirect=True)
def test_the_live_pages_event_list_reads_either_backend(records: Path | str) -> None:
    """`run --web` on the clinic's server lists the session's events as on a chair:
    the new rows, the routine ones counted apart, nothing read twice."""
    from devicectl.web.hub import EventFeed

    with Store(records) as store:
        sid = new_session(store, "P-W1")
        store.append_events(sid, [
            EventRecord(1, START, "SENT", "SET_TARGET", None, {"type": "SET_TARGET"}),
            EventRecord(2, START, "ESTOP", "over-depth: ESTOP sent", 1, {}, safety=True)])
    feed = EventFeed(records, sid)
    try:
        first = feed.poll()
        assert [item[3] for item in first] == ["over-depth: ESTOP sent"] and feed.hidden == 1
        assert feed.error is None and feed.poll() == []
        with Store(records) as store:
            store.append_events(sid, [EventRecord(3, START, "ZONE_DONE", "crown done", 1, {})])
        assert [item[3] for item in feed.poll()] == ["crown done"]
    finally:
        feed.close()
