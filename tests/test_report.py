"""Session reports: generated from real recorded simulated sessions, content checked.

Completed, aborted, faulted and interrupted sessions; with and without SAMPLE
events; through the CLI. The HTML is read back (text and inlined figures), the
PNG and PDF files are checked by their signatures.
"""

from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from web_support import PATIENT, SimSession, sim_session

from devicectl.cli import main
from devicectl.controller import Command, State
from devicectl.records import EventRecord
from devicectl.report import ReportFiles, samples_of, write_report
from devicectl.report_figures import NO_SAMPLES
from devicectl.store import Store

PNG = b"\x89PNG\r\n\x1a\n"


def _recorded(tmp_path: Path, **kw: object) -> SimSession:
    sim = sim_session(tmp_path / "s.db", **kw)  # type: ignore[arg-type]
    sim.session.wait(30.0)
    sim.finish()
    return sim


@pytest.fixture(scope="module")
def complete(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimSession, ReportFiles, str]:
    tmp = tmp_path_factory.mktemp("complete")
    sim = _recorded(tmp)
    files = write_report(sim.db_path, sim.session_id, tmp / "out")
    return sim, files, files.html.read_text(encoding="utf-8")


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_report_of_a_completed_session_has_its_header_and_zone_results(
    complete: tuple[SimSession, ReportFiles, str],
) -> None:
    sim, _, html = complete
    text = _text(html)
    with Store(sim.db_path) as store:
        rec = store.session(sim.session_id)
    assert rec.outcome == "complete"
    assert f"Treatment session {rec.id} — complete" in text
    for value in (PATIENT, rec.profile_name, rec.profile_hash, str(rec.device_serial),
                  str(rec.cartridge_id), "1.50 mm"):
        assert value in text
    for z in rec.zones:
        row = re.search(rf"<tr><td>{z.name}</td>(.*?)</tr>", html)
        assert row is not None, z.name
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells[0] == f"{z.depth_um / 1000:.2f}"
        assert cells[2].startswith(f"{100 * z.fraction:.0f} % of")
        assert cells[3] == "yes"
        assert int(cells[4]) == z.strokes and z.strokes > 0
        assert int(cells[6]) == z.cells_at_max


def test_report_lists_events_and_counts_routine_ones(
    complete: tuple[SimSession, ReportFiles, str],
) -> None:
    _, _, html = complete
    text = _text(html)
    assert "ZONE_STARTED" in text and "ZONE_DONE" in text
    assert re.search(r"Routine events counted, not listed: .*SENT \d+", text)
    assert "Faults and safety stops none" in text


