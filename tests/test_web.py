"""The live page's server: state diffs, the heat map, the SSE stream and the controls' token.

Real server (uvicorn on a free port), real session (virtual pen, real records);
the browser itself is driven in tests/test_browser.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from clinic_support import GATE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_virtual_session import MAP
from web_support import PATIENT, SimSession, sim_session

from devicectl.controller import State
from devicectl.protocol import PenState
from devicectl.safety import DEPTH_CAP_UM
from devicectl.web.server import STATIC_DIR, WebServer, allowed_hosts, start_web
from devicectl.web.state import (
    HEAT_MAX,
    HEAT_NONE,
    HEAT_TARGET,
    HEAT_UNDER,
    actions_in,
    apply,
    diff,
    heat_cells,
)

TOKEN = "test-token-0123456789"
#: One client for the whole module: `httpx.get` and friends build a client, and its TLS
#: context (~25 ms), per call, which made the 240-request token property take 11 s.
#: No keep-alive: every request opens its own connection, as the module functions did.
HTTP = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def _wait(cond: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[SimSession, WebServer]]:
    sim = sim_session(tmp_path / "s.db", speed=1.0)
    header = {"session_id": sim.session_id, "patient_ref": PATIENT, "profile": "web-test"}
    web = start_web(sim.session, "127.0.0.1", 0, TOKEN, zone_map=MAP, header=header,
                    db_path=sim.db_path, session_id=sim.session_id)
    try:
        yield sim, web
    finally:
        web.stop()
        sim.finish()


def _stream(url: str, n: int, timeout_s: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
    """The first n SSE messages as (event name, data)."""
    out: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    with HTTP.stream("GET", url + "api/stream", timeout=timeout_s) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
                name = "message"
                if len(out) >= n:
                    break
    return out


# --- the diff -------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    max_leaves=8,
)
states = st.dictionaries(st.sampled_from(["state", "zones", "pen", "fault", "heat"]), json_values)


@settings(max_examples=200, deadline=None)
@given(states, states)
def test_diff_applied_to_the_old_state_gives_the_new_one(old: dict[str, Any],
                                                          new: dict[str, Any]) -> None:
    got = apply(old, diff(old, new))
    assert {k: v for k, v in got.items() if v is not None} == {
        k: v for k, v in new.items() if v is not None
    }


def test_diff_sends_only_changed_keys_and_new_trace_items() -> None:
    old = {"state": "STAMPING", "zones": [1], "trace": [[1.0, 5], [2.0, 6]]}
    new = {"state": "STAMPING", "zones": [2], "trace": [[2.0, 6], [3.0, 7]]}
    assert diff(old, new) == {"zones": [2], "trace+": [[3.0, 7]]}
    assert diff(new, new) == {}
    assert diff(None, new) == new


# --- the heat map ---------------------------------------------------------


def test_heat_block_shows_its_worst_cell() -> None:
    target = np.full((4, 4), 2, dtype=np.int64)
    maximum = np.full((4, 4), 3, dtype=np.int64)
    passes = np.zeros((4, 4), dtype=np.int64)
    passes[0, 0] = 2  # at target
    passes[0, 2:] = 2
    passes[1, 3] = 3  # one cell at the maximum beside cells at target
    passes[2, 0] = 1  # under target
    passes[2, 1] = 2
    cells = heat_cells(passes, target, maximum, 2)
    assert cells.tolist() == [[HEAT_TARGET, HEAT_MAX], [HEAT_UNDER, HEAT_NONE]]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(0, 4), min_size=36, max_size=36))
def test_heat_cells_match_a_cell_by_cell_reading(factor: int, flat: list[int]) -> None:
    passes = np.array(flat, dtype=np.int64).reshape(6, 6)
    target = np.full((6, 6), 2, dtype=np.int64)
    maximum = np.full((6, 6), 3, dtype=np.int64)
    maximum[0, :] = 0  # off the plan: never shown
    cells = heat_cells(passes, target, maximum, factor)
    rank = {HEAT_NONE: 0, HEAT_TARGET: 1, HEAT_UNDER: 2, HEAT_MAX: 3}
    for by in range(cells.shape[0]):
        for bx in range(cells.shape[1]):
            worst = HEAT_NONE
            for y in range(by * factor, min(6, (by + 1) * factor)):
                for x in range(bx * factor, min(6, (bx + 1) * factor)):
                    n, mx = passes[y, x], maximum[y, x]
                    level = HEAT_NONE
                    if mx > 0 and n > 0:
                        level = HEAT_MAX if n >= mx else HEAT_UNDER if n < 2 else HEAT_TARGET
                    worst = max(worst, level, key=lambda v: rank[v])
            assert cells[by, bx] == worst


# --- the server -----------------------------------------------------------


def test_page_is_served_by_the_package_with_nothing_from_outside(
    live: tuple[SimSession, WebServer],
) -> None:
    _, web = live
    assert web.host == "127.0.0.1"
    page = HTTP.get(web.url, timeout=5).text
    assert '<script src="/static/app.js">' in page
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / name).read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text
        assert HTTP.get(web.url + ("" if name == "index.html" else "static/" + name),
                         timeout=5).status_code == 200


def test_stream_sends_full_state_first_then_only_changes(
    live: tuple[SimSession, WebServer],
) -> None:
    _, web = live
    _wait(lambda: web.hub.current["state"] == "STAMPING")
    messages = _stream(web.url, 6)
    name, first = messages[0]
    assert name == "full"
    state = first["state"]
    assert [z["name"] for z in first["map"]["zones"]] == ["frontal", "mid_scalp", "vertex"]
    assert state["depth_cap_um"] == DEPTH_CAP_UM
    assert state["header"]["patient_ref"] == PATIENT
    assert set(state) >= {"state", "zones", "pen", "heat", "trace", "events", "elapsed_s"}
    for name, delta in messages[1:]:
        assert name == "message"
        assert delta, "an empty diff is never sent"
        assert "map" not in delta and "header" not in delta  # unchanged: not resent
        assert "trace" not in delta  # the trace is only appended to
        state = apply(state, delta)
    assert state["pen"]["depth_cmd_um"] in (1000, 1200, 1400)


def test_stream_shows_coverage_rising_on_the_heat_map(live: tuple[SimSession, WebServer]) -> None:
    sim, web = live
    _wait(lambda: web.hub.current["state"] == "STAMPING")
    first = _stream(web.url, 1)[0][1]["state"]
    # the dose shown moves with every stroke (the share at target only late in a zone)
    _wait(lambda: sim.session.controller.coverage is not None
          and sim.session.controller.coverage.mean_passes(1) > 0.3)
    later = _stream(web.url, 1)[0][1]["state"]
    treated = [sum(c != "0" for c in s["heat"]["cells"]) if s["heat"] else 0
               for s in (first, later)]
    assert treated[1] > treated[0]
    assert later["zones"][0]["mean_passes"] > first["zones"][0]["mean_passes"]


def test_controls_without_the_token_are_refused_and_change_nothing(
    live: tuple[SimSession, WebServer],
) -> None:
    sim, web = live
    _wait(lambda: sim.session.state is State.STAMPING)
    for headers in ({}, {"X-Session-Token": "wrong"}):
        for action in ("pause", "abort", "clear_fault", "next_zone", "resume"):
            r = HTTP.post(web.url + f"api/control/{action}", json={"confirm": True},
                           headers=headers, timeout=5)
            assert r.status_code == 403
    time.sleep(0.3)
    assert sim.session.state is State.STAMPING
    assert sim.pen.firmware.state is PenState.STAMPING


def test_pause_with_the_token_pauses_the_pen(live: tuple[SimSession, WebServer]) -> None:
    sim, web = live
    _wait(lambda: sim.session.state is State.STAMPING)
    r = HTTP.post(web.url + "api/control/pause", headers={"X-Session-Token": TOKEN}, timeout=5)
    assert r.status_code == 200
    _wait(lambda: sim.session.state is State.PAUSED, 5.0)
    _wait(lambda: sim.pen.firmware.state is PenState.READY, 5.0)
    time.sleep(0.3)  # and it stays stopped: no START follows a pause
    assert sim.pen.firmware.state is PenState.READY
    assert sim.session.state is State.PAUSED


def test_abort_needs_confirmation_even_with_the_token(live: tuple[SimSession, WebServer]) -> None:
    sim, web = live
    _wait(lambda: sim.session.state is State.STAMPING)
    r = HTTP.post(web.url + "api/control/abort", headers={"X-Session-Token": TOKEN}, timeout=5)
    assert r.status_code == 409
    time.sleep(0.2)
    assert sim.session.state is State.STAMPING
    r = HTTP.post(web.url + "api/control/abort", json={"confirm": True},
                   headers={"X-Session-Token": TOKEN}, timeout=5)
    assert r.status_code == 200
    _wait(lambda: sim.session.state is State.ABORTED, 5.0)


# --- devicectl monitor: a session through its records ----------------------


def test_monitor_shows_a_recorded_fault_read_only(tmp_path: Path) -> None:
    from devicectl.web.hub import EventFeed, Hub
    from devicectl.web.records_source import RecordsSource
    from devicectl.web.server import serve

    sim = sim_session(tmp_path / "s.db", scenario="overshoot")
    sim.session.wait(20.0)
    sim.finish()
    header = {"session_id": sim.session_id, "patient_ref": PATIENT, "profile": "web-test",
              "controls": False}
    hub = Hub(RecordsSource(sim.db_path, sim.session_id), MAP, header,
              events=EventFeed(sim.db_path, sim.session_id))
    web = serve(hub, "127.0.0.1", 0, token=None, submit=None)
    try:
        _wait(lambda: bool(web.hub.current["events"]))
        state = HTTP.get(web.url + "api/state", timeout=5).json()["state"]
        assert state["state"] == "FAULT"
        assert "OVERDEPTH" in state["fault"]
        assert any("OVERDEPTH" in e[3] for e in state["events"] if e[5])  # safety events
        for token in ("", TOKEN):
            r = HTTP.post(web.url + "api/control/pause", headers={"X-Session-Token": token},
                           timeout=5)
            assert r.status_code == 403
    finally:
        web.stop()


def test_monitor_without_records_is_one_sentence(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from devicectl.cli import main

    code = main(["monitor", "--db", str(tmp_path / "none.db")])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("devicectl: no records yet at ")
    assert "Traceback" not in err


def test_without_position_the_page_says_coverage_is_estimated(tmp_path: Path) -> None:
    sim = sim_session(tmp_path / "s.db", position=False, speed=1.0)
    header = {"session_id": sim.session_id, "patient_ref": PATIENT, "profile": "web-test"}
    web = start_web(sim.session, "127.0.0.1", 0, TOKEN, zone_map=MAP, header=header)
    try:
        _wait(lambda: web.hub.current["state"] == "STAMPING")
        _wait(lambda: web.hub.current["zones"][0]["fraction"] > 0)
        state = _stream(web.url, 1)[0][1]["state"]
        assert state["tracked"] is False
        assert state["heat"] is None  # per-zone bars only
        assert state["position_mode"] == "estimated"
    finally:
        web.stop()
        sim.finish()


def test_the_cli_loads_no_web_or_plotting_library_until_asked() -> None:
    import subprocess
    import sys

    code = ("import sys, devicectl.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_a_page_watching_an_ended_session_is_told_it_is_over(tmp_path: Path) -> None:
    import threading

    sim = sim_session(tmp_path / "s.db", speed=0.0)
    header = {"session_id": sim.session_id, "patient_ref": PATIENT, "profile": "web-test"}
    web = start_web(sim.session, "127.0.0.1", 0, TOKEN, zone_map=MAP, header=header)
    names: list[str] = []
    last: dict[str, Any] = {}

    def read() -> None:
        with HTTP.stream("GET", web.url + "api/stream", timeout=10) as resp:
            name = "message"
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    names.append(name)
                    last.update(json.loads(line[6:]))
                    name = "message"

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert sim.session.wait(20.0)
        _wait(lambda: bool(names))
        time.sleep(0.3)
    finally:
        web.stop()
        sim.finish()
    reader.join(5.0)
    assert names[0] == "full" and names[-1] == "end"
    assert last["state"]["state"] == "COMPLETE"  # the final state, not the last 50 ms tick


# --- the page hardened (issue 12 item 6) ----------------------------------

SECURITY = {
    "content-security-policy": "default-src 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _has_security_headers(resp: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert value in resp.headers.get(name, ""), (resp.url, name, resp.headers)


def test_a_foreign_host_header_gets_400_and_reaches_nothing(
    live: tuple[SimSession, WebServer],
) -> None:
    sim, web = live
    _wait(lambda: sim.session.state is State.STAMPING)
    port = web.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}",
                 "127.0.0.1", f"localhost:{port + 1}", f"10.0.0.1:{port}", ""):
        for method, path in (("GET", ""), ("GET", "api/state"), ("GET", "api/stream"),
                             ("GET", "static/app.js"), ("POST", "api/control/pause")):
            r = HTTP.request(method, web.url + path, headers={"Host": host,
                              "X-Session-Token": TOKEN}, timeout=5)
            assert r.status_code == 400, (host, path, r.status_code)
            assert PATIENT not in r.text
            _has_security_headers(r)
    time.sleep(0.2)
    assert sim.session.state is State.STAMPING  # the foreign pause did nothing
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        r = HTTP.get(web.url + "api/state", headers={"Host": host}, timeout=5)
        assert r.status_code == 200 and r.json()["state"]["header"]["patient_ref"] == PATIENT


def test_the_allowed_hosts_are_the_configured_ones_with_their_port() -> None:
    import socket

    got = allowed_hosts("127.0.0.1", 8765)
    assert got == {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"}
    assert "192.168.1.20:9000" in allowed_hosts("192.168.1.20", 9000)
    assert "pen-cart.local:9000" in allowed_hosts("Pen-Cart.local", 9000)
    wild = allowed_hosts("0.0.0.0", 9000)
    assert f"{socket.gethostname().lower()}:9000" in wild
    assert not any(h.startswith("0.0.0.0") for h in wild)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=80).map(
    lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F)).filter(bool))
def test_a_malformed_or_non_ascii_token_is_403_never_500(
    live: tuple[SimSession, WebServer], capfd: pytest.CaptureFixture[str], raw: bytes,
) -> None:
    sim, web = live
    for value in (raw, "é".encode() + raw, TOKEN.encode() + "ü".encode(), TOKEN.encode()[:-1]):
        if value == TOKEN.encode():
            continue
        r = HTTP.post(web.url + "api/control/abort", json={"confirm": True},
                       headers=[(b"X-Session-Token", value)], timeout=5)
        assert r.status_code == 403, (value, r.status_code, r.text)
        _has_security_headers(r)
    assert sim.session.state is not State.ABORTED
    assert "Traceback" not in capfd.readouterr().err


def test_confirm_must_be_exactly_json_true(live: tuple[SimSession, WebServer]) -> None:
    sim, web = live
    _wait(lambda: sim.session.state is State.STAMPING)
    headers = {"X-Session-Token": TOKEN, "Content-Type": "application/json"}
    for body in ('{"confirm": "no"}', '{"confirm": "true"}', '{"confirm": 1}',
                 '{"confirm": [true]}', '{"confirm": {}}', "true", "[true]",
                 '{"Confirm": true}', '{"confirm": true', "", "\xff"):
        r = HTTP.post(web.url + "api/control/abort", content=body.encode("latin-1"),
                       headers=headers, timeout=5)
        assert r.status_code == 409, (body, r.status_code)
        _has_security_headers(r)
    r = HTTP.post(web.url + "api/control/abort", content=b"x" * 5000, headers=headers,
                   timeout=5)
    assert r.status_code == 413
    time.sleep(0.2)
    assert sim.session.state is State.STAMPING
    r = HTTP.post(web.url + "api/control/abort", content=b'{"confirm": true}',
                   headers=headers, timeout=5)
    assert r.status_code == 200
    _wait(lambda: sim.session.state is State.ABORTED, 5.0)


def test_every_answer_carries_the_security_headers_and_a_favicon_is_served(
    live: tuple[SimSession, WebServer],
) -> None:
    _, web = live
    for path in ("", "static/app.js", "static/style.css", "api/state", "favicon.ico",
                 "static/favicon.svg", "no-such-page"):
        r = HTTP.get(web.url + path, timeout=5)
        assert r.status_code == (404 if path == "no-such-page" else 200), path
        _has_security_headers(r)
    with HTTP.stream("GET", web.url + "api/stream", timeout=5) as resp:
        _has_security_headers(resp)
    r = HTTP.post(web.url + "api/control/pause", timeout=5)
    assert r.status_code == 403
    _has_security_headers(r)
    icon = HTTP.get(web.url + "favicon.ico", timeout=5)
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")
    assert 'rel="icon"' in HTTP.get(web.url, timeout=5).text


def test_the_controls_offered_follow_the_state(live: tuple[SimSession, WebServer]) -> None:
    assert actions_in("STAMPING") == ["pause", "abort"]
    assert actions_in("PAUSED") == ["resume", "abort"]
    assert actions_in("READY") == ["resume", "abort"]
    assert actions_in("ZONE_DONE") == ["next_zone", "abort"]
    assert actions_in("FAULT") == ["clear_fault", "abort"]
    for over in ("COMPLETE", "ABORTED", "REFUSED"):
        assert actions_in(over) == []
    assert actions_in("STAMPING", finished=True) == []
    _sim, web = live
    _wait(lambda: web.hub.current["state"] == "STAMPING")
    assert web.hub.current["actions"] == ["pause", "abort"]
    assert HTTP.post(web.url + "api/control/pause", headers={"X-Session-Token": TOKEN},
                      timeout=5).status_code == 200
    _wait(lambda: web.hub.current["state"] == "PAUSED", 5.0)
    assert _stream(web.url, 1)[0][1]["state"]["actions"] == ["resume", "abort"]


def test_run_prints_the_token_in_the_fragment_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    import re

    from devicectl.cli import main

    short = Path(__file__).parent / "data" / "short-frontal.yaml"
    code = main(["run", "--profile", str(short), "--patient", "P-1", "--sim", "--yes",
                 "--speed", "0", "--seed", "4", "--db", str(tmp_path / "r.db"), "--web",
                 "--web-port", "0", *GATE])
    out = capsys.readouterr().out
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("web page:"))
    assert re.search(r"http://127\.0\.0\.1:\d+/#token=[A-Za-z0-9_-]{20,} \(with controls\)",
                     line), line
    assert "?token" not in out


def test_routine_events_are_left_out_and_faults_stay_pinned(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from devicectl.store import EventRecord, Store
    from devicectl.web.hub import EventFeed, Hub
    from devicectl.web.records_source import RecordsSource
    from devicectl.web.server import serve

    db = tmp_path / "s.db"
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def ev(i: int, kind: str, text: str, data: dict[str, Any] | None = None,
           safety: bool = False) -> EventRecord:
        return EventRecord(i * 10_000, (t0 + timedelta(milliseconds=10 * i)).isoformat(), kind,
                           text, 1, data or {}, safety=safety)

    events = [ev(1, "ESTOP", "emergency stop pressed on the pen", safety=True)]
    for i in range(2, 1_502):  # 40 s of a demo after the stop: holds, resumes, samples ...
        kind = ("COVERAGE_HOLD", "RESUMED_STAMPING", "SAMPLE", "SENT")[i % 4]
        events.append(ev(i, kind, f"routine {i}"))
        if i % 10 == 0:  # ... and 150 events that matter
            events.append(ev(i, "WARNING", f"warning {i}"))
    events.append(ev(1_600, "PEN_EVENT", "pen: contact lost", {"event": "CONTACT_LOST"}))
    with Store(db) as store:
        sid = store.create_session(patient_ref=PATIENT, profile_name="p", profile_hash="h",
                                   profile_text="", started_at=t0.isoformat())
        store.append_events(sid, events)
    header = {"session_id": sid, "patient_ref": PATIENT, "profile": "p", "controls": False}
    hub = Hub(RecordsSource(db, sid), MAP, header, events=EventFeed(db, sid))
    web = serve(hub, "127.0.0.1", 0, token=None, submit=None)
    try:
        _wait(lambda: web.hub.current["hidden_events"] > 0)
        state = _stream(web.url, 1)[0][1]["state"]
    finally:
        web.stop()
    kinds = {e[2] for e in state["events"]}
    assert kinds == {"WARNING"}  # the last 60 that matter; no routine event among them
    assert len(state["events"]) == 60
    assert [e[2] for e in state["pinned"]] == ["ESTOP"]  # long scrolled out, still in view
    assert state["hidden_events"] == 1_500 + 1


def test_monitor_tells_an_ended_session_from_a_running_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse
    import threading
    from datetime import UTC, datetime

    from devicectl.commands.monitor_cmd import monitor
    from devicectl.liveness import RunningLock
    from devicectl.store import EventRecord, Store
    from devicectl.web.records_source import RecordsSource

    db = tmp_path / "s.db"
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC).isoformat()
    with Store(db) as store:
        sid = store.create_session(patient_ref=PATIENT, profile_name="p", profile_hash="h",
                                   profile_text="", started_at=t0)
        store.append_events(sid, [
            EventRecord(0, t0, "STATE", "READY -> STAMPING", 1, {"from": "READY",
                                                                  "to": "STAMPING"}),
            EventRecord(5, "2026-03-01T09:00:40+00:00", "PEN_FAULT",
                        "the pen reports a fault: OVERDEPTH", 1, {}, safety=True),
        ])
    lock = RunningLock(db, sid)  # as `devicectl run` holds it while the session runs
    try:
        running = RecordsSource(db, sid).status()
        assert running["state"] == "STAMPING" and not RecordsSource(db, sid).finished()
    finally:
        lock.release()
    source = RecordsSource(db, sid)  # its process is gone: interrupted, over
    ended = source.status()
    assert source.finished()
    assert ended["state"] == "INTERRUPTED"
    assert "OVERDEPTH" in ended["fault"]  # ended after a fault: the banner stays
    assert ended["elapsed_s"] == 40.0  # to its last record, not to now
    stop = threading.Event()
    stop.set()
    args = argparse.Namespace(db=db, session=sid, web_port=0, web_host="127.0.0.1")
    assert monitor(args, stop) == 0
    out = capsys.readouterr().out
    assert f"session {sid} in {db} has ended (interrupted): its record, read-only" in out


def test_the_page_shows_the_session_clock_the_events_use(tmp_path: Path) -> None:
    sim = sim_session(tmp_path / "s.db", speed=1.0, auto_confirm=False)
    header = {"session_id": sim.session_id, "patient_ref": PATIENT, "profile": "web-test"}
    web = start_web(sim.session, "127.0.0.1", 0, TOKEN, zone_map=MAP, header=header,
                    db_path=sim.db_path, session_id=sim.session_id)
    try:
        _wait(lambda: web.hub.current["state"] == "READY")
        # Nobody pressed START: the controller's own clock has not started, the session's has.
        _wait(lambda: web.hub.current["elapsed_s"] >= 1.0)
        assert sim.session.snapshot.status["elapsed_s"] == 0.0
        state = _stream(web.url, 1)[0][1]["state"]
        session_s = (sim.session.now_us - sim.session.t0_us) / 1e6
        assert 1.0 <= state["elapsed_s"] <= session_s + 0.01
        # ... and the events' times count from the same zero: none is later than the
        # session's clock once they are shown (however long they took to show).
        _wait(lambda: bool(web.hub.current["events"]))
        shown = web.hub.current["events"]
        later_s = (sim.session.now_us - sim.session.t0_us) / 1e6
        assert all(0.0 <= e[1] <= later_s + 0.01 for e in shown)
    finally:
        web.stop()
        sim.finish()


def test_the_page_and_the_report_shade_and_caption_the_map_alike() -> None:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from devicectl.mapstyle import reached_colour, zone_caption
    from devicectl.report_figures import coverage_map
    from devicectl.store import ZoneCoverage
    from devicectl.web.state import map_shading, map_state
    from devicectl.zones import load_zone_map

    cmap = colormaps["RdYlGn"]
    for i in range(101):  # the page's colours are matplotlib's, without matplotlib
        want = [round(c * 255) for c in cmap(i / 100)[:3]]
        got = reached_colour(i / 100)
        have = [int(got[k:k + 2], 16) for k in (1, 3, 5)]
        assert max(abs(a - b) for a, b in zip(want, have, strict=True)) <= 1, (i, got, want)
    zone_map = load_zone_map()
    zones = [ZoneCoverage(3, "vertex", 1500, 1000, 0.45, 0.9, 800, 0, False, 60.0),
             ZoneCoverage(2, "mid_scalp", 1500, 1000, 0.9, 0.9, 900, 0, True, 80.0)]
    fig = coverage_map(zone_map, zones, "t")
    ax = fig.axes[0]
    report_fill = {}
    for patch, zone in zip(ax.patches[1:], zone_map.zones, strict=True):  # [0]: the scalp
        report_fill[zone.id] = to_hex(patch.get_facecolor(), keep_alpha=False)
    report_words = {t.get_text() for t in ax.texts}
    page = map_shading(map_state(zone_map)["zones"],
                       [{"name": z.name, "fraction": z.fraction,
                         "target_fraction": z.target_fraction} for z in zones])
    for sh in page:
        assert sh["fill"] == report_fill[sh["zone_id"]]
        assert sh["caption"] in report_words
    assert zone_caption("Vertex (crown)", 0.45, 0.9) in report_words
