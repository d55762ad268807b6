"""`devicectl patients list|show` and `devicectl sessions note`, on records made by
real simulated sessions through the CLI, on each backend (an SQLite file; a
database on the tests' PostgreSQL server, tests/pg_support.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinic_support import GATE
from pg_support import copy_records, raw_connect

from devicectl.cli import main
from devicectl.notes import ADVERSE_KINDS
from devicectl.store import Store

DEEP = Path(__file__).parent / "data" / "short-two-zones.yaml"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_patients(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    """Two real sessions (patients P-A1, P-B2), made once a module on each backend."""
    if request.param == "sqlite":
        db: Path | str = tmp_path_factory.mktemp("patients") / "r.db"
    else:
        db = request.getfixturevalue("pg_server").new_database()
    for seed, patient in ((201, "P-A1"), (202, "P-B2")):
        assert main(["run", "--profile", str(DEEP), "--patient", patient, "--sim", "--yes",
                     "--speed", "0", "--db", str(db), "--seed", str(seed), *GATE]) == 0
    return db


@pytest.fixture
def db(two_patients: Path | str, tmp_path: Path, request: pytest.FixtureRequest
       ) -> Path | str:
    """This test's copy of the two sessions."""
    return copy_records(two_patients, tmp_path, request)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_kinds_are_the_seeds_and_the_literatures() -> None:
    assert set(ADVERSE_KINDS) == {"prolonged_bleeding", "infection", "scarring", "shedding",
                                  "itching", "redness", "pain", "other"}


def test_an_adverse_event_after_the_session_is_recorded_shown_and_chained(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "sessions", "note", "1", "--db", str(db), "--adverse",
                       "Prolonged bleeding", "--text", "bled for 20 min; pressure", "--by",
                       "DR-3")
    assert code == 0 and "adverse event: prolonged bleeding recorded" in out
    code, out, _ = cli(capsys, "patients", "show", "p-a1", "--db", str(db))
    assert code == 0
    assert "1 adverse events" in out
    assert "adverse event: prolonged bleeding by DR-3: bled for 20 min; pressure" in out
    assert cli(capsys, "sessions", "verify", "--db", str(db))[0] == 0


def test_an_edited_note_is_caught(db: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "sessions", "note", "2", "--db", str(db), "--adverse", "pain",
               "--text", "severe pain for two days")[0] == 0
    conn = raw_connect(db)
    (row,) = conn.execute("SELECT id FROM notes WHERE adverse_kind = 'pain'").fetchone()
    off, on = (("DROP TRIGGER notes_no_update", None) if isinstance(db, Path) else
               ("ALTER TABLE notes DISABLE TRIGGER USER", "ALTER TABLE notes ENABLE TRIGGER USER"))
    conn.execute(off)
    conn.execute("UPDATE notes SET text = 'mild' WHERE id = ?", (row,))
    if on:
        conn.execute(on)
    conn.close()
    code, out, _ = cli(capsys, "sessions", "verify", "--db", str(db))
    assert code == 1 and f"session 2: note row {row} does not match the chain" in out


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (("note", "1", "--adverse", "sneezing", "--text", "x"), "unknown adverse event kind"),
        (("note", "9", "--text", "x"), "no session 9"),
        (("note", "1", "--text", "   "), "needs its text"),
    ],
)
def test_a_bad_note_is_one_sentence_and_writes_nothing(
    db: Path | str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], why: str
) -> None:
    def count() -> int:
        conn = raw_connect(db)
        n = int(conn.execute("SELECT count(*) FROM notes").fetchone()[0])
        conn.close()
        return n

    before = count()
    code, _, err = cli(capsys, "sessions", *argv, "--db", str(db))
    assert code == 1 and why in err and "Traceback" not in err
    assert count() == before


def test_patients_list_groups_a_patients_spellings(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(db) as store:  # an older record, written in another case
        store.create_session(patient_ref=" p-b2", profile_name="p", profile_hash="h",
                             profile_text="t", started_at="2026-01-01T00:00:00+00:00",
                             simulated=True)
    code, out, _ = cli(capsys, "patients", "list", "--db", str(db))
    assert code == 0
    rows = [line for line in out.splitlines() if "P-A1" in line or "P-B2" in line]
    assert len(rows) == 2
    assert any("P-B2" in r and " 2 " in r for r in rows)


def test_patients_show_gives_zones_depths_dose_and_when_each_zone_is_due(
    db: Path | str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line a row
    code, out, _ = cli(capsys, "patients", "show", "P-A1", "--db", str(db))
    assert code == 0
    assert "session 1" in out and "operator OP-TEST" in out and "complete" in out
    assert "vertex" in out and "mid_scalp" in out and "1.50" in out
    due = (datetime.now(UTC) + timedelta(days=28)).date()
    # vertex and mid_scalp, and any zone their footprints spilled onto
    due_rows = [line for line in out.splitlines() if re.search(r"(vertex|mid_scalp) +│", line)
                and (f"from {due.isoformat()}" in line
                     or f"from {(due - timedelta(days=1)).isoformat()}" in line)]
    assert len(due_rows) == 2, out  # the date may just have turned


@pytest.mark.parametrize(
    ("ref", "why"), [("P-Z9", "no sessions of patient P-Z9"), ("John Smith", "looks like a name")]
)
def test_patients_show_of_an_unknown_or_bad_reference_is_one_sentence(
    db: Path | str, capsys: pytest.CaptureFixture[str], ref: str, why: str
) -> None:
    code, _, err = cli(capsys, "patients", "show", ref, "--db", str(db))
    assert code == 1 and why in err
