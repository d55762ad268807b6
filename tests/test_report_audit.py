"""What the clinic reads, checked against what happened: real simulated sessions
through the CLI, each figure of the report (and `sessions show`) recomputed here
from the recorded events and the saved coverage grid (read with numpy, not with the
code that made the figure).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from clinic_support import GATE

from devicectl.cli import main
from devicectl.store import Store

DATA = Path(__file__).parent / "data"
TWO = DATA / "short-two-zones.yaml"


def _run(db: Path, *extra: str, profile: Path = TWO, patient: str = "P-AUD1") -> int:
    return main(["run", "--profile", str(profile), "--patient", patient, "--sim", "--yes",
                 "--speed", "0", "--db", str(db), "--quiet", *GATE, *extra])


def _report_html(db: Path, sid: int, out: Path) -> str:
    assert main(["sessions", "report", str(sid), "--db", str(db), "--out", str(out)]) == 0
    return (out / f"session-{sid}-report.html").read_text(encoding="utf-8")


def _zone_cells(html: str, zone: str) -> list[str]:
    table = re.search(r'<table class="zones">(.*?)</table>', html, re.S)
    assert table is not None
    row = re.search(rf"<tr><td>{zone}</td>(.*?)</tr>", table.group(1))
    assert row is not None, zone
    return re.findall(r"<td>(.*?)</td>", row.group(1))


def _grid(db: Path, sid: int) -> dict[str, np.ndarray]:
    with Store(db) as store:
        archive = store.coverage_state(sid)
    assert archive
    with np.load(io.BytesIO(archive), allow_pickle=False) as saved:
        return {k: np.asarray(saved[k]) for k in saved.files}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed two-zone session of a pen with position (its grid saved)."""
    db = tmp_path_factory.mktemp("tracked") / "r.db"
    assert _run(db, "--seed", "5") == 0
    return db


def test_the_reports_punctures_per_cm2_is_the_dose_the_map_holds(
    tracked: Path, tmp_path: Path
) -> None:
    """docs/clinic.md "The report": "zones with dose (punctures and punctures per cm²
    ...)". report_content.zone_rows (devicectl/report_content.py:133-135) divided all
    the zone's punctures by the area *at target* (zone area × coverage fraction): with
    2 % of the zone at target it printed ~14,000 per cm², 5 passes, over the zone's
    2-pass maximum and 4× the most any spot of the zone received. The figure must be
    the zone's mean dose on the saved grid, and never above its most-dosed spot."""
    html = _report_html(tracked, 1, tmp_path / "out")
    grid = _grid(tracked, 1)
    hits = grid["hits"].astype(np.int64)
    labels = grid["labels"].astype(np.int64)
    per_hit = float(grid["punctures_per_hit"])  # needles over a footprint, per cm²
    for zid, name in ((3, "vertex"), (2, "mid_scalp")):
        mask = labels == zid
        mean = float(hits[mask].sum()) * per_hit / int(mask.sum())
        most = float(hits[mask].max()) * per_hit
        figure = _zone_cells(html, name)[-1]
        shown = [int(v) for v in re.findall(r"\d+", figure)]
        assert shown, figure
        assert shown[0] <= most, (name, figure, most)
        assert abs(shown[0] - mean) < 1, (name, figure, mean)


