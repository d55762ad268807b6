"""The live page in a real browser: Debian's Chromium driven by Playwright.

Skipped, with the reason, where /usr/bin/chromium or the playwright package is
missing (.ci/run installs Chromium with apt). Each test runs a simulated
session in-process, opens the page and saves a screenshot in its tmp_path.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_virtual_session import MAP
from web_support import PATIENT, SimSession, sim_session

from devicectl.controller import Command, State
from devicectl.protocol import PenState
from devicectl.web.server import WebServer, start_web

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-token-abcdef"
TIMEOUT_MS = 8_000

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)
if not CHROMIUM.exists() and shutil.which("chromium") is None:
    pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium): browser tests "
                "skipped", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=15_000)
        try:
            yield b
        finally:
            b.close()


def _wait(cond: Any, timeout_s: float = 8.0) -> float:
    start = deadline = time.monotonic()
    deadline += timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)
    return time.monotonic() - start


class Live:
    def __init__(self, tmp_path: Path, **kw: Any) -> None:
        self.sim: SimSession = sim_session(tmp_path / "s.db", **kw)
        header = {"session_id": self.sim.session_id, "patient_ref": PATIENT,
                  "profile": "web-test"}
        self.web: WebServer = start_web(
            self.sim.session, "127.0.0.1", 0, TOKEN, zone_map=MAP, header=header,
            db_path=self.sim.db_path, session_id=self.sim.session_id,
        )

    def close(self) -> None:
        self.web.stop()
        self.sim.finish()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        yield pg
    finally:
        ctx.close()


def _until(page: Any, expression: str, **kw: Any) -> None:
    """Wait for a JS expression to hold: passed as a function, which Playwright runs
    outside the page's CSP (a bare string would be eval'd, which the CSP forbids).
    An element the page has not drawn yet is "not yet", never an error."""
    page.wait_for_function(f"() => {{ try {{ return ({expression}); }} "
                           "catch (e) { if (e instanceof TypeError) return false; throw e; } }",
                           **kw)


def _shot(page: Any, tmp_path: Path) -> None:
    """The page as the test left it, before the session and server stop."""
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def _treated(page: Any) -> int:
    return int(page.get_attribute("#heat", "data-treated") or 0)


def _fraction(page: Any, zone_id: int) -> float:
    value = page.get_attribute(f'#zone-list li[data-zone-id="{zone_id}"] .pct', "data-fraction")
    return float(value or 0)


def test_zones_appear_and_coverage_cells_and_progress_rise(page: Any, tmp_path: Path) -> None:
    live = Live(tmp_path, speed=1.0)
    try:
        page.goto(live.web.url)
        _until(page, "document.querySelectorAll('#zones-svg path.zone').length === 3")
        _until(page, "document.getElementById('state').textContent === 'STAMPING'")
        _until(page, "Number(document.getElementById('heat').dataset.treated) > 0")
        cells0, frac0 = _treated(page), _fraction(page, 1)
        _until(page,
            f"Number(document.getElementById('heat').dataset.treated) > {cells0}")
        _until(page,
            "Number(document.querySelector('#zone-list li[data-zone-id=\"1\"] .pct')"
            f".dataset.fraction) > {frac0}")
        assert page.get_attribute("#zone-1", "class") == "zone active"
        assert _fraction(page, 1) > frac0 and _treated(page) > cells0
        assert page.inner_text("#header-text").endswith(f"patient {PATIENT} · web-test")
        page.wait_for_selector("#events li")  # read from the session's records
        events = page.eval_on_selector_all("#events li", "els => els.map(e => e.textContent)")
        assert any("STATE frontal: " in t for t in events), events  # the zone by its name
        assert not any(" zone 1:" in t for t in events)
    finally:
        _shot(page, tmp_path)
        live.close()


def test_overdepth_fault_banner_appears_within_a_second(page: Any, tmp_path: Path) -> None:
    live = Live(tmp_path, scenario="overshoot", speed=1.0, auto_confirm=False,
                end_on_fault=False)
    try:
        page.goto(live.web.url)
        _until(page, "document.getElementById('state').textContent === 'READY'")
        assert page.is_hidden("#fault-banner")
        live.sim.session.submit(Command.START)
        _wait(lambda: live.sim.session.state is State.FAULT)
        t_fault = time.monotonic()
        page.wait_for_selector("#fault-banner:not(.hidden)", timeout=1_000)
        assert time.monotonic() - t_fault < 1.0
        assert "FAULT" in page.inner_text("#fault-banner")
        assert page.inner_text("#state") == "FAULT"
        # The fault is pinned above the timeline, and no routine event is listed.
        page.wait_for_selector('#pinned li[data-kind="ESTOP"]')
        assert "OVERDEPTH" in page.inner_text("#pinned")
        listed = page.eval_on_selector_all("#events li", "els => els.map(e => e.dataset.kind)")
        assert listed and not set(listed) & {"SAMPLE", "COVERAGE_HOLD", "RESUMED_STAMPING",
                                             "SENT"}
    finally:
        _shot(page, tmp_path)
        live.close()


def test_controls_without_the_token_are_refused_and_change_nothing(
    page: Any, tmp_path: Path
) -> None:
    live = Live(tmp_path, speed=1.0)
    try:
        page.goto(live.web.url)
        _until(page, "document.getElementById('state').textContent === 'STAMPING'")
        assert page.is_disabled('button[data-action="pause"]')
        assert page.is_visible("#readonly-note")
        statuses = page.evaluate(
            """async () => { const out = [];
                for (const a of ['pause', 'abort', 'clear_fault', 'next_zone', 'resume']) {
                  const r = await fetch('/api/control/' + a, {method: 'POST',
                    headers: {'Content-Type': 'application/json'}, body: '{"confirm": true}'});
                  out.push(r.status); }
                return out; }""")
        assert statuses == [403] * 5
        page.fill("#token-input", "not-the-token")
        page.click("#token-form button")
        page.click('button[data-action="pause"]')
        _until(page,
            "document.getElementById('control-result').textContent.includes('403')")
        time.sleep(0.3)
        # Not PAUSED (a PAUSE moves there, and only an also refused RESUME leaves it).
        # The pen itself may be between strokes: the hand that watches the dose map
        # lifts between rows and the host holds over spots at their maximum.
        assert live.sim.session.state is State.STAMPING
    finally:
        _shot(page, tmp_path)
        live.close()


def test_pause_with_the_token_pauses_the_pen_and_abort_asks_first(
    page: Any, tmp_path: Path
) -> None:
    live = Live(tmp_path, speed=1.0)
    try:
        page.goto(live.web.url + "#token=" + TOKEN)
        _until(page, "document.getElementById('state').textContent === 'STAMPING'")
        assert "token" not in page.url  # taken out of the address bar
        page.click('button[data-action="pause"]')
        _wait(lambda: live.sim.session.state is State.PAUSED, 5.0)
        _wait(lambda: live.sim.pen.firmware.state is PenState.READY, 5.0)
        _until(page, "document.getElementById('state').textContent === 'PAUSED'")
        time.sleep(0.3)  # the pen stays stopped
        assert live.sim.pen.firmware.state is PenState.READY
        assert live.sim.session.state is State.PAUSED
        page.click('button[data-action="abort"]')
        page.wait_for_selector("#confirm-dialog[open]")
        page.click("#confirm-no")
        time.sleep(0.2)
        assert live.sim.session.state is State.PAUSED
        page.click('button[data-action="abort"]')
        page.click("#confirm-yes")
        _wait(lambda: live.sim.session.state is State.ABORTED, 5.0)
        _until(page, "document.getElementById('state').textContent === 'ABORTED'")
    finally:
        _shot(page, tmp_path)
        live.close()


def test_dropped_connection_reconnects_and_says_so(page: Any, tmp_path: Path) -> None:
    live = Live(tmp_path, speed=1.0)
    try:
        page.goto(live.web.url)
        _until(page, "document.getElementById('conn').textContent === 'live'")
        port, hub = live.web.port, live.web.hub
        live.web.stop()  # the server goes away ...
        _until(page, "document.getElementById('conn').textContent.includes('lost')")
        live.web = start_web(  # ... and comes back on the same port
            live.sim.session, "127.0.0.1", port, TOKEN, zone_map=MAP, header=hub.header,
            db_path=live.sim.db_path, session_id=live.sim.session_id,
        )
        _until(page, "document.getElementById('conn').textContent === 'reconnected'")
        assert httpx.get(live.web.url + "api/state", timeout=5).status_code == 200
    finally:
        _shot(page, tmp_path)
        live.close()


def test_page_says_the_session_is_over_when_it_ends(page: Any, tmp_path: Path) -> None:
    live = Live(tmp_path, speed=1.0)
    try:
        page.goto(live.web.url)
        _until(page, "document.getElementById('state').textContent === 'STAMPING'")
        live.sim.session.request_stop("the test ended the session")
        assert live.sim.session.wait(10.0)
        live.web.stop()  # as devicectl run does once the session is over
        _until(page,
            "document.getElementById('conn').textContent.startsWith('session over')")
        assert page.inner_text("#state") == "ABORTED"
    finally:
        _shot(page, tmp_path)
        live.close()


def _buttons(page: Any) -> dict[str, bool]:
    """Each control's button: enabled?"""
    got: dict[str, bool] = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.buttons button')]"
        ".map((b) => [b.dataset.action, !b.disabled]))")
    return got


