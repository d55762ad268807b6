"""The clinic view (`devicectl monitor --db postgresql://…`) over a real server
and a real session running in its own process (`devicectl run --sim --room`):
the page lists it while it runs (room, operator, patient, state, zone, %), links
to its page, answers only GETs and only to its own Host, and lets it go when it
ends. In Chromium too, where one is installed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from clinic_support import GATE
from test_clinic_run import DEVICECTL, SHORT

from devicectl.cli import main
from devicectl.clinic import zone_labels
from devicectl.commands.monitor_cmd import monitor
from devicectl.store import Store
from devicectl.web.clinic_page import ClinicPage
from devicectl.zones import load_zone_map

CHROMIUM = Path("/usr/bin/chromium")


def until(cond: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    end = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def clinic_url(pg_server: Any) -> str:
    url = str(pg_server.new_database())
    Store(url).close()
    return url


@pytest.fixture(scope="module")
def running_room(clinic_url: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[subprocess.Popen[str]]:
    """A session running in room-5, in real time (it lasts seconds), in its own
    process; the last test of the module stops it."""
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path_factory.mktemp("room")))
    proc = subprocess.Popen(
        [*DEVICECTL, "run", "--profile", str(SHORT), "--patient", "P-55", "--sim", "--yes",
         "--speed", "0.25", "--seed", "55", "--room", "room-5", "--db", clinic_url, *GATE],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


@pytest.fixture(scope="module")
def page(clinic_url: str) -> Iterator[ClinicPage]:
    p = ClinicPage(clinic_url, "127.0.0.1", 0, zone_labels(load_zone_map())).start()
    try:
        yield p
    finally:
        p.stop()


def _live(page: ClinicPage) -> list[dict[str, Any]]:
    answer = httpx.get(f"{page.url}api/sessions", timeout=10)
    assert answer.status_code == 200
    return list(answer.json()["sessions"])


@pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                    reason="no Chromium at /usr/bin/chromium (apt-get install chromium)")
def test_the_clinic_page_in_chromium_follows_the_link_to_the_session(
    page: ClinicPage, running_room: subprocess.Popen[str]
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    until(lambda: [s for s in _live(page) if s["state"] == "STAMPING"], "a live session")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"], timeout=15_000)
        try:
            tab = browser.new_page()
            errors: list[str] = []
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.goto(page.url)
            row = tab.locator("tr", has_text="room-5")
            assert "P-55" in row.inner_text() and "STAMPING" in row.inner_text()
            row.locator("a").click()
            tab.wait_for_url("**/session/*")
            assert "room room-5" in tab.inner_text("body")
            assert errors == []  # the CSP let the stylesheet in, nothing was refused
        finally:
            browser.close()


def test_the_clinic_page_lists_a_running_session_links_to_it_and_lets_it_go(
    page: ClinicPage, running_room: subprocess.Popen[str]
) -> None:
    stamping = until(lambda: [s for s in _live(page) if s["state"] == "STAMPING"],
                     "the room's session stamping on the clinic page")
    [s] = stamping
    assert (s["room"], s["operator"], s["patient_ref"]) == ("room-5", "OP-TEST", "P-55")
    assert s["zone"] == "Frontal (hairline band)" and 0 <= s["percent"] <= 100
    index = httpx.get(page.url, timeout=10)
    assert index.status_code == 200 and "room-5" in index.text and "P-55" in index.text
    assert f'href=/session/{s["session_id"]}' in index.text
    assert index.headers["x-frame-options"] == "DENY"
    one = httpx.get(f"{page.url}session/{s['session_id']}", timeout=10)
    assert one.status_code == 200 and "room room-5" in one.text and "ZONE_STARTED" in one.text
    # Read-only, and only for its own address.
    assert httpx.post(page.url, timeout=10).status_code == 405
    assert httpx.get(page.url, headers={"host": "evil.example"}, timeout=10).status_code == 400
    assert httpx.get(f"{page.url}session/9999", timeout=10).status_code == 404
    running_room.send_signal(signal.SIGTERM)  # the room stops: the clinic page lets it go
    running_room.communicate(timeout=60)
    until(lambda: _live(page) == [] or None, "the ended session to leave the clinic page")
    assert "no session is running" in httpx.get(page.url, timeout=10).text
    ended = httpx.get(f"{page.url}session/{s['session_id']}", timeout=10)
    assert "ABORTED" in ended.text  # its page stays, with the outcome


def test_monitor_serves_the_clinic_view_on_localhost_until_stopped(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    stop = threading.Event()
    args = argparse.Namespace(db=pg_url, session=None, web_port=0, web_host="127.0.0.1")
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(monitor(args, stop)))
    thread.start()
    try:
        line = until(lambda: capsys.readouterr().out, "the clinic view's address")
    finally:
        stop.set()
        thread.join(10)
    assert done == [0]
    assert "http://127.0.0.1:" in line and "read-only" in line and "postgres@" not in line


def test_monitor_on_an_unreachable_server_or_unknown_session_is_one_sentence(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", "--db", "postgresql://clinic:pw@127.0.0.1:1/records"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the records server postgresql://127.0.0.1:1/records" in err
    assert "pw@" not in err and "Traceback" not in err
    assert main(["monitor", "--db", pg_url, "--session", "42"]) == 1
    assert "no session 42" in capsys.readouterr().err