def _tampered(tracked: Path, tmp_path: Path) -> Path:
    """What someone with write access can do: the outcome changed behind the triggers."""
    db = tmp_path / "tampered.db"
    shutil.copy(tracked, db)
    conn = sqlite3.connect(db)
    (create,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'sessions_final'").fetchone()
    conn.execute("DROP TRIGGER sessions_final")
    conn.execute("UPDATE sessions SET outcome = 'aborted' WHERE id = 1")
    conn.execute(create)
    conn.commit()
    conn.close()
    return db


def test_a_report_of_records_that_fail_verify_says_so_before_anything_else(
    tracked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The brief (and docs/clinic.md "Records that prove themselves"): a report of a
    session whose records fail `sessions verify` must say so prominently. build_content
    (devicectl/report_content.py:296-297) put "The hash chain is BROKEN" in the last
    section only: the title, the header and every page's running line read
    "Treatment session 1 — aborted" as if the records were sound."""
    db = _tampered(tracked, tmp_path)
    assert main(["sessions", "verify", "1", "--db", str(db)]) == 1
    capsys.readouterr()
    html = _report_html(db, 1, tmp_path / "out")
    title = re.search(r"<title>(.*?)</title>", html)
    assert title is not None and "fail" in title.group(1).lower(), title
    first = html.index("<h2>")  # the first section (Zones)
    warning = re.search(r"<p class='bad'>([^<]*sessions verify[^<]*)</p>", html)
    assert warning is not None and warning.start() < first, warning
    from test_report_pdf import pdf_lines

    lines = pdf_lines(tmp_path / "out" / "session-1-report.pdf")
    pages = sum(1 for x in lines if x.startswith("session 1 · patient"))
    assert pages >= 2
    assert sum(1 for x in lines if "FAIL" in x and "session 1 · patient" in x) == pages


def test_one_emergency_stop_is_counted_once(tmp_path: Path) -> None:
    """docs/clinic.md "The report": "outcome with its ESTOP count". build_content
    (devicectl/report_content.py:179-181, 234) counted each stop twice, the host's
    ESTOP event (its decision and reason) and the SENT record of the same frame: one
    emergency stop printed "fault after 2 ESTOPs". The count is the ESTOP frames the
    host sent (recomputed here from the SENT records)."""
    db = tmp_path / "r.db"
    assert _run(db, "--seed", "9", "--scenario", "overshoot-no-limit",
                profile=DATA / "short-frontal.yaml") == 3
    with Store(db) as store:
        events = store.events(1)
    sent = [e for e in events if e.kind == "SENT" and e.data.get("type") == "ESTOP"]
    assert len(sent) == 1  # one stop: one frame on the wire
    html = _report_html(db, 1, tmp_path / "out")
    assert "<td>outcome</td><td>fault after 1 ESTOP</td>" in html
    assert "ESTOPs: 1 (each listed below)" in html


def _table_row(out: str, zone: str) -> dict[str, str]:
    """The zones table of `sessions show` (one line a row at 200 columns): heading -> cell."""
    lines = out.splitlines()
    head = next(x for x in lines if x.startswith("┃ zone"))
    row = next(x for x in lines if x.startswith(f"│ {zone}"))
    names = [c.strip() for c in head.strip("┃").split("┃")]
    cells = [c.strip() for c in row.strip("│").split("│")]
    return dict(zip(names, cells, strict=True))


def test_sessions_show_does_not_call_spots_at_their_maximum_over_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's summary ("over max": snapshot.over_max, cells past their maximum) and
    `sessions show` must agree on what "over max" means. show_session
    (devicectl/commands/sessions_cmd.py:271, 281) headed the records' cells_at_max
    "over-max cells": a patched session with spots at their maximum and none past it
    (the dose hold's limit, reached as designed) read as an overdose."""
    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    assert _run(db, "--seed", "11", profile=DATA / "aa-two-patches.yaml") == 0
    grid = _grid(db, 1)
    hits = grid["hits"].astype(np.int64)
    labels = grid["labels"].astype(np.int64)
    (zid,) = (int(z) for z in grid["zone_ids"])
    most = int(grid["max_hits"][0])
    treated = (labels == zid) | (labels == (zid | 0x40))  # the patches and their margins
    at_max = int(np.count_nonzero(hits[labels == zid] == most))
    over = int(np.count_nonzero(hits[treated] > most))
    assert at_max > 0 and over == 0
    capsys.readouterr()
    assert main(["sessions", "show", "1", "--db", str(db)]) == 0
    row = _table_row(capsys.readouterr().out, "occipital")
    for name, cell in row.items():
        if re.search(r"\bover\b", name):
            assert int(cell) == over, (name, cell)
    assert str(at_max) in [v for k, v in row.items() if "max" in k], row


@pytest.fixture(scope="module")
def resumed_in_place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session killed (SIGKILL) once its records hold 300 strokes, then resumed
    in place (`run --resume`) by another operator with another pen's cartridge, to
    completion."""
    db = tmp_path_factory.mktemp("resumed") / "r.db"
    argv = ["run", "--profile", str(TWO), "--patient", "P-AUD2", "--sim", "--yes",
            "--speed", "1", "--seed", "12", "--db", str(db), "--quiet", *GATE]
    proc = subprocess.Popen([sys.executable, "-m", "devicectl.cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        strokes = 0
        while strokes < 300 and proc.poll() is None:  # on the records, not the clock
            time.sleep(0.2)
            if db.exists():
                with Store(db, create=False) as store:
                    strokes = sum(z.strokes for r in store.sessions() for z in r.zones)
        assert proc.poll() is None, "the session ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    with Store(db) as store:
        before = store.session(1)
    assert before.outcome is None and sum(z.strokes for z in before.zones) >= 300
    later = tuple("OP-LATER" if a == "OP-TEST" else a for a in GATE)  # another operator
    assert main(["run", "--resume", "1", "--sim", "--yes", "--speed", "0", "--seed", "13",
                 "--db", str(db), "--quiet", *later]) == 0
    return db


def test_a_zones_time_after_a_resume_covers_its_strokes(resumed_in_place: Path) -> None:
    """The report's and `sessions show`'s per-zone "time" (docs/clinic.md "The report";
    report_content.zone_rows) beside its strokes. A session killed mid-zone and resumed
    (`run --resume`) keeps its strokes (the saved grid is restored) but the time
    restarted: Controller.zone_seconds (devicectl/controller.py:237-242) counts from
    this run's first START only, so the record said e.g. 1604 strokes in 7.4 s, which
    a pen at 120 Hz cannot stamp. Recomputed here: the zone's time × its rate is at
    least its strokes (the time runs from the first START, pauses included)."""
    with Store(resumed_in_place) as store:
        after = store.session(1)
    assert after.outcome == "complete"
    for z in after.zones:
        assert z.seconds * z.rate_dhz / 10 >= z.strokes, (z.name, z.seconds, z.strokes)


def test_every_cartridge_of_a_resumed_session_is_named(
    resumed_in_place: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/clinic.md "The report": the header names the cartridge. A session resumed
    in place with a new cartridge used two (each DEVICE record names the one in the
    pen); report_content.build_content (devicectl/report_content.py:253) and
    show_session (devicectl/commands/sessions_cmd.py:261) printed only the last, so
    the cartridge that gave the first part's punctures was named nowhere a reader
    looks first."""
    monkeypatch.setenv("COLUMNS", "200")
    with Store(resumed_in_place) as store:
        fitted = [int(e.data["cartridge_id"]) for e in store.events(1) if e.kind == "DEVICE"]
    assert len(set(fitted)) == 2  # the first pen's, and the resumed run's
    html = _report_html(resumed_in_place, 1, tmp_path / "out")
    header = re.search(r"<td>cartridge</td><td>([^<]*)</td>", html)
    assert header is not None
    assert all(str(c) in header.group(1) for c in fitted), header.group(1)
    capsys.readouterr()
    assert main(["sessions", "show", "1", "--db", str(resumed_in_place)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cartridge"))
    assert all(str(c) in line for c in fitted), line


def test_the_dose_columns_never_round_a_dose_given_to_zero() -> None:
    """The run's summary and the terminal's dose columns (dose.dose_cells,
    devicectl/dose.py:222-226: "dose", "at target", "at maximum"): a zone with a few
    spots brought to their maximum printed "0.0 % 0.0 cm²" at maximum, "0.0/1 passes"
    and "0/90 %", each read as nothing given. Here a real coverage of a 200 cm² zone,
    one spot stamped to its maximum; the status zone built as controller_status does."""
    from devicectl.coverage import Coverage
    from devicectl.dose import dose_cells, pass_punctures_per_cm2
    from devicectl.plan import ZonePlan
    from devicectl.zones import Zone, ZoneMap

    outline = ((0.0, 0.0), (200.0, 0.0), (200.0, 100.0), (0.0, 100.0))
    zone_map = ZoneMap((Zone(1, "vertex", "vertex", outline, 20000.0),))
    plan = ZonePlan(1, "vertex", 1200, 1000, 1, 2, 0.9, 20000.0, 0, 10.0,
                    pass_punctures_per_cm2=pass_punctures_per_cm2(12, 1000, 30))
    cov = Coverage(zone_map.raster(0.5), (plan,), 30, tracked=True, needle_count=12)
    cov.add_strokes(1, cov.limits[1].max_hits, cov.cell_at(100.0, 50.0))
    assert cov.cells_at_max(1) > 0 and cov.mean_passes(1) > 0 and cov.fraction(1) > 0
    status = {"mean_passes": cov.mean_passes(1), "target_passes": 1,
              "fraction": cov.fraction(1), "target_fraction": 0.9,
              "at_max_fraction": cov.fraction_at_max(1),
              "at_max_cm2": cov.cells_at_max(1) * cov.cell_cm2()}
    dose, at_target, at_max = dose_cells(status)
    assert not dose.startswith("0.0/"), dose
    assert not at_target.startswith("0/"), at_target
    assert "0.0 %" not in at_max and "0.0 cm²" not in at_max, at_max


def test_the_report_says_which_spots_went_over_their_maximum(tmp_path: Path) -> None:
    """The brief: the report's cells at target / at max / over max. The records' grid
    can hold spots past the zone's maximum (a pen that stamped on after a STOP; the
    export's cells_over_max counts them), but the report (report_content.zone_rows,
    devicectl/report_content.py:169) printed only "spots at maximum", the records'
    counter of spots at or past it, and "Faults and safety stops: none": an overdose
    was nowhere on it. A real coverage, one spot stamped past its maximum, recorded
    and reported; the spots over recomputed here from the saved grid."""
    from devicectl.coverage import Coverage
    from devicectl.dose import pass_punctures_per_cm2
    from devicectl.plan import ZonePlan
    from devicectl.report import write_report
    from devicectl.store import ZoneCoverage
    from devicectl.zones import Zone, ZoneMap

    outline = ((0.0, 0.0), (20.0, 0.0), (20.0, 10.0), (0.0, 10.0))
    zone_map = ZoneMap((Zone(1, "frontal", "frontal", outline, 200.0),))
    plan = ZonePlan(1, "frontal", 1200, 1000, 1, 2, 0.9, 200.0, 0, 10.0,
                    pass_punctures_per_cm2=pass_punctures_per_cm2(12, 1000, 30))
    cov = Coverage(zone_map.raster(0.5), (plan,), 30, tracked=True, needle_count=12)
    cov.add_strokes(1, cov.limits[1].max_hits + 1, cov.cell_at(10.0, 5.0))
    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-AUD3", profile_name="t", profile_hash="h",
                                   profile_text="", started_at="2026-05-01T10:00:00+00:00")
        store.set_device(sid, serial=1, fw_version=0x0101, cartridge_id=7,
                         position_mode="tracked")
        zones = [ZoneCoverage(1, "frontal", 1200, 1000, cov.fraction(1), 0.9,
                              cov.strokes(1), cov.cells_at_max(1), False, 1.0)]
        store.save_coverage(sid, zones, cov.to_bytes())
        store.close_session(sid, "aborted", "2026-05-01T10:05:00+00:00")
    grid = _grid(db, sid)
    over = int(np.count_nonzero(grid["hits"][grid["labels"] == 1] > int(grid["max_hits"][0])))
    assert over > 0
    files = write_report(db, sid, tmp_path / "out", zone_map)
    html = files.html.read_text(encoding="utf-8")
    said = [p for p in re.findall(r"<p class='bad'>([^<]*)</p>", html)
            if "frontal" in p and "over" in p and re.search(rf"\b{over}\b", p)]
    assert said, re.findall(r"<p[^>]*>([^<]*)</p>", html)


def test_guard_the_reports_strokes_and_punctures_are_the_grids_and_the_cartridges(
    tracked: Path, tmp_path: Path
) -> None:
    """Guard (true today): each zone's strokes on the report are the saved grid's
    count, and its punctures those strokes × the needles of the cartridge the pen
    reported (its DEVICE record)."""
    html = _report_html(tracked, 1, tmp_path / "out")
    grid = _grid(tracked, 1)
    strokes = dict(zip((int(i) for i in grid["stroke_zone_ids"]),
                       (int(n) for n in grid["strokes"]), strict=True))
    with Store(tracked) as store:
        (needles,) = [int(e.data["needle_count"]) for e in store.events(1)
                      if e.kind == "DEVICE"]
    for zid, name in ((3, "vertex"), (2, "mid_scalp")):
        cells = _zone_cells(html, name)
        assert int(cells[4]) == strokes[zid] > 0
        assert int(cells[7]) == strokes[zid] * needles


def test_guard_a_continuation_counts_its_predecessors_strokes_once(
    tmp_path: Path
) -> None:
    """Guard (true today): a session that lost its link and was continued (`run
    --resume`, a new session) records, per zone, its predecessor's strokes once: at
    least them (its grid restored, every spot at least the predecessor's dose), and
    the rest no more than its own zone time at the zone's rate could stamp (from its
    own ZONE_STARTED to ZONE_DONE records)."""
    db = tmp_path / "r.db"
    assert _run(db, "--seed", "5", "--scenario", "disconnect") == 4
    assert main(["run", "--resume", "1", "--sim", "--yes", "--speed", "0", "--seed", "5",
                 "--db", str(db), "--quiet", *GATE]) == 0
    with Store(db) as store:
        pred, cont = store.session(1), store.session(2)
        events = store.events(2)
    assert cont.outcome == "complete"
    before = {z.zone_id: z.strokes for z in pred.zones}
    assert sum(before.values()) > 0
    g1, g2 = _grid(db, 1), _grid(db, 2)
    assert np.all(g2["hits"].astype(np.int64) >= g1["hits"].astype(np.int64))
    started = {e.zone_id: e.t_us for e in events if e.kind == "ZONE_STARTED"}
    done = {e.zone_id: e.t_us for e in events if e.kind == "ZONE_DONE"}
    for z in cont.zones:
        own_s = (done[z.zone_id] - started[z.zone_id]) / 1e6
        assert z.strokes >= before[z.zone_id]
        assert z.strokes - before[z.zone_id] <= own_s * z.rate_dhz / 10 + 1, (z.name, own_s)
        assert z.strokes - before[z.zone_id] > 0


def test_a_report_of_a_running_session_does_not_call_it_interrupted(tmp_path: Path) -> None:
    """docs/clinic.md: a session without an outcome is running (its process holds its
    lock, devicectl/liveness.py) or interrupted; `sessions list` and `show` tell them
    apart. build_content (devicectl/report_content.py:254, 270) printed any session
    without an outcome as "interrupted: the session can be resumed", also one whose
    run holds its lock now (here the lock `devicectl run` holds, taken for it)."""
    from devicectl.liveness import RunningLock

    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-AUD4", profile_name="t", profile_hash="h",
                                   profile_text="", started_at="2026-05-01T10:00:00+00:00")
    with RunningLock(db, sid):
        html = _report_html(db, sid, tmp_path / "out")
    assert "interrupted" not in html and "can be resumed" not in html
    assert re.search(r"<title>Treatment session \d+ — running", html)


def test_patients_list_and_show_do_not_call_a_running_session_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the report above: `patients list` ("last outcome") and `patients show`
    (devicectl/commands/patients_cmd.py:125, 148) printed `rec.outcome or
    'interrupted'` for a session whose run holds its lock now."""
    from devicectl.liveness import RunningLock

    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-AUD5", profile_name="t", profile_hash="h",
                                   profile_text="", started_at="2026-05-01T10:00:00+00:00")
    with RunningLock(db, sid):
        assert main(["patients", "list", "--db", str(db)]) == 0
        assert main(["patients", "show", "P-AUD5", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "interrupted" not in out and "running" in out, out


def test_a_share_short_of_its_target_is_not_printed_as_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Units and rounding: a zone at 89.6 % of its 90 % target (not done) printed
    "90 % of 90 %" (report_content.zone_rows, devicectl/report_content.py:171),
    "90% / 90%" (sessions show, devicectl/commands/sessions_cmd.py:281) and
    "90 % / 90 %" (patients show, devicectl/commands/patients_cmd.py:163): reached,
    to a reader. And 0.04 % printed "0 %", as if nothing was treated."""
    from devicectl.store import ZoneCoverage

    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-AUD6", profile_name="t", profile_hash="h",
                                   profile_text="", started_at="2026-05-01T10:00:00+00:00")
        zones = [ZoneCoverage(1, "frontal", 1200, 1000, 0.896, 0.9, 5000, 0, False, 60.0),
                 ZoneCoverage(2, "vertex", 1200, 1000, 0.0004, 0.9, 30, 0, False, 1.0)]
        store.save_coverage(sid, zones, None)
        store.close_session(sid, "aborted", "2026-05-01T10:05:00+00:00")
    html = _report_html(db, sid, tmp_path / "out")
    assert main(["sessions", "show", str(sid), "--db", str(db)]) == 0
    assert main(["patients", "show", "P-AUD6", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    for name, reached in (("frontal", "90"), ("vertex", "0")):
        cell = _zone_cells(html, name)[2]
        assert not cell.startswith(f"{reached} %"), cell
        # sessions show's zone row, then patients show's (its interval table comes after)
        lines = [x for x in out.splitlines() if x.startswith(f"│ {name}")][:2]
        assert len(lines) == 2
        for line in lines:
            coverage = line.split("│")[4].strip()
            assert not re.match(rf"{reached} ?%", coverage), line


def test_an_interval_refusal_does_not_say_a_treatment_was_0_days_ago(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The interval since the last treatment, as the NO-GO and the OVERRIDE record (and
    so the report's override paragraph) say it: safety_gonogo._days_text
    (devicectl/safety_gonogo.py:82-83) printed a session minutes ago as "0.0 days
    ago", a figure rounded to 0 that is not 0."""
    db = tmp_path / "r.db"
    assert _run(db, "--seed", "21") == 0
    capsys.readouterr()
    assert _run(db, "--seed", "22") == 1
    out = capsys.readouterr().out
    refusals = [x for x in out.splitlines() if x.startswith("NO-GO") and " ago" in x]
    assert refusals, out
    for line in refusals:
        assert "0.0 days" not in line, line


def test_a_continuations_totals_say_they_include_its_predecessors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A continuation (a new session after a lost link, `run --resume`) records its
    predecessor's strokes in its own (the grid restored; guard above). Its report
    (report_content.build_content's header, devicectl/report_content.py:263-279) and
    `patients show` (devicectl/commands/patients_cmd.py:156-158) did not say so: the
    predecessor's report and row carry the same strokes, and a reader adding the
    patient's sessions counted them twice. Both must name the session continued and
    say its figures are included."""
    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    assert _run(db, "--seed", "5", "--scenario", "disconnect") == 4
    assert main(["run", "--resume", "1", "--sim", "--yes", "--speed", "0", "--seed", "5",
                 "--db", str(db), "--quiet", *GATE]) == 0
    html = _report_html(db, 2, tmp_path / "out")
    header = re.search(r'<table class="header">(.*?)</table>', html, re.S)
    assert header is not None
    assert re.search(r"session 1\b[^<]*includ", header.group(1)), header.group(1)
    capsys.readouterr()
    assert main(["patients", "show", "P-AUD1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    head = next(x for x in out.splitlines() if x.startswith("session 2 "))
    block = out[out.index(head):out.index("┏", out.index(head))]
    assert re.search(r"continues session 1\b[^┏]*includ", block), block


def test_sessions_show_of_records_that_fail_verify_says_so(
    tracked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the report: `sessions show` (devicectl/commands/sessions_cmd.py:233-272)
    printed a tampered session's header, zones and events as if sound."""
    db = _tampered(tracked, tmp_path)
    capsys.readouterr()
    assert main(["sessions", "show", "1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" in out.splitlines()[0] and "sessions verify" in out.splitlines()[0], out[:300]


def test_patients_show_says_when_a_zone_may_be_treated_to_the_minute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/clinic.md "Patients": patients show says per zone "from when it may be
    treated again". _interval_table (devicectl/commands/patients_cmd.py:211) printed
    the day only ("from 2027-01-04"), while the go/no-go refuses until the hour the
    interval ends: a session booked that morning was refused. Recomputed here: the
    moment printed is not before the session's end + the 28 days of a deep zone."""
    from datetime import UTC, datetime, timedelta

    from devicectl.store import ZoneCoverage

    monkeypatch.setenv("COLUMNS", "200")
    ended = (datetime.now(UTC) - timedelta(days=1)).replace(hour=20, minute=0, second=0,
                                                             microsecond=0)
    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-AUD7", profile_name="t", profile_hash="h",
                                   profile_text="",
                                   started_at=(ended - timedelta(hours=1)).isoformat())
        store.save_coverage(sid, [ZoneCoverage(3, "vertex", 1500, 1200, 0.9, 0.9, 900, 0,
                                               True, 60.0)], None)
        store.close_session(sid, "complete", ended.isoformat())
    capsys.readouterr()
    assert main(["patients", "show", "P-AUD7", "--db", str(db)]) == 0
    row, moment = _vertex_free_from(capsys.readouterr().out)
    assert moment >= ended + timedelta(days=28), row


def _vertex_free_from(out: str, *, to_the_minute: bool = False) -> tuple[str, datetime]:
    """patients show's vertex row, and the moment it says the zone may be treated from
    (its time of day required with `to_the_minute`, else midnight when not shown)."""
    row = next(x for x in out.splitlines() if x.startswith("│ vertex") and "days" in x)
    time_of_day = r"[ T](\d\d:\d\d)" if to_the_minute else r"(?:[ T](\d\d:\d\d))?"
    shown = re.search(r"from (\d{4}-\d\d-\d\d)" + time_of_day, row)
    assert shown is not None, row
    return row, datetime.fromisoformat(f"{shown.group(1)}T{shown.group(2) or '00:00'}+00:00")


def test_patients_show_lists_the_zones_a_session_spilled_onto(
    tracked: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/safety.md:88 (intervals): a zone that took spill from a session's footprint
    counts as treated then, at the spill's depth, and the go/no-go holds it to its
    interval (store.days_since_spill). patients show's interval table
    (devicectl/commands/patients_cmd.py:198-201) listed only the zones with strokes:
    a zone the 1.5 mm treatment spilled onto was missing, read as free to treat.
    Recomputed here from the saved grid: every zone of the map that took spill."""
    from devicectl.zones import load_zone_map

    monkeypatch.setenv("COLUMNS", "200")
    grid = _grid(tracked, 1)
    labels = grid["labels"].astype(np.int64)
    spilled = {int(v) & ~0xC0 for v in np.unique(labels[grid["spilled"].astype(bool)])}
    names = {z.id: z.name for z in load_zone_map().zones}
    spill_zones = {names[z] for z in spilled if z in names} - {"vertex", "mid_scalp"}
    assert spill_zones  # this session's footprint reached past its zones' borders
    capsys.readouterr()
    assert main(["patients", "show", "P-AUD1", "--db", str(tracked)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("interval status"):]
    for name in spill_zones:
        assert re.search(rf"│ {name}\s+│.*│ from ", table), (name, table)


def test_patients_show_times_an_interrupted_session_from_its_last_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The go/no-go times a session from its last record (store.days_since_deep_treatment:
    the latest of start, end and the last event's wall). _interval_table
    (devicectl/commands/patients_cmd.py:215) took an interrupted session's start (it has
    no end): it said a zone may be treated from a moment the go/no-go still refuses."""
    from datetime import UTC, datetime, timedelta

    from devicectl.store import EventRecord, ZoneCoverage

    monkeypatch.setenv("COLUMNS", "200")
    start = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    last = start + timedelta(hours=2)
    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-AUD8", profile_name="t", profile_hash="h",
                                   profile_text="", started_at=start.isoformat())
        store.save_coverage(sid, [ZoneCoverage(3, "vertex", 1500, 1200, 0.5, 0.9, 900, 0,
                                               False, 60.0)], None)
        store.append_events(sid, [EventRecord(7_200_000_000, last.isoformat(), "STATE",
                                              "STAMPING -> PAUSED", 3, {})])
    capsys.readouterr()
    assert main(["patients", "show", "P-AUD8", "--db", str(db)]) == 0
    row, moment = _vertex_free_from(capsys.readouterr().out, to_the_minute=True)
    assert moment >= last + timedelta(days=28), row


def test_every_operator_of_a_resumed_session_is_named(
    resumed_in_place: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header's operator (docs/clinic.md "The report": "a header (patient, operator,
    ..."). A session resumed in place by another operator (`run --resume --operator`,
    recorded as OPERATOR "resumed by operator ...") printed only the first
    (report_content.build_content, devicectl/report_content.py:278; sessions show,
    devicectl/commands/sessions_cmd.py:269): whoever treated the rest was named nowhere
    a reader looks first."""
    monkeypatch.setenv("COLUMNS", "200")
    html = _report_html(resumed_in_place, 1, tmp_path / "out")
    header = re.search(r"<td>operator</td><td>([^<]*)</td>", html)
    assert header is not None
    assert "OP-TEST" in header.group(1) and "OP-LATER" in header.group(1), header.group(1)
    capsys.readouterr()
    assert main(["sessions", "show", "1", "--db", str(resumed_in_place)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("operator"))
    assert "OP-TEST" in line and "OP-LATER" in line, line


def test_the_depth_curve_reaches_the_deepest_stroke_the_pen_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report's depth figure plots the SAMPLE records ("measured (peak per sample)",
    report_figures.depth_over_time). SessionRecords.sample
    (devicectl/session_records.py:84-105) records the peak once a second only: the
    over-depth that ended a session in an ESTOP fell after the last SAMPLE and was on
    no curve (a run of the same scenario: the curve 0.51 mm, the pen 0.61 mm). From
    the flight recorder's frames (`sessions frames`): the deepest TELEMETRY the pen
    sent is on the curve."""
    db = tmp_path / "r.db"
    assert _run(db, "--seed", "9", "--scenario", "overshoot-no-limit",
                profile=DATA / "short-frontal.yaml") == 3
    capsys.readouterr()
    assert main(["sessions", "frames", "1", "--db", str(db)]) == 0
    import json

    frames = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    deepest = max(f["depth_meas_um"] for f in frames
                  if f["dir"] == "rx" and f.get("type") == "TELEMETRY")
    with Store(db) as store:
        curve = [e.data.get("depth_meas_um") or 0 for e in store.events(1)
                 if e.kind == "SAMPLE"]
    assert deepest > 600 and max(curve) >= deepest, (max(curve), deepest)
