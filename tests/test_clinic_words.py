"""What the clinic reads, the leftovers of round 12: each word on a screen a
clinician reads checked against the records (real CLI, real simulator, real files).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from clinic_support import GATE
from test_continuation import interrupted_that_treated

from devicectl.cli import main
from devicectl.store import Store

DATA = Path(__file__).parent / "data"
TWO = DATA / "short-two-zones.yaml"


def _run(db: Path, *extra: str, profile: Path = TWO, patient: str = "P-WORDS") -> int:
    return main(["run", "--profile", str(profile), "--patient", patient, "--sim", "--yes",
                 "--speed", "0", "--db", str(db), "--quiet", *GATE, *extra])


def _closed_sessions(db: Path, count: int) -> None:
    with Store(db) as store:
        for n in range(count):
            sid = store.create_session(patient_ref=f"P-W{n}", profile_name="t",
                                       profile_hash="h", profile_text="",
                                       started_at=f"2026-05-{n + 1:02d}T10:00:00+00:00")
            store.close_session(sid, "complete", f"2026-05-{n + 1:02d}T10:05:00+00:00")


def _tamper_outcome(db: Path, sid: int) -> None:
    """What someone with write access can do: an outcome changed behind the triggers."""
    conn = sqlite3.connect(db)
    (create,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'sessions_final'").fetchone()
    conn.execute("DROP TRIGGER sessions_final")
    conn.execute("UPDATE sessions SET outcome = 'aborted' WHERE id = ?", (sid,))
    conn.execute(create)
    conn.commit()
    conn.close()


def test_sessions_list_flags_a_session_whose_records_fail_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report and `sessions show` say RECORDS FAIL VERIFICATION first
    (devicectl/report_content.py:279-281, devicectl/commands/sessions_cmd.py:268-270);
    `sessions list` (devicectl/commands/sessions_cmd.py:171-194), where a clinician
    looks first, printed a tampered session's row ("aborted") as any other."""
    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    _closed_sessions(db, 2)
    _tamper_outcome(db, 1)
    assert main(["sessions", "verify", "1", "--db", str(db)]) == 1
    capsys.readouterr()
    assert main(["sessions", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    rows = {x.split("│")[1].strip(): x for x in out.splitlines()
            if x.startswith("│") and x.split("│")[1].strip().isdigit()}
    assert set(rows) == {"1", "2"}, out
    assert "FAIL" in rows["1"] and "verif" in rows["1"].lower(), out
    assert "FAIL" not in rows["2"], out


def test_sessions_list_checks_the_newest_sessions_and_says_it_checked_no_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sessions list` checks the newest LIST_VERIFIED sessions it shows against their
    hash chain (each of a 30-minute session's ~12,000 events is hashed again), and says
    so when it shows more: an older tampered session is not called sound by a list
    that never looked at it; `sessions verify` still finds it."""
    from devicectl.commands.sessions_cmd import LIST_VERIFIED

    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    _closed_sessions(db, LIST_VERIFIED + 2)
    _tamper_outcome(db, 1)
    _tamper_outcome(db, LIST_VERIFIED + 2)  # the newest
    capsys.readouterr()
    assert main(["sessions", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    rows = {x.split("│")[1].strip(): x for x in out.splitlines()
            if x.startswith("│") and x.split("│")[1].strip().isdigit()}
    assert len(rows) == LIST_VERIFIED + 2, out
    assert "FAIL" in rows[str(LIST_VERIFIED + 2)], out
    assert "FAIL" not in rows["1"], out  # not checked here ...
    assert f"the newest {LIST_VERIFIED} checked" in " ".join(out.split()), out  # ... and said
    assert main(["sessions", "verify", "1", "--db", str(db)]) == 1
    capsys.readouterr()
    assert main(["sessions", "list", "--limit", str(LIST_VERIFIED), "--db", str(db)]) == 0
    assert "checked against their hash chain" not in capsys.readouterr().out


def test_the_runs_progress_line_does_not_round_a_share_up_to_its_target() -> None:
    """The rest of the tool says a zone's share with mapstyle.share_text (89.6 of 90 is
    "89.6", devicectl/mapstyle.py:44-52); the run's plain progress line
    (progress_line, devicectl/monitor/progress.py:113-120) printed "90 % of 90 %" for
    a zone at 89.6 % of its 90 % target: reached, to a reader. And 0.04 % as "0 %"."""
    from devicectl.monitor.progress import progress_line, progress_record

    for fraction, wrong in ((0.896, "90 % of 90 %"), (0.8996, "90 % of 90 %"),
                            (0.0004, "0 % of 90 %")):
        status = {"state": "STAMPING", "zone_index": 0, "remaining_s_est": 30.0,
                  "zones": [{"name": "frontal", "zone_id": 1, "fraction": fraction,
                             "target_fraction": 0.9, "mean_passes": 1.0}]}
        record = progress_record(status, 12.0, areas_mm2={1: 1000.0}, footprint_mm=5.0)
        assert record is not None
        line = progress_line(record)
        assert wrong not in line, line
        assert " % of 90 %" in line, line


def test_the_live_pages_zone_list_says_the_share_as_the_rest_of_the_tool(
    tmp_path: Path
) -> None:
    """The live page's zone list (drawZones, devicectl/web/static/app.js:152-167)
    formatted the dose and the share itself with Math.round: a zone at 89.6 % of its
    90 % target read "at target 90/90 %", reached; the terminal, the report and the
    map say "89.6" (dose.dose_cells, mapstyle.share_text). In a real browser (skipped,
    saying why, as tests/test_browser.py, where Chromium or playwright is missing)."""
    from devicectl.dose import dose_cells
    from devicectl.store import ZoneCoverage
    from devicectl.web.hub import EventFeed, Hub
    from devicectl.web.records_source import RecordsSource
    from devicectl.web.server import serve
    from devicectl.zones import load_zone_map

    tb = pytest.importorskip("test_browser")  # skips, with its reason, without Chromium
    db = tmp_path / "s.db"
    zones = [ZoneCoverage(3, "vertex", 1500, 1000, 0.896, 0.9, 800, 0, False, 60.0),
             ZoneCoverage(2, "mid_scalp", 1500, 1000, 0.0004, 0.9, 3, 0, False, 1.0)]
    with Store(db) as store:
        sid = store.create_session(patient_ref="P-WEB", profile_name="p", profile_hash="h",
                                   profile_text="", started_at="2026-03-01T09:00:00+00:00")
        store.save_coverage(sid, zones, b"")
        store.close_session(sid, "aborted", "2026-03-01T09:10:00+00:00")
    header = {"session_id": sid, "patient_ref": "P-WEB", "profile": "p", "controls": False,
              "mode": "records"}
    web = serve(Hub(RecordsSource(db, sid), load_zone_map(), header,
                    events=EventFeed(db, sid)), "127.0.0.1", 0, token=None, submit=None)
    try:
        with tb.sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(tb.CHROMIUM), args=tb.ARGS,
                                         timeout=15_000)
            try:
                page = browser.new_page()
                page.set_default_timeout(tb.TIMEOUT_MS)
                page.goto(web.url)
                tb._until(page, "document.querySelectorAll('#zone-list li .pct').length === 2")
                for z in zones:
                    text = page.inner_text(f'#zone-list li[data-zone-id="{z.zone_id}"] .pct')
                    words = dose_cells({"fraction": z.fraction,
                                        "target_fraction": z.target_fraction})
                    assert f"at target {words[1]}" in text, (text, words)
                    assert "at target 90/90" not in text and "at target 0/90" not in text
            finally:
                browser.close()
    finally:
        web.stop()


def test_a_continued_sessions_report_and_show_name_its_continuation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session that lost its link and was continued (`run --resume`, a new session
    that restored its grid and carries its strokes on): its own report
    (report_content.build_content's header, devicectl/report_content.py:283-300) and
    `sessions show` (devicectl/commands/sessions_cmd.py:271-286) said "link_lost" and
    its totals with no word of the continuation, so they read as the whole
    treatment's. Both must name it: the treatment's totals are the continuation's."""
    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    assert _run(db, "--seed", "5", "--scenario", "disconnect") == 4
    assert main(["run", "--resume", "1", "--sim", "--yes", "--speed", "0", "--seed", "5",
                 "--db", str(db), "--quiet", *GATE]) == 0
    assert main(["sessions", "report", "1", "--db", str(db), "--out", str(tmp_path / "o")]) == 0
    html = (tmp_path / "o" / "session-1-report.html").read_text(encoding="utf-8")
    header = re.search(r'<table class="header">(.*?)</table>', html, re.S)
    assert header is not None
    words = re.sub(r"<[^>]+>", " ", header.group(1))
    assert re.search(r"continued by\s+session 2\b[^\n]*totals are session 2", words), words
    capsys.readouterr()
    assert main(["sessions", "show", "1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    head = out[:out.index("zones")]
    assert re.search(r"continued by\s+session 2\b[^\n]*totals are session 2", head), head
    capsys.readouterr()
    assert main(["sessions", "show", "2", "--db", str(db)]) == 0
    assert "continued by" not in capsys.readouterr().out


def test_the_runs_summary_does_not_print_a_zones_time_under_a_second_as_nothing() -> None:
    """The run's summary table (run_cmd._summary, devicectl/commands/run_cmd.py:474,
    through monitor/terminal.clock, devicectl/monitor/terminal.py:63-67) truncated a
    zone's time: 0.64 s of treatment printed "00:00", as if the zone was not treated."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from devicectl.commands.run_cmd import _summary
    from devicectl.snapshot import Outcome, Snapshot
    from devicectl.zones import default_zone_map

    zone_map = default_zone_map()
    zone = zone_map.zones[0]
    snap = Snapshot(status={"zones": [
        {"zone_id": zone.id, "name": zone.name, "fraction": 0.01, "target_fraction": 0.9,
         "mean_passes": 0.01, "target_passes": 2, "at_max_fraction": 0.0,
         "at_max_cm2": 0.0, "strokes": 6, "seconds": 0.64}]})
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    _summary(console, SimpleNamespace(snapshot=snap), SimpleNamespace(session_id=7),
             Outcome.ABORTED, Path("r.db"), zone_map)
    row = next(x for x in out.getvalue().splitlines() if zone.label[:10] in x)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    time_cell = cells[5]
    assert time_cell not in ("00:00", "0:00", ""), row
    assert time_cell in ("<1 s", "00:00.6"), row


def _resume_refused(db: Path, sid: int, refusal: str, *extra: str) -> None:
    """Resume `sid` in its own record, refused by the clinic's gate (no consent) or by
    the pen's go/no-go (a used cartridge)."""
    from clinic_support import ALL_NO

    sim = ("--sim", "--yes", "--speed", "0", "--db", str(db), *extra)
    if refusal == "gate":
        no_consent = ("--operator", "OP-TEST", "--checklist", str(ALL_NO), "--ack-adjuncts")
        assert main(["run", "--resume", str(sid), "--seed", "5", *sim, *no_consent]) == 1
    else:
        assert main(["run", "--resume", str(sid), "--seed", "11", *sim, *GATE]) == 1


@pytest.mark.parametrize("refusal", ["gate", "pen"])
@pytest.mark.parametrize("continuation", [False, True], ids=["session", "continuation"])
def test_the_json_end_of_a_refused_resume_in_place_says_what_the_records_say(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], continuation: bool, refusal: str
) -> None:
    """An interrupted session that treated, resumed in its own record (`run --resume`)
    and refused (the clinic's gate, the pen's go/no-go) stays interrupted, resumable
    (devicectl/commands/run_cmd.py:245-247, penloop.py:209-212); `run --json`'s end
    line (devicectl/commands/run_cmd.py:264, 359) said "outcome": "refused", which the
    records do not say: a program reading it took the treatment as closed."""
    import json

    from devicectl.commands.sessions_cmd import outcome_text

    db = tmp_path / "r.db"
    sid = interrupted_that_treated(db, continuation)
    capsys.readouterr()
    _resume_refused(db, sid, refusal, "--json")
    out = capsys.readouterr().out
    ends = [json.loads(x) for x in out.splitlines()
            if x.startswith("{") and '"type": "end"' in x]
    assert len(ends) == 1, out[-2000:]
    with Store(db) as store:
        recorded = store.session(sid).outcome
    assert recorded is None  # interrupted, as before (tests/test_continuation.py)
    assert ends[0]["outcome"] == outcome_text(recorded) == "interrupted", ends[0]
    assert ends[0]["exit_code"] == 1


@pytest.mark.parametrize("refusal", ["gate", "pen"])
def test_the_plain_end_of_a_refused_resume_in_place_says_it_stays_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], refusal: str
) -> None:
    """As the JSON end above, the words a clinician reads: the last line (run_cmd.py:261,
    and _summary's, run_cmd.py:478-482) said "refused · session id N" and nothing of the
    session staying interrupted, to be resumed again (what the records say)."""
    db = tmp_path / "r.db"
    sid = interrupted_that_treated(db, continuation=False)
    capsys.readouterr()
    _resume_refused(db, sid, refusal, "--quiet")
    out = capsys.readouterr().out
    last = [x for x in out.splitlines() if f"session id {sid}" in x]
    assert last, out[-2000:]
    assert "stays interrupted" in last[-1], last[-1]


def test_guard_a_continuation_that_was_refused_is_not_named_as_the_treatments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guard (true today): a continuation that ended `refused` sent no START and holds
    nothing of the treatment (devicectl/continuation.py's docstring); the session it
    tried to continue is not "continued by" it (continuation.continued_by), and is
    named continued by the continuation that did treat."""
    monkeypatch.setenv("COLUMNS", "200")
    db = tmp_path / "r.db"
    with Store(db) as store:
        def session(continues: int | None = None) -> int:
            return store.create_session(patient_ref="P-G1", profile_name="t",
                                        profile_hash="h", profile_text="",
                                        started_at="2026-03-02T09:00:00+00:00",
                                        continues=continues)
        first = session()
        store.close_session(first, "link_lost", "2026-03-02T09:10:00+00:00")
        refused = session(continues=first)
        store.close_session(refused, "refused", "2026-03-02T09:11:00+00:00")
    capsys.readouterr()
    assert main(["sessions", "show", str(first), "--db", str(db)]) == 0
    assert "continued by" not in capsys.readouterr().out
    with Store(db) as store:
        treated = session(continues=first)
    assert main(["sessions", "show", str(first), "--db", str(db)]) == 0
    assert f"continued by  session {treated}:" in capsys.readouterr().out