def test_report_figures_are_real_pngs_inlined_and_on_disk_and_a_pdf(
    complete: tuple[SimSession, ReportFiles, str],
) -> None:
    _, files, html = complete
    inlined = re.findall(r'id="fig-(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    assert [name for name, _ in inlined] == ["map", "depth", "rate"]
    for _, data in inlined:
        assert base64.b64decode(data).startswith(PNG)
    assert len(files.figures) == 3
    for fig in files.figures:
        assert fig.read_bytes().startswith(PNG) and fig.stat().st_size > 5_000
    pdf = files.pdf.read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") \
        + pdf.count(b"/Type/Page") >= 1
    assert "http" not in html.replace("data:image", "")  # self-contained


def test_a_recorded_session_has_samples_for_its_curves(
    complete: tuple[SimSession, ReportFiles, str],
) -> None:
    sim, _, html = complete
    with Store(sim.db_path) as store:
        events = store.events(sim.session_id)
        got = samples_of(store.session(sim.session_id), events)
    assert got and all(s.depth_cmd_um and s.rate_meas_dhz is not None for s in got)
    assert NO_SAMPLES not in _text(html)


def test_report_without_samples_says_so(tmp_path: Path) -> None:
    # A session recorded before SAMPLE events existed: its report says so, not blank axes.
    sim = _recorded(tmp_path)
    with Store(sim.db_path) as store:
        rec = store.session(sim.session_id)
        sid = store.create_session(patient_ref=PATIENT, profile_name="old",
                                   profile_hash=rec.profile_hash, profile_text=rec.profile_text,
                                   started_at=rec.started_at)
        store.close_session(sid, "complete", rec.started_at)
    files = write_report(sim.db_path, sid, tmp_path / "out")
    assert NO_SAMPLES in _text(files.html.read_text(encoding="utf-8"))


def test_report_of_an_interrupted_session_says_interrupted(tmp_path: Path) -> None:
    sim = sim_session(tmp_path / "s.db", speed=0.0)
    time.sleep(0.3)
    sim.finish(outcome=None)  # the records are left open, as after a crash
    files = write_report(sim.db_path, sim.session_id, tmp_path / "out")
    text = _text(files.html.read_text(encoding="utf-8"))
    assert "— interrupted" in text
    assert "the session can be resumed" in text


def test_report_of_a_fault_lists_the_fault(tmp_path: Path) -> None:
    sim = _recorded(tmp_path, scenario="overshoot")
    assert sim.session.outcome is not None and sim.session.outcome.value == "fault"
    files = write_report(sim.db_path, sim.session_id, tmp_path / "out")
    html = files.html.read_text(encoding="utf-8")
    faults = html.split("Faults and safety stops", 1)[1].split("<h2>", 1)[0]
    assert "OVERDEPTH" in faults
    assert "— fault" in _text(html)


def test_report_of_an_aborted_session(tmp_path: Path) -> None:
    sim = sim_session(tmp_path / "s.db", speed=5.0)
    deadline = time.monotonic() + 10
    while sim.session.state is not State.STAMPING and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.session.submit(Command.ABORT)
    sim.session.wait(10.0)
    sim.finish()
    files = write_report(sim.db_path, sim.session_id, tmp_path / "out")
    text = _text(files.html.read_text(encoding="utf-8"))
    assert "— aborted" in text
    assert "ABORTED" in text


def test_samples_become_the_depth_and_rate_figures(tmp_path: Path) -> None:
    sim = _recorded(tmp_path)
    with Store(sim.db_path) as store:
        rec = store.session(sim.session_id)
    wall = datetime.fromisoformat(rec.started_at)
    samples = [
        EventRecord(t_us=i * 1_000_000,
                    wall=(wall + timedelta(seconds=i)).isoformat(timespec="milliseconds"),
                    kind="SAMPLE", text="sample", zone_id=1,
                    data={"depth_cmd_um": 1000, "depth_meas_um": 1000 + i, "rate_meas_dhz": 990})
        for i in range(1, 4)
    ]
    # The records are append-only and the session is closed: a new one carries the samples.
    with Store(sim.db_path) as store:
        sid = store.create_session(patient_ref=PATIENT, profile_name="web-test",
                                   profile_hash=rec.profile_hash, profile_text=rec.profile_text,
                                   started_at=rec.started_at)
        store.append_events(sid, samples)
        events = store.events(sid)
        new = store.session(sid)
    got = samples_of(new, events)
    assert [(round(s.t_s), s.depth_meas_um, s.rate_meas_dhz) for s in got] == [
        (1, 1001, 990), (2, 1002, 990), (3, 1003, 990)]
    files = write_report(sim.db_path, sid, tmp_path / "out")
    html = files.html.read_text(encoding="utf-8")
    assert NO_SAMPLES not in _text(html)
    assert "SAMPLE" not in html.split("<h2>Events</h2>", 1)[1].split("Routine", 1)[0]


def test_sessions_report_cli_writes_the_files(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    sim = sim_session(tmp_path / "s.db", speed=0.0)
    time.sleep(0.2)
    sim.finish()
    out = tmp_path / "rep"
    code = main(["sessions", "report", str(sim.session_id), "--db", str(sim.db_path),
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"report: {out / f'session-{sim.session_id}-report.html'}" in printed
    assert (out / f"session-{sim.session_id}-report.pdf").exists()
    code = main(["sessions", "report", "99", "--db", str(sim.db_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("devicectl: ") and "Traceback" not in err
