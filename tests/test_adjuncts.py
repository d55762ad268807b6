"""Adjuncts: each with its own timing (in the session, after the clinic's wait, or
oral), shown at the start, acknowledged at the end and recorded, on the report."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from clinic_support import ALL_NO

from devicectl.adjuncts import DEFAULT_TIMING, AdjunctUse, adjunct_instructions
from devicectl.cli import main
from devicectl.profile import load_profile

DEEP = Path(__file__).parent / "data" / "short-two-zones.yaml"  # adjuncts: [minoxidil]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("prp", "PRP: applied in the session"),
        ("triamcinolone", "triamcinolone: applied in the session"),
        ("minoxidil", "minoxidil: wait 6 h after the session"),
        ("bimatoprost", "bimatoprost: wait 6 h after the session"),
        ("latanoprost", "latanoprost: wait 6 h after the session"),
        ("finasteride", "finasteride: taken by mouth"),
    ],
)
def test_each_adjunct_has_its_usual_timing(name: str, says: str) -> None:
    lines = adjunct_instructions([name], 6)
    assert lines[1].startswith(says)
    if DEFAULT_TIMING[name] == "wait":
        assert "the clinic's setting" in lines[1] and "not a trial result" in lines[1]


def test_a_profiles_timing_wins_over_the_usual_one() -> None:
    lines = adjunct_instructions([AdjunctUse(name="minoxidil", timing="in_session")], 24)
    assert lines[1].startswith("minoxidil: applied in the session")


def test_an_unknown_timing_is_a_located_profile_error(tmp_path: Path) -> None:
    text = DEEP.read_text().replace("adjuncts: [minoxidil]",
                                    "adjuncts: [{name: prp, timing: later}]")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert main(["profile", "validate", str(path)]) == 1


def run(tmp_path: Path, *extra: str, seed: int = 301) -> int:
    return main(["run", "--profile", str(DEEP), "--patient", "P-AJ1", "--sim", "--yes",
                 "--speed", "0", "--db", str(tmp_path / "r.db"), "--seed", str(seed),
                 "--operator", "OP-5", "--checklist", str(ALL_NO), "--consent", *extra])


def notes(tmp_path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(tmp_path / "r.db")
    rows = [(str(r[0]), str(r[1])) for r in conn.execute("SELECT text, author FROM notes")]
    conn.close()
    return rows


def test_the_acknowledgment_is_recorded_with_the_instructions_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--ack-adjuncts", "--topical-wait-hours", "12") == 0
    ((text, author),) = notes(tmp_path)
    assert author == "OP-5"
    assert text.startswith("adjunct instructions given to the patient (--ack-adjuncts)")
    assert "minoxidil: wait 12 h after the session" in text
    out = tmp_path / "rep"
    assert main(["sessions", "report", "1", "--db", str(tmp_path / "r.db"), "--out",
                 str(out)]) == 0
    page = (out / "session-1-report.html").read_text(encoding="utf-8")
    assert "adjunct instructions given to the patient" in page
    section = page.split("Warnings and adjunct instructions", 1)[1].split("<h2>", 1)[0]
    assert "minoxidil: wait 12 h" in section  # as shown at the start, at the clinic's wait


def test_without_acknowledgment_it_is_recorded_as_not_acknowledged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path) == 0
    assert "were not acknowledged" in capsys.readouterr().out
    ((text, _),) = notes(tmp_path)
    assert text.startswith("adjunct instructions NOT acknowledged")


def test_a_refused_session_asks_nothing_about_adjuncts(tmp_path: Path) -> None:
    assert main(["run", "--profile", str(DEEP), "--patient", "P-AJ2", "--sim", "--yes",
                 "--speed", "0", "--db", str(tmp_path / "r.db"), "--operator", "OP-5",
                 "--ack-adjuncts"]) == 1  # no checklist, no consent: refused
    assert notes(tmp_path) == []


def test_the_shipped_profiles_carry_their_adjuncts_timing() -> None:
    root = Path(__file__).resolve().parents[1] / "profiles"
    loaded = load_profile(root / "te-diffuse.yaml")
    assert any(w.startswith("minoxidil: wait 24 h") for w in loaded.warnings)
