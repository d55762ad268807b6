"""Dose in the records: `sessions export --format json` gives each zone's dose
measures computed from the saved grid, and the spill per zone for the intervals; on
both backends (an SQLite file; a real PostgreSQL server: tests/pg_support.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devicectl.cli import main
from devicectl.coverage import Coverage
from devicectl.dose import pass_punctures_per_cm2
from devicectl.plan import ZonePlan
from devicectl.store import Store, ZoneCoverage, zone_spill_of
from devicectl.zones import Zone, ZoneMap


def _square(zone_id: int, name: str, x0: float, y0: float, w: float, h: float) -> Zone:
    outline = ((x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h))
    return Zone(zone_id, name, name, outline, w * h)


MAP = ZoneMap((_square(1, "frontal", 0, 0, 20, 10), _square(2, "vertex", 0, 10, 20, 10)))
ZONES = tuple(
    ZonePlan(i, n, 1200, 1000, 1, 2, 0.9, 200.0, 0, 10.0,
             pass_punctures_per_cm2=pass_punctures_per_cm2(12, 1000, 30))
    for i, n in ((1, "frontal"), (2, "vertex"))
)


def _saved_session(db: Path | str, cov: Coverage) -> Path | str:
    with Store(db) as store:
        sid = store.create_session(patient_ref="p1", profile_name="t", profile_hash="h",
                                   profile_text="", started_at="2024-05-01T10:00:00+00:00")
        zones = [ZoneCoverage(z.zone_id, z.name, z.depth_um, z.rate_dhz, cov.fraction(z.zone_id),
                              0.9, cov.strokes(z.zone_id), cov.cells_at_max(z.zone_id), False, 1.0)
                 for z in ZONES]
        store.save_coverage(sid, zones, cov.to_bytes())
    return db


def _export(db: Path | str, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    assert main(["sessions", "export", "1", "--format", "json", "--db", str(db)]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {z["name"]: z for z in doc["zones"]}


def test_export_gives_each_zones_dose_computed_from_the_saved_grid(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    cov = Coverage(MAP.raster(0.5), ZONES, 30, tracked=True, needle_count=12)
    lim = cov.limits[1]
    cov.add_strokes(1, lim.target_hits, cov.cell_at(10.0, 5.0))
    # a spot past its maximum (the grid is the record: the export must show it)
    cov.add_strokes(1, lim.max_hits + 1, cov.cell_at(4.0, 5.0))
    cov.add_strokes(1, 1, cov.cell_at(10.0, 9.5))  # the footprint reaches into vertex
    zones = _export(_saved_session(records, cov), capsys)
    frontal, vertex = zones["frontal"], zones["vertex"]
    assert frontal["cells_over_max"] == 29  # the whole footprint of the over-dosed stroke
    # the fraction counts the cells an allowed stroke reaches (module reach)
    assert frontal["cells_at_target"] == round(cov.fraction(1) * cov.treatable_cells(1))
    assert frontal["punctures_per_cm2_max"] == pytest.approx(
        (lim.max_hits + 1) * cov.punctures_per_hit, abs=0.1)
    assert frontal["mean_passes"] == pytest.approx(cov.mean_passes(1), abs=1e-3)
    hist = frontal["histogram"]
    assert isinstance(hist, list) and sum(hist) == cov.zone_cells(1)
    assert vertex["spill_cm2"] == pytest.approx(cov.spill_cm2(2)) and cov.spill_cm2(2) > 0
    assert vertex["cells_over_max"] == 0 and frontal["spill_cm2"] == 0.0


def test_spill_per_zone_is_read_back_with_its_depth_for_the_intervals(
    records: Path | str
) -> None:
    cov = Coverage(MAP.raster(0.5), ZONES, 30, tracked=True, needle_count=12)
    cov.add_strokes(1, 1, cov.cell_at(10.0, 9.5))
    db = _saved_session(records, cov)
    with Store(db) as store:
        spill = zone_spill_of(store, 1)
    assert set(spill) == {2} and spill[2][1] == 1200 and spill[2][0] > 0


def test_export_of_a_session_without_a_grid_has_no_dose_measures(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = records
    with Store(db) as store:
        store.create_session(patient_ref="p1", profile_name="t", profile_hash="h",
                             profile_text="", started_at="2024-05-01T10:00:00+00:00")
    assert main(["sessions", "export", "1", "--format", "json", "--db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["zones"] == []


def test_a_zone_that_took_spill_is_held_to_its_interval_in_the_next_session(
    records: Path | str,
) -> None:
    """Spill counts as treatment of the zone it fell on (issues 11 and 13): the next
    session's go/no-go facts show it treated that day, at the spill's depth."""
    from types import SimpleNamespace

    from devicectl.commands.run_setup import start_facts

    cov = Coverage(MAP.raster(0.5), ZONES, 30, tracked=True, needle_count=12)
    cov.add_strokes(1, 1, cov.cell_at(10.0, 9.5))  # frontal's footprint over vertex
    db = _saved_session(records, cov)
    names = {1: "frontal", 2: "vertex"}
    with Store(db) as store:
        # vertex took no stroke of its own: only its spill shows it treated
        assert set(store.days_since_deep_treatment("p1", "2024-05-02T10:00:00+00:00", 0)) == {
            "frontal"}
        spilled = store.days_since_spill("P1 ", "2024-05-02T10:00:00+00:00", 0, names)
        assert set(spilled) == {"vertex"} and 0.9 < spilled["vertex"] < 1.1
        # deeper than the spill (1.2 mm): not a deep treatment of vertex
        assert store.days_since_spill("p1", "2024-05-02T10:00:00+00:00", 1200, names) == {}
        facts = start_facts(
            store, SimpleNamespace(patient="p1"), None,  # type: ignore[arg-type]
            SimpleNamespace(override_interval=None, clinician=None),  # type: ignore[arg-type]
            names,
        )
    assert "vertex" in facts.days_since_treatment
    assert "vertex" in facts.days_since_deep_treatment  # 1.2 mm > the 1.0 mm threshold
