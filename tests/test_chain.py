"""Records that prove themselves: the hash chain over a real session's record,
tampered with as someone with write access would (triggers dropped, a row
changed, the triggers put back), and the files' mode and kind. The record and its
tampering run on both backends (an SQLite file; a real PostgreSQL server, where the
tamperer turns the table's triggers off: tests/pg_support.py).
"""

from __future__ import annotations

import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest
from clinic_support import GATE
from hypothesis import given, settings
from hypothesis import strategies as st
from pg_support import copy_records, raw_connect

from devicectl.chain import verify_all
from devicectl.cli import main
from devicectl.dbconn import PgConn
from devicectl.records import APPLICATION_ID, MIGRATIONS, open_database
from devicectl.store import EventRecord, Store

DATA = Path(__file__).parent / "data"
SHORT = DATA / "short-frontal.yaml"


def sim_run(db: Path | str, *extra: str, seed: int = 5, patient: str = "P-H1") -> int:
    return main(["run", "--profile", str(SHORT), "--patient", patient, "--sim", "--yes",
                 "--speed", "0", "--db", str(db), "--seed", str(seed), *GATE, *extra])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fault_record(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    """A real record: a session that ended in an ESTOP (the host stopped an overshoot),
    on each backend (an SQLite file; a database on the test server, the template of
    each test's copy)."""
    if request.param == "sqlite":
        db: Path | str = tmp_path_factory.mktemp("chain") / "real.db"
    else:
        db = request.getfixturevalue("pg_server").new_database()
    assert sim_run(db, "--scenario", "overshoot-no-limit") == 3
    return db


@pytest.fixture
def copy(fault_record: Path | str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    return copy_records(fault_record, tmp_path, request)


def verify(db: Path | str, capsys: pytest.CaptureFixture[str], *ids: str) -> tuple[int, str]:
    code = main(["sessions", "verify", *ids, "--db", str(db)])
    return code, capsys.readouterr().out


def tamper(db: Path | str, trigger: str, sql: str, *args: object) -> None:
    """What someone with write access can do: drop the trigger (on the server: turn
    the table's triggers off), change, put it back."""
    conn = raw_connect(db)
    if isinstance(conn, PgConn):
        words = sql.split()
        table = words[1] if words[0] == "UPDATE" else words[2]
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        conn.execute(sql, args)
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        conn.close()
        return
    (create,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (trigger,)).fetchone()
    conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute(sql, args)
    conn.execute(create)
    conn.close()


def event_ids(db: Path | str) -> list[int]:
    conn = raw_connect(db)
    ids = [int(r[0]) for r in conn.execute("SELECT id FROM events ORDER BY id")]
    conn.close()
    return ids


def test_a_real_record_verifies(copy: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(copy, capsys)
    assert code == 0, out
    assert "ok session 1" in out and "closed" in out and "the chains hold" in out
    with Store(copy) as store:
        rec = store.session(1)
    assert rec.outcome == "fault" and rec.chain_head is not None
    assert rec.chain_head in out


def test_an_edited_event_is_named(copy: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    ids = event_ids(copy)
    target = ids[len(ids) // 2]
    tamper(copy, "events_no_update", "UPDATE events SET text = 'all fine' WHERE id = ?", target)
    code, out = verify(copy, capsys, "1")
    assert code == 1
    assert f"event row {target} " in out and "does not match the chain" in out


def test_an_edited_estop_is_named(copy: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    conn = raw_connect(copy)
    (estop,) = conn.execute("SELECT id FROM events WHERE kind = 'ESTOP' LIMIT 1").fetchone()
    conn.close()
    tamper(copy, "events_no_update", "UPDATE events SET kind = 'NOTE', safety = 0 WHERE id = ?",
           estop)
    code, out = verify(copy, capsys)
    assert code == 1 and f"event row {estop} " in out


def test_a_deleted_event_is_named_by_the_row_after_it(
    copy: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = event_ids(copy)
    gone = ids[len(ids) // 3]
    tamper(copy, "events_no_delete", "DELETE FROM events WHERE id = ?", gone)
    code, out = verify(copy, capsys)
    assert code == 1
    assert f"event row {ids[ids.index(gone) + 1]} " in out


def test_a_deleted_last_event_breaks_the_closure(
    copy: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(copy, "events_no_delete", "DELETE FROM events WHERE id = ?", event_ids(copy)[-1])
    code, out = verify(copy, capsys)
    assert code == 1 and "closure hash" in out


def test_a_changed_outcome_is_caught(copy: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(copy, "sessions_final", "UPDATE sessions SET outcome = 'complete' WHERE id = 1")
    code, out = verify(copy, capsys)
    assert code == 1
    assert "session 1: the session row (outcome 'complete'" in out and "closure hash" in out


def test_a_changed_dose_is_caught(copy: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(copy, "zone_coverage_update_final",
           "UPDATE zone_coverage SET depth_um = 1000 WHERE session_id = 1")
    code, out = verify(copy, capsys)
    assert code == 1 and "closure hash" in out


def test_a_removed_outcome_is_caught(copy: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(copy, "sessions_final", "UPDATE sessions SET outcome = NULL WHERE id = 1")
    code, out = verify(copy, capsys)
    assert code == 1 and "outcome was removed" in out


def test_a_deleted_session_is_missing(
    copy: Path | str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert sim_run(copy, seed=6, patient="P-H2") == 0  # session 2
    conn = raw_connect(copy)
    owned = ("events", "zone_coverage", "coverage_state")
    if isinstance(conn, PgConn):
        owned += ("cartridge_claims",)
        for table in (*owned, "sessions"):
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        creates = [f"ALTER TABLE {table} ENABLE TRIGGER USER" for table in (*owned, "sessions")]
    else:
        creates = [r[0] for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE name IN ('events_no_delete', "
            "'sessions_no_delete')")]
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute("DROP TRIGGER sessions_no_delete")
    for table in owned:
        conn.execute(f"DELETE FROM {table} WHERE session_id = 1")
    conn.execute("DELETE FROM sessions WHERE id = 1")
    for sql in creates:
        conn.execute(sql)
    conn.close()
    code, out = verify(copy, capsys)
    assert code == 1 and "session 1 is missing" in out and "ok session 2" in out


def test_an_unknown_session_is_one_sentence(
    copy: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sessions", "verify", "99", "--db", str(copy)]) == 1
    assert "no session 99" in capsys.readouterr().err


EVENT = st.builds(
    EventRecord,
    t_us=st.integers(min_value=0, max_value=2**62),
    wall=st.just("2026-01-01T00:00:00.000+00:00"),
    kind=st.sampled_from(["SENT", "ESTOP", "NOTE", "SAMPLE"]),
    text=st.text(max_size=40),
    zone_id=st.none() | st.integers(min_value=0, max_value=9),
    data=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    safety=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.lists(EVENT, min_size=1, max_size=5), min_size=1, max_size=5),
    data=st.data(),
)
def test_any_log_verifies_and_any_changed_row_is_the_one_named(
    batches: list[list[EventRecord]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "r.db"
        with Store(db) as store:
            sid = store.create_session(patient_ref="P-1", profile_name="p", profile_hash="h",
                                       profile_text="t", started_at="2026-01-01T00:00:00+00:00",
                                       operator="OP", simulated=True)
            for batch in batches:
                store.append_events(sid, batch)
        conn = open_database(db)
        assert [c.problem for c in verify_all(conn)] == [None]
        ids = [int(r[0]) for r in conn.execute("SELECT id FROM events ORDER BY id")]
        target = data.draw(st.sampled_from(ids))
        column = data.draw(st.sampled_from(["t_us", "wall", "kind", "text", "zone_id", "data",
                                            "safety"]))
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(f"UPDATE events SET {column} = 'x' || coalesce({column}, '') WHERE id = ?",
                     (target,))
        (check,) = verify_all(conn)
        conn.close()
        assert check.problem is not None and f"event row {target} " in check.problem


def records_before_the_chain(db: Path) -> sqlite3.Connection:
    """A records file at schema 1 (before the hash chain) holding one session, P-OLD1;
    the connection is left open (autocommit) for more rows."""
    conn = sqlite3.connect(db, isolation_level=None)
    for sql in MIGRATIONS[0]:
        conn.execute(sql)
    conn.execute("UPDATE schema_version SET version = 1")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                 " started_at) VALUES ('P-OLD1', 'p', 'h', 't', '2025-01-01T00:00:00+00:00')")
    return conn


def test_records_created_before_the_chain_are_reported_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "old.db"
    records_before_the_chain(db).close()
    assert sim_run(db, seed=8) == 0  # migrated; the new session is chained
    code, out = verify(db, capsys)
    assert code == 0
    assert "session 1: recorded before the records kept a hash chain" in out
    assert "ok session 2" in out


def test_records_are_created_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with Store(db) as store:
        store.create_session(patient_ref="P-1", profile_name="p", profile_hash="h",
                             profile_text="t", started_at="2026-01-01T00:00:00+00:00")
        for path in (db, Path(f"{db}-wal")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_simulator_run_refuses_clinical_records(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = records
    with Store(db) as store:
        store.create_session(patient_ref="P-1", profile_name="p", profile_hash="h",
                             profile_text="t", started_at="2026-01-01T00:00:00+00:00",
                             simulated=False)
    assert sim_run(db) == 1
    assert "holds clinical sessions; a simulator run needs its own --db" in capsys.readouterr().err
    with Store(db) as store:
        assert len(store.sessions()) == 1


def test_a_clinical_run_refuses_simulator_records(
    copy: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--profile", str(SHORT), "--patient", "P-1", "--port", "/dev/ttyNOPE9",
                 "--yes", "--db", str(copy), *GATE])
    assert code == 1  # refused before the port is opened
    assert "holds simulator runs; a clinical session needs its own --db" in (
        capsys.readouterr().err)
    with Store(copy) as store:
        assert len(store.sessions()) == 1


def test_a_clinical_run_does_not_start_new_records_unasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "typo.db"
    code = main(["run", "--profile", str(SHORT), "--patient", "P-1", "--port", "/dev/ttyNOPE9",
                 "--yes", "--db", str(db), *GATE])
    assert code == 1
    assert "--new-records" in capsys.readouterr().err
    assert not db.exists()