def test_controls_are_enabled_only_where_they_can_act(page: Any, tmp_path: Path) -> None:
    live = Live(tmp_path, speed=1.0)
    try:
        page.goto(live.web.url + "#token=" + TOKEN)
        _until(page, "document.getElementById('state').textContent === 'STAMPING'")
        _until(page, "!document.querySelector('button[data-action=pause]').disabled")
        assert _buttons(page) == {"pause": True, "resume": False, "next_zone": False,
                                  "clear_fault": False, "abort": True}
        page.click('button[data-action="pause"]')
        _until(page, "document.getElementById('state').textContent === 'PAUSED'")
        _until(page, "!document.querySelector('button[data-action=resume]').disabled")
        assert _buttons(page) == {"pause": False, "resume": True, "next_zone": False,
                                  "clear_fault": False, "abort": True}
        page.click('button[data-action="resume"]')
        _wait(lambda: live.sim.session.state is State.STAMPING, 5.0)
        live.sim.session.request_stop("the test ended the session")
        assert live.sim.session.wait(10.0)
        live.web.stop()
        _until(page,
            "document.getElementById('conn').textContent.startsWith('session over')")
        assert not any(_buttons(page).values())  # an ended session has nothing to control
    finally:
        _shot(page, tmp_path)
        live.close()


