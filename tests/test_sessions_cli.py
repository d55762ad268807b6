"""`devicectl sessions list|show|export` through the real CLI entry point, on
real records files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from devicectl import cli
from devicectl.liveness import running_lock
from devicectl.safety import DEPTH_CAP_UM
from devicectl.store import EventRecord, Store, ZoneCoverage
from devicectl.store_pg import redact

START = "2026-03-01T09:00:00+00:00"
TRICKY_TEXT = 'override: "interval 20 d", reason: scar review,\nsigned off'


@pytest.fixture(autouse=True)
def only_sessions_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The other subcommands are not this file's business (and may be mid-build).
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("devicectl.commands.sessions_cmd",))
    monkeypatch.setenv("COLUMNS", "200")  # rich would fold long cells at 80


@pytest.fixture
def db(records: Path | str) -> Path | str:
    """Two sessions, on each backend (tests/pg_support.py)."""
    path = records
    with Store(path) as store:
        sid = store.create_session(
            patient_ref="P-7f3a9c",
            profile_name="crown-standard",
            profile_hash="9f86d081884c7d659a2feaa0",
            profile_text="name: crown-standard\n",
            started_at=START,
        )
        store.set_device(
            sid, serial=40961, fw_version=0x0103, cartridge_id=5150, position_mode="grid"
        )
        store.append_events(
            sid,
            [
                EventRecord(0, "2026-03-01T09:00:01+00:00", "zone", "crown started", 1, {}),
                EventRecord(
                    1, "2026-03-01T09:01:05.250+00:00", "override", TRICKY_TEXT, None, {"days": 20}
                ),
                EventRecord(
                    2,
                    "2026-03-01T09:02:00+00:00",
                    "fault",
                    "measured depth over the limit; pen stopped",
                    1,
                    {"depth_um": DEPTH_CAP_UM + 60},
                    safety=True,
                ),
            ],
        )
        store.save_coverage(
            sid,
            [
                ZoneCoverage(1, "crown", 1200, 1000, 0.62, 0.9, 812, 3, False, 95.0),
                ZoneCoverage(2, "vertex", 1000, 800, 0.93, 0.9, 640, 0, True, 120.0),
            ],
            b"state",
        )
        store.close_session(sid, "fault", "2026-03-01T09:02:01+00:00")
        store.create_session(
            patient_ref="P-0002",
            profile_name="temples-light",
            profile_hash="aa",
            profile_text="",
            started_at="2026-03-02T10:00:00+00:00",
        )
    return path


def test_list_without_a_database_says_no_records_yet_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing.db"
    assert cli.main(["sessions", "list", "--db", str(path)]) == 0
    assert f"no records yet at {path}" in capsys.readouterr().out
    assert not path.exists()


def test_list_shows_each_session_newest_first_with_outcome_and_zones_done(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sessions", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.index("P-0002") < out.index("P-7f3a9c")
    row_old = next(line for line in out.splitlines() if "P-7f3a9c" in line)
    assert "crown-standard" in row_old and "fault" in row_old and "1/2" in row_old
    row_new = next(line for line in out.splitlines() if "P-0002" in line)
    assert "interrupted" in row_new and "0/0" in row_new


def test_list_uses_the_default_database_in_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with Store(tmp_path / "devicectl" / "sessions.db") as store:
        store.create_session(
            patient_ref="P-xdg",
            profile_name="p",
            profile_hash="h",
            profile_text="",
            started_at=START,
        )
    assert cli.main(["sessions", "list"]) == 0
    assert "P-xdg" in capsys.readouterr().out


def test_show_prints_header_zone_results_and_timeline(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sessions", "show", "1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    for expected in ("P-7f3a9c", "crown-standard (9f86d081884c)", "40961", "firmware 1.3", "5150"):
        assert expected in out
    crown = next(line for line in out.splitlines() if "crown " in line and "1.20" in line)
    assert "100.0" in crown and "62% / 90%" in crown and "812" in crown and "01:35.000" in crown
    assert "00:01.000" in out and "01:05.250" in out and "02:00.000" in out
    assert "fault !" in out  # the safety event stands out


def test_show_of_a_missing_session_is_one_sentence_and_exit_1(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sessions", "show", "42", "--db", str(db)]) == 1
    err = capsys.readouterr().err
    shown = redact(db) if isinstance(db, str) else db  # a server's URL without its login
    assert err == f"devicectl: no session 42 in {shown}; `devicectl sessions list` shows them\n"


def test_export_of_a_missing_database_is_one_sentence_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nothing.db"
    assert cli.main(["sessions", "export", "3", "--db", str(path)]) == 1
    assert "no session 3" in capsys.readouterr().err
    assert not path.exists()


def test_list_of_a_file_that_is_not_a_database_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 4096)
    assert cli.main(["sessions", "list", "--db", str(path)]) == 1
    err = capsys.readouterr().err
    assert "is not a devicectl records database" in err and "Traceback" not in err


def test_export_json_is_one_document_with_session_zones_and_events(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sessions", "export", "1", "--db", str(db), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"session", "zones", "events"}
    assert doc["session"]["patient_ref"] == "P-7f3a9c"
    assert doc["session"]["outcome"] == "fault"
    assert doc["session"]["profile_text"] == "name: crown-standard\n"
    assert [z["name"] for z in doc["zones"]] == ["crown", "vertex"]
    assert [e["kind"] for e in doc["events"]] == ["zone", "override", "fault"]
    assert doc["events"][1]["text"] == TRICKY_TEXT
    assert doc["events"][2] == {
        "t_us": 2,
        "wall": "2026-03-01T09:02:00+00:00",
        "kind": "fault",
        "text": "measured depth over the limit; pen stopped",
        "zone_id": 1,
        "data": {"depth_um": DEPTH_CAP_UM + 60},
        "safety": True,
    }


def test_export_csv_is_one_header_row_then_one_row_per_event(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sessions", "export", "1", "--db", str(db), "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["t_us", "since_start_s", "wall", "kind", "zone_id", "safety", "text", "data"]
    assert len(rows) == 4
    assert rows[2][1] == "65.250" and rows[2][6] == TRICKY_TEXT and rows[2][4] == ""
    assert rows[3][5] == "1" and json.loads(rows[3][7]) == {"depth_um": DEPTH_CAP_UM + 60}


def test_export_out_writes_the_file_and_nothing_to_stdout(
    db: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "session-1.json"
    assert cli.main(["sessions", "export", "1", "--db", str(db), "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())["session"]["id"] == 1


def test_export_help_says_what_each_format_holds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["sessions", "export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "csv: the event log only, one header row" in help_text
    assert "json: one JSON document {session, zones, events}" in help_text


# --- routine events counted, not listed; --kind, --since, --json (issue 14 item 1) ----


def _busy_session(path: Path | str) -> int:
    """A recorded session of 12,000 events, as a long demo leaves: mostly routine."""
    from datetime import datetime, timedelta

    t0 = datetime.fromisoformat(START)
    events: list[EventRecord] = []
    for i in range(12_000):
        t_us = i * 100_000  # 20 minutes over the session
        wall = (t0 + timedelta(microseconds=t_us)).isoformat()
        if i % 400 == 7:
            events.append(EventRecord(t_us, wall, "STATE", f"state change {i}", 1, {}))
        elif i == 6_001:
            events.append(EventRecord(t_us, wall, "ESTOP", "emergency stop pressed", 1, {},
                                      safety=True))
        elif i == 6_002:
            events.append(EventRecord(t_us, wall, "PEN_FAULT", "the pen latched OVERDEPTH", 1,
                                      {"fault": "OVERDEPTH"}, safety=True))
        elif i % 5 == 0:
            events.append(EventRecord(t_us, wall, "SAMPLE", "depth set 1000 µm", 1,
                                      {"depth_cmd_um": 1000}))
        elif i % 5 == 1:
            events.append(EventRecord(t_us, wall, "PEN_EVENT", "pen: contact lost", 1,
                                      {"event": "CONTACT_LOST"}))
        elif i % 5 == 2:
            events.append(EventRecord(t_us, wall, "COVERAGE_HOLD", "stamping held", 1, {}))
        elif i % 5 == 3:
            events.append(EventRecord(t_us, wall, "RESUMED_STAMPING", "stamping resumed", 1, {}))
        else:
            events.append(EventRecord(t_us, wall, "SENT", "STOP sent", 1, {}))
    events.append(EventRecord(12_000 * 100_000, (t0 + timedelta(minutes=20)).isoformat(),
                              "PEN_EVENT", "pen: button NEXT_ZONE", 1, {"event": "BUTTON"}))
    with Store(path) as store:
        sid = store.create_session(patient_ref="P-busy", profile_name="busy",
                                   profile_hash="bb", profile_text="", started_at=START)
        store.append_events(sid, events)
        store.close_session(sid, "fault", (t0 + timedelta(minutes=21)).isoformat())
    return sid


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def busy(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> tuple[Path | str, int]:
    """The 12,000-event session on each backend, once per module (the tests only read it)."""
    if request.param == "sqlite":
        path: Path | str = tmp_path_factory.mktemp("busy") / "busy.db"
    else:
        path = request.getfixturevalue("pg_server").new_database()
    return path, _busy_session(path)


def test_show_of_a_12000_event_session_lists_what_matters_and_counts_the_rest(
    busy: tuple[Path | str, int], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from devicectl import eventkinds

    path, sid = busy
    decoded = 0
    real = eventkinds.event_from_row

    def counting(row: Any) -> Any:
        nonlocal decoded
        decoded += 1
        return real(row)

    monkeypatch.setattr(eventkinds, "event_from_row", counting)  # a spy: the real decoder runs
    start = time.monotonic()
    assert cli.main(["sessions", "show", str(sid), "--db", str(path)]) == 0
    took_s = time.monotonic() - start
    out = capsys.readouterr().out
    listed = 30 + 2 + 1  # STATE every 400, the ESTOP and the fault, the button
    assert decoded == listed  # the routine rows are counted in SQL, never read one by one
    assert len(out.splitlines()) < 150
    assert "ESTOP !" in out and "PEN_FAULT !" in out and "button NEXT_ZONE" in out
    assert "COVERAGE_HOLD" not in out.split("events not listed")[0]
    assert "SAMPLE" not in out.split("events not listed")[0]
    assert f"{12_001 - listed:,} events not listed" in out and "SAMPLE 2,400" in out
    assert took_s < 5.0  # generous: well under a second on the developers' machine


def test_show_filters_by_kind_and_time_and_prints_json(
    busy: tuple[Path | str, int], capsys: pytest.CaptureFixture[str],
) -> None:
    path, sid = busy
    assert cli.main(["sessions", "show", str(sid), "--db", str(path), "--kind", "estop,Pen_Fault",
                     "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in doc["events"]] == ["ESTOP", "PEN_FAULT"]
    assert doc["session"]["status"] == "fault"
    assert sum(doc["hidden"].values()) == 12_001 - 2
    # --since 19:00: the last minute (600 events of 0.1 s), STATE included, routine not.
    assert cli.main(["sessions", "show", str(sid), "--db", str(path), "--since", "19:00",
                     "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    times = [e["t_us"] for e in doc["events"]]
    assert times and min(times) >= 19 * 60 * 1_000_000
    assert {e["kind"] for e in doc["events"]} == {"STATE", "PEN_EVENT"}
    assert cli.main(["sessions", "show", str(sid), "--db", str(path), "--kind", "all",
                     "--since", "1140"]) == 0
    out = capsys.readouterr().out
    assert sum(1 for line in out.splitlines() if line.startswith("19:")) == 600
    assert sum(1 for line in out.splitlines() if line.startswith("20:00")) == 1
    with pytest.raises(SystemExit) as exc:
        cli.main(["sessions", "show", str(sid), "--db", str(path), "--since", "soon"])
    assert exc.value.code == 1  # a user's mistake
    assert "not a time into the session" in capsys.readouterr().err


def test_show_lists_the_zones_in_the_order_they_were_treated(
    records: Path | str, capsys: pytest.CaptureFixture[str],
) -> None:
    path = records
    with Store(path) as store:
        sid = store.create_session(patient_ref="P-order", profile_name="p", profile_hash="h",
                                   profile_text="", started_at=START)
        store.append_events(sid, [
            EventRecord(0, START, "ZONE_STARTED", "zone vertex started", 3, {}),
            EventRecord(5, START, "ZONE_STARTED", "zone mid_scalp started", 2, {}),
        ])
        store.save_coverage(sid, [
            ZoneCoverage(2, "mid_scalp", 1500, 1000, 0.2, 0.9, 10, 0, False, 5.0),
            ZoneCoverage(3, "vertex", 1500, 1000, 0.9, 0.9, 90, 0, True, 50.0),
        ], b"")
    assert cli.main(["sessions", "show", str(sid), "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.index("vertex ✓") < out.index("mid_scalp")  # vertex first, as treated


def test_list_shows_a_session_whose_process_holds_its_lock_as_running(
    db: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Session 2 is open: interrupted, until a process holds its running lock (a
    file lock beside an SQLite file, the server's advisory lock on PostgreSQL)."""
    lock = running_lock(db, 2)
    try:
        assert cli.main(["sessions", "list", "--db", str(db)]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if "P-0002" in line)
        assert "running" in row
    finally:
        lock.release()
    assert cli.main(["sessions", "list", "--db", str(db)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "P-0002" in line)
    assert "interrupted" in row


def test_report_is_written_from_either_backend(
    db: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    assert cli.main(["sessions", "report", "1", "--db", str(db), "--out", str(out)]) == 0
    html = (out / "session-1-report.html").read_text(encoding="utf-8")
    assert "P-7f3a9c" in html and "crown" in html
    assert (out / "session-1-report.pdf").read_bytes().startswith(b"%PDF")
    assert f"report: {out / 'session-1-report.html'}" in capsys.readouterr().out
