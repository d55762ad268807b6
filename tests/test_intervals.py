"""The interval rule for every zone, of any depth, and the override that needs a
clinician: pure rules first, then through the real CLI with the simulator, on both backends
(an SQLite file; a real PostgreSQL server: tests/pg_support.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clinic_support import GATE
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.cli import main
from devicectl.profile import load_profile
from devicectl.safety import INTERVAL_DEPTH_UM, MIN_INTERVAL_DAYS, OVERRIDE_REASON_MIN_CHARS
from devicectl.safety_gonogo import ZoneInterval, interval_override_problem, interval_problems
from devicectl.store import Store

ROOT = Path(__file__).resolve().parents[1]
TE = ROOT / "profiles" / "te-diffuse.yaml"
#: the shipped TE profile's own interval (its zones are at 1.0 mm or less: the floor for
#: deeper zones does not apply, only the profile's interval holds them)
TE_DAYS = load_profile(TE).profile.min_interval_days
FAST = settings(max_examples=200, deadline=None)


@FAST
@given(
    depth_um=st.integers(min_value=0, max_value=1500),
    interval=st.integers(min_value=1, max_value=90),
    days=st.floats(min_value=-1.0, max_value=200.0, allow_nan=False),
)
def test_a_zone_treated_at_any_depth_is_bound_by_the_profiles_interval(
    depth_um: int, interval: int, days: float
) -> None:
    zone = ZoneInterval("vertex", depth_um, interval)
    late = bool(interval_problems([zone], {"vertex": days}, {}))
    floor = MIN_INTERVAL_DAYS if depth_um > INTERVAL_DEPTH_UM else 0
    assert late == (days < max(interval, floor))


@FAST
@given(
    depth_um=st.integers(min_value=0, max_value=1500),
    interval=st.integers(min_value=1, max_value=90),
    days=st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
)
def test_a_deep_treatment_holds_the_zone_28_days_whatever_is_planned_now(
    depth_um: int, interval: int, days: float
) -> None:
    zone = ZoneInterval("vertex", depth_um, interval)
    late = bool(interval_problems([zone], {"vertex": days}, {"vertex": days}))
    assert late == (days < max(interval, MIN_INTERVAL_DAYS))


def test_only_the_zones_treated_are_held() -> None:
    zones = [ZoneInterval("vertex", 500, 21), ZoneInterval("frontal", 500, 21)]
    (problem,) = interval_problems(zones, {"frontal": 3.0}, {})
    assert problem.startswith("zone frontal was treated 3.0 days ago")
    assert "21 days" in problem


@pytest.mark.parametrize(
    ("reason", "clinician", "why"),
    [
        (".", "DR-1", "at least 10 characters"),
        ("  short  ", "DR-1", "has 5"),
        ("a good long reason", None, "--clinician"),
        ("a good long reason", "   ", "--clinician"),
    ],
)
def test_an_override_needs_a_real_reason_and_a_clinician(
    reason: str, clinician: str | None, why: str
) -> None:
    assert why in (interval_override_problem(reason, clinician) or "")


def test_an_override_with_both_is_accepted() -> None:
    assert interval_override_problem("x" * OVERRIDE_REASON_MIN_CHARS, "DR-1") is None


# --- through the CLI, on the shipped TE profile ------------------------------------


def short_te(tmp_path: Path) -> Path:
    """The shipped TE profile (shallow, TE_DAYS apart), with a small target so it runs fast."""
    text = TE.read_text(encoding="utf-8")
    assert f"min_interval_days: {TE_DAYS}" in text and "depth_mm: 0.5" in text
    path = tmp_path / "te-short.yaml"
    path.write_text(re.sub(r"target_fraction: [0-9.]+", "target_fraction: 0.02", text))
    return path


def run_te(tmp_path: Path, seed: int, *extra: str, patient: str = "P-TE1",
           db: Path | str | None = None) -> int:
    return main(
        ["run", "--profile", str(short_te(tmp_path)), "--patient", patient, "--sim", "--yes",
         "--speed", "0", "--db", str(db or tmp_path / "r.db"), "--seed", str(seed), *GATE,
         *extra]
    )


def test_te_cannot_run_twice_within_its_interval(
    tmp_path: Path, records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_te(tmp_path, 101, db=records) == 0
    capsys.readouterr()
    assert run_te(tmp_path, 102, db=records) == 1
    out = capsys.readouterr().out
    assert "NO-GO" in out and f"minimum interval is {TE_DAYS} days" in out
    with Store(records) as store:
        assert store.sessions()[0].outcome == "refused"


def test_the_same_patient_in_another_spelling_is_held_too(
    tmp_path: Path, records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_te(tmp_path, 111, patient="p-te2", db=records) == 0
    capsys.readouterr()
    assert run_te(tmp_path, 112, patient="  P-TE2 ", db=records) == 1
    assert f"minimum interval is {TE_DAYS} days" in capsys.readouterr().out
    with Store(records) as store:
        assert {s.patient_ref for s in store.sessions()} == {"P-TE2"}


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (("--override-interval", "."), "at least 10 characters"),
        (("--override-interval", "the patient asked for it"), "--clinician ID"),
        (("--clinician", "DR-1"), "--override-interval REASON"),
    ],
    ids=["reason-too-short", "no-clinician", "clinician-alone"],
)
def test_an_override_without_reason_or_clinician_is_refused_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], why: str
) -> None:
    assert run_te(tmp_path, 121, *extra) == 1
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err
    assert not (tmp_path / "r.db").exists()  # refused before a record was made


def test_a_clinicians_override_starts_and_both_are_recorded(
    tmp_path: Path, records: Path | str
) -> None:
    assert run_te(tmp_path, 131, db=records) == 0
    reason = "flare review, decided at the follow-up visit"
    assert run_te(tmp_path, 132, "--override-interval", reason, "--clinician", "DR-42",
                  db=records) == 0
    with Store(records) as store:
        second = store.sessions()[0]
        assert second.outcome == "complete"
        (override,) = [e for e in store.events(second.id) if e.kind == "OVERRIDE"]
    assert override.data["reason"] == reason and override.data["clinician"] == "DR-42"
    assert len(override.data["problems"]) == 3  # frontal, mid-scalp and vertex