def test_the_token_is_taken_from_the_fragment_never_from_the_query(
    page: Any, tmp_path: Path
) -> None:
    live = Live(tmp_path, speed=1.0)
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(live.web.url + "?token=" + TOKEN)
        _until(page, "document.getElementById('state').textContent === 'STAMPING'")
        assert "token" not in page.url  # removed from the address bar ...
        assert page.is_disabled('button[data-action="pause"]')  # ... and not used
        assert page.is_visible("#readonly-note")
        page.fill("#token-input", "nön-ascii token")
        page.click("#token-form button")
        assert "not a session token" in page.inner_text("#token-error")
        assert page.is_disabled('button[data-action="pause"]')
        page.goto("about:blank")  # a fresh load: a fragment change alone reloads nothing
        requests.clear()
        page.goto(live.web.url + "#token=" + TOKEN)
        _until(page, "!document.querySelector('button[data-action=pause]').disabled")
        assert page.url == live.web.url
        assert not any(TOKEN in url for url in requests)  # the fragment never reached the server
    finally:
        _shot(page, tmp_path)
        live.close()


def test_the_page_runs_under_its_csp_and_draws_the_heat_map_and_favicon(
    page: Any, tmp_path: Path
) -> None:
    live = Live(tmp_path, speed=1.0)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    try:
        resp = page.goto(live.web.url)
        assert "default-src 'self'" in resp.headers["content-security-policy"]
        assert resp.headers["x-frame-options"] == "DENY"
        _until(page, "Number(document.getElementById('heat').dataset.treated) > 0")
        painted = page.evaluate("""() => {
            const c = document.getElementById('heat-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
            const box = document.getElementById('heat').getBoundingClientRect();
            return [n, box.width > 10 && box.height > 10]; }""")
        assert painted[0] > 0 and painted[1]
        icon = page.evaluate("fetch('/favicon.ico').then((r) => [r.status, "
                             "r.headers.get('content-type')])")
        assert icon[0] == 200 and icon[1].startswith("image/svg+xml")
        assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith(
            "/static/favicon.svg")
        assert not [m for m in console if "Content Security Policy" in m], console
    finally:
        _shot(page, tmp_path)
        live.close()


def test_monitor_of_an_ended_fault_session_says_ended_and_asks_no_token(
    page: Any, tmp_path: Path
) -> None:
    from devicectl.web.hub import EventFeed, Hub
    from devicectl.web.records_source import RecordsSource
    from devicectl.web.server import serve

    sim = sim_session(tmp_path / "s.db", scenario="overshoot")
    assert sim.session.wait(20.0)
    sim.finish()
    header = {"session_id": sim.session_id, "patient_ref": PATIENT, "profile": "web-test",
              "controls": False, "mode": "records"}
    hub = Hub(RecordsSource(sim.db_path, sim.session_id), MAP, header,
              events=EventFeed(sim.db_path, sim.session_id))
    web = serve(hub, "127.0.0.1", 0, token=None, submit=None)
    try:
        page.goto(web.url)
        _until(page, "document.getElementById('state').textContent === 'FAULT'")
        _until(page, "document.getElementById('conn').textContent.startsWith('session ended')")
        assert "live" not in page.inner_text("#conn")
        assert page.is_visible("#fault-banner")
        assert page.inner_text("#fault-banner").startswith("Ended after a fault")
        assert "OVERDEPTH" in page.inner_text("#fault-banner")
        assert page.is_hidden("#token-form")  # no token could ever be accepted here
        assert "token" not in page.inner_text("#readonly-note").lower()
        assert not any(_buttons(page).values())
    finally:
        _shot(page, tmp_path)
        web.stop()


