"""A chair's records onto the clinic's server, and the commands that read the
clinic's records, through the real CLI: a real simulated session in a real
SQLite file, a real PostgreSQL server (tests/pg_support.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from clinic_support import GATE

from devicectl.cli import main
from devicectl.notes import add_note
from devicectl.records import open_database
from devicectl.store import CartridgeUsedError, EventRecord, Store

DATA = Path(__file__).parent / "data"
SHORT = DATA / "short-frontal.yaml"


@pytest.fixture(scope="module")
def chair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chair's records: one whole simulated session (in room 2, with a note), one
    left open (interrupted)."""
    db = tmp_path_factory.mktemp("chair") / "sessions.db"
    assert main(["run", "--profile", str(SHORT), "--patient", "P-001", "--sim", "--yes",
                 "--speed", "0", "--seed", "11", "--room", "2", "--db", str(db), *GATE]) == 0
    conn = open_database(db)
    add_note(conn, 1, wall="2026-03-02T10:00:00+00:00", text="mild erythema, resolved",
             adverse="redness", author="OP-TEST")
    conn.close()
    with Store(db) as store:
        open_id = store.create_session(
            patient_ref="P-002", profile_name="x", profile_hash="h", profile_text="t",
            started_at="2026-03-02T09:00:00+00:00", simulated=True)
        store.append_events(open_id, [EventRecord(1, "2026-03-02T09:00:01+00:00", "STATE",
                                                  "started", None, {})])
    return db


def test_run_records_its_room(chair: Path) -> None:
    with Store(chair, create=False) as store:
        assert store.session(1).room == "2"


def test_migrate_copies_closed_sessions_once_and_verify_passes_on_both_sides(
    chair: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["records", "migrate", "--from", f"sqlite:{chair}", "--to", pg_url]) == 0
    first = capsys.readouterr().out
    assert "session 1 -> 1: copied" in first and "session 2: open at the chair" in first
    assert main(["records", "migrate", "--from", f"sqlite:{chair}", "--to", pg_url]) == 0
    assert "0 copied, 1 already on" in capsys.readouterr().out
    with Store(chair, create=False) as src, Store(pg_url) as dst:
        [copy] = dst.sessions()
        orig = src.session(1)
        assert (copy.patient_ref, copy.outcome, copy.cartridge_id, copy.room, copy.zones) == (
            orig.patient_ref, orig.outcome, orig.cartridge_id, "2", orig.zones)
        assert dst.events(copy.id) == src.events(1)
        assert dst.coverage_state(copy.id) == src.coverage_state(1)
        notes = dst.conn.execute("SELECT adverse_kind, text FROM notes").fetchall()
        assert [tuple(n) for n in notes] == [("redness", "mild erythema, resolved")]
    for db in (str(chair), pg_url):
        assert main(["sessions", "verify", "--db", db]) == 0
    assert "the chains hold" in capsys.readouterr().out


def test_a_session_whose_chain_is_broken_at_the_chair_is_not_copied(
    chair: Path, tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(chair.read_bytes())
    conn = sqlite3.connect(bad)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET text = 'nothing happened' WHERE id = 3")
    conn.commit()
    conn.close()
    assert main(["records", "migrate", "--from", f"sqlite:{bad}", "--to", pg_url]) == 0
    assert "session 1: not copied: its chain at the chair is broken" in capsys.readouterr().out
    with Store(pg_url) as dst:
        assert dst.sessions() == []


def test_the_clinics_records_are_listed_through_the_environment(
    chair: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["records", "migrate", "--from", f"sqlite:{chair}", "--to", pg_url]) == 0
    capsys.readouterr()
    monkeypatch.setenv("DEVICECTL_DB", pg_url)
    assert main(["sessions", "list"]) == 0
    out = capsys.readouterr().out
    assert "P-001" in out and "complete" in out and "P-002" not in out
    assert main(["sessions", "show", "1"]) == 0
    assert "ZONE_DONE" in capsys.readouterr().out
    assert main(["sessions", "show", "1", "--kind", "all"]) == 0
    assert "STATE" in capsys.readouterr().out


def test_bad_migrate_arguments_are_one_sentence(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["records", "migrate", "--from", f"sqlite:{tmp_path}/none.db",
                 "--to", pg_url]) == 1
    assert "no records file at" in capsys.readouterr().err
    assert main(["records", "migrate", "--from", f"sqlite:{tmp_path}/none.db",
                 "--to", str(tmp_path / "x.db")]) == 1
    assert "is not a postgresql:// URL" in capsys.readouterr().err


def test_a_continuation_is_copied_naming_its_predecessors_copy_and_keeps_its_cartridge(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lost link resumed at the chair (two sessions, one cartridge, the second's
    CONTINUES naming the first's id there) onto a server whose ids are already
    taken: the continuation names the first one's copy, the chair's id beside it,
    and its cartridge is its predecessor's; another session still cannot take it."""
    chair = tmp_path / "chair.db"
    run = ["run", "--profile", str(DATA / "short-two-zones.yaml"), "--sim", "--yes",
           "--speed", "0", "--seed", "5", "--db", str(chair), *GATE]
    assert main([*run, "--patient", "P-003", "--scenario", "disconnect"]) == 4
    assert main([*run, "--resume", "1"]) == 0
    with Store(pg_url) as dst:  # the clinic's server already holds a room's session 1
        dst.create_session(patient_ref="P-900", profile_name="p", profile_hash="h",
                           profile_text="t", started_at="2026-03-01T09:00:00+00:00")
    capsys.readouterr()
    assert main(["records", "migrate", "--from", f"sqlite:{chair}", "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "session 1 -> 2: copied" in out and "session 2 -> 3: copied" in out, out
    with Store(chair, create=False) as src, Store(pg_url) as dst:
        lost, cont = dst.session(2), dst.session(3)
        assert lost.outcome == "link_lost" and cont.outcome == "complete"
        assert cont.continues == lost.id  # the link, copied
        assert cont.cartridge_id == lost.cartridge_id == src.session(2).cartridge_id
        assert cont.cartridge_id
        first, *rest = dst.events(3)
        assert first.kind == "CONTINUES"
        assert first.data == {"session_id": 2, "chair_session_id": 1}
        assert first.text.startswith("continues session 2 (session 1 at the chair) ")
        assert rest == src.events(2)[1:]
        other = dst.create_session(patient_ref="P-901", profile_name="p", profile_hash="h",
                                   profile_text="t", started_at="2026-03-01T10:00:00+00:00")
        with pytest.raises(CartridgeUsedError, match="session 2"):
            dst.set_device(other, serial=1, fw_version=1, cartridge_id=cont.cartridge_id,
                           position_mode="grid")
    assert main(["sessions", "verify", "--db", pg_url]) == 0
    assert main(["records", "migrate", "--from", f"sqlite:{chair}", "--to", pg_url]) == 0
    assert "0 copied, 2 already on" in capsys.readouterr().out