def test_the_depth_chart_shows_the_cap_and_its_tolerance_band(page: Any, tmp_path: Path) -> None:
    from devicectl.safety import DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM

    live = Live(tmp_path, speed=1.0)
    try:
        page.goto(live.web.url)
        _until(page, "document.getElementById('depth-meas').getAttribute('points')")
        geo = page.evaluate("""() => {
            const n = (id, a) => Number(document.getElementById(id).getAttribute(a));
            const w = (id) => parseFloat(getComputedStyle(document.getElementById(id)).strokeWidth);
            return {cap: n('cap-line', 'y1'), limit: n('limit-line', 'y1'),
                    bandY: n('tol-band', 'y'), bandH: n('tol-band', 'height'),
                    cmdW: w('depth-cmd'), measW: w('depth-meas'),
                    texts: document.querySelectorAll('#depth text').length}; }""")
        # The band runs from the cap up to the limit (SVG y grows downwards).
        assert geo["limit"] < geo["cap"]
        assert geo["bandY"] == pytest.approx(geo["limit"], abs=0.2)
        assert geo["bandH"] == pytest.approx(geo["cap"] - geo["limit"], abs=0.2)
        assert geo["bandH"] > 2
        assert geo["texts"] == 0  # no label sitting on a line: the legend names them
        assert geo["cmdW"] > geo["measW"]  # commanded shows around measured where they agree
        legend = page.inner_text("#depth-legend")
        assert f"cap {DEPTH_CAP_UM / 1000:.2f} mm" in legend
        assert f"{OVERDEPTH_LIMIT_UM / 1000:.2f} mm" in legend and "tolerance" in legend
    finally:
        _shot(page, tmp_path)
        live.close()


def test_the_map_has_the_reports_colours_and_words_and_labels_inside_their_zones(
    page: Any, tmp_path: Path
) -> None:
    from devicectl.mapstyle import NOT_PLANNED_FILL, reached_colour
    from devicectl.store import Store, ZoneCoverage
    from devicectl.web.hub import EventFeed, Hub
    from devicectl.web.records_source import RecordsSource
    from devicectl.web.server import serve
    from devicectl.zones import load_zone_map

    db = tmp_path / "s.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref=PATIENT, profile_name="p", profile_hash="h",
                                   profile_text="", started_at="2026-03-01T09:00:00+00:00")
        store.save_coverage(sid, [
            ZoneCoverage(3, "vertex", 1500, 1000, 0.45, 0.9, 800, 0, False, 60.0),
            ZoneCoverage(2, "mid_scalp", 1500, 1000, 0.0, 0.9, 0, 0, False, 0.0),
        ], b"")
        store.close_session(sid, "aborted", "2026-03-01T09:10:00+00:00")
    zone_map = load_zone_map()  # the shipped map, with its long labels
    header = {"session_id": sid, "patient_ref": PATIENT, "profile": "p", "controls": False,
              "mode": "records"}
    web = serve(Hub(RecordsSource(db, sid), zone_map, header, events=EventFeed(db, sid)),
                "127.0.0.1", 0, token=None, submit=None)
    try:
        page.goto(web.url)
        _until(page, "document.getElementById('shade-3').dataset.fill")
        labels = page.evaluate("""() => [...document.querySelectorAll('#zones-svg text')].map(
            (t) => { const shape = document.getElementById('zone-' + t.dataset.zoneId);
                     const b = t.getBBox(); const pts = [[b.x, b.y], [b.x + b.width, b.y],
                       [b.x, b.y + b.height], [b.x + b.width, b.y + b.height]];
                     return {id: Number(t.dataset.zoneId), text: t.textContent,
                             words: t.querySelector('.words').textContent,
                             inside: pts.every(([x, y]) => shape.isPointInFill(new DOMPoint(x, y))),
                             fill: document.getElementById('shade-' + t.dataset.zoneId)
                                   .dataset.fill}; })""")
        assert len(labels) == len(zone_map.zones)
        by_id = {x["id"]: x for x in labels}
        for z in zone_map.zones:
            got = by_id[z.id]
            assert got["inside"], f"{z.label!r} crosses its zone's border"
            assert got["text"].replace(" ", "").startswith(z.label.replace(" ", ""))
        assert by_id[3]["words"] == "45 % of 90 %"
        assert by_id[3]["fill"] == reached_colour(0.5)
        assert by_id[2]["words"] == "0 % of 90 %" and by_id[2]["fill"] == reached_colour(0.0)
        assert by_id[4]["words"] == "not in the plan" and by_id[4]["fill"] == NOT_PLANNED_FILL
    finally:
        _shot(page, tmp_path)
        web.stop()
