"""What `devicectl run` prints besides the live view: --quiet, --json, event lines
and progress (devicectl/monitor/progress.py), the live page's address, the records banner."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.text import Text

from devicectl.errors import DevicectlError
from devicectl.monitor.progress import (
    Pace,
    event_record,
    progress_line,
    progress_record,
)
from devicectl.monitor.terminal import event_line, is_chatty
from devicectl.plain import plain
from devicectl.snapshot import Watched
from devicectl.transitions import ControlEvent
from devicectl.zones import ZoneMap


def output_args(p: Any) -> None:
    """--quiet and --json: what a script reads (no live view with either)."""
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only refusals, errors and the outcome line (no live view)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a line on stdout: the session, each event, progress "
                   "every 5 s of session time, the end; other text goes to stderr")


def always(console: Console, text: Text | str) -> None:
    """Printed even with --quiet: refusals, errors and the outcome line."""
    quiet, console.quiet = console.quiet, False
    try:
        console.print(text, highlight=False, soft_wrap=True)
    finally:
        console.quiet = quiet


def json_line(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()




class RecordsReport(Protocol):
    """What became of a session's records: penproc.EndReport (RecordWriter's fields)."""

    @property
    def path(self) -> Any: ...
    @property
    def failure(self) -> str | None: ...
    @property
    def unsaved_path(self) -> Any: ...
    @property
    def unsaved_count(self) -> int: ...
    @property
    def unwritten(self) -> Any: ...
    def status_line(self) -> str | None: ...


def records_banner(console: Console, writer: RecordsReport) -> None:
    """When the records failed: in red, where they went and how to put them back;
    the lines that could not be written anywhere go to stderr, to be saved by hand."""
    line = writer.status_line()  # with a server's reconnection, how it went
    if line is None:
        return
    always(console, plain(line, "bold white on red"))
    if writer.unsaved_count:
        always(console, plain(
            f"the records not saved in {writer.path} are in {writer.unsaved_path}; once the "
            f"database can be written: devicectl records replay {writer.unsaved_path}",
            "bold red"))
    if writer.unwritten:
        always(console, Text(
            f"{len(writer.unwritten)} records could not be written anywhere; they follow on "
            "stderr as JSON lines: save them to a file and run devicectl records replay FILE",
            style="bold red"))
        for line in writer.unwritten:
            print(line, file=sys.stderr)


def start_web_page(console: Console, args: argparse.Namespace, session: Watched,
                   zone_map: ZoneMap, setup: Any, db_path: Path | str | None) -> Any:
    """The live page, if asked for; the session runs on without it if it cannot start."""
    if not getattr(args, "web", False):
        return None
    from devicectl.web.server import start_web

    token = secrets.token_urlsafe(16)
    header = {"session_id": setup.session_id, "patient_ref": setup.patient,
              "profile": setup.loaded.profile.name}
    try:
        web = start_web(session, args.web_host, args.web_port, token, zone_map=zone_map,
                        header=header, db_path=db_path, session_id=setup.session_id)
    except DevicectlError as exc:
        console.print(Text.assemble(("web page not started: ", "yellow"), plain(exc)))
        return None
    # The token rides in the fragment, which the browser never sends to a server.
    console.print(f"web page: {web.url}#token={token} (with controls) · {web.url} (read-only)"
                  f" · session token {token}", markup=False, highlight=False, soft_wrap=True)
    return web


class Feed:
    """The plain output: event lines (or JSON records), a progress line for each
    status the session keeps every 4.5 s of session time (Session.drain_progress),
    and a note when a virtual session falls behind its --speed (monitor/progress.py)."""

    def __init__(self, console: Console, as_json: bool, zone_map: ZoneMap,
                 pace: Pace | None = None, wall0: float | None = None) -> None:
        self.console = console
        self.as_json = as_json
        self.pace = pace if pace is not None else Pace(0.0)  # 0: never "behind"
        self.wall0 = wall0 if wall0 is not None else time.monotonic()
        self.areas_mm2 = {z.id: z.area_mm2 for z in zone_map.zones}
        #: each zone's one name (the map's label), as the live view and the page show it
        self.zone_names = {z.id: z.label for z in zone_map.zones}
        self.footprint_mm = 0.0
        self._records: str | None = None  # the records' trouble as last shown

    def event(self, e: Any, t0_us: int) -> None:
        if self.as_json:
            json_line(event_record(e, t0_us))
        elif not is_chatty(e):
            self.console.print(Text(event_line(e, t0_us, self.zone_names),
                                    style="red" if e.safety else ""),
                               highlight=False, soft_wrap=True)

    def print_new(self, session: Watched) -> None:
        """This pass's events and progress lines, printed in session-time order (a
        fast virtual session can bring a zone's last progress and its ZONE_DONE in
        one pass: the progress line must not come after the zone is done)."""
        self._pace(session)
        t0_us = session.snapshot.t0_us
        records = session.snapshot.status.get("records_failure")
        if records and records != self._records:  # failed, reconnecting, back: each once
            self._records = records
            if self.as_json:
                json_line({"type": "records", "text": records})
            else:
                self.console.print(Text(f"RECORDS: {records}", style="bold red"),
                                   highlight=False, soft_wrap=True)
        timed: list[tuple[int, int, ControlEvent | dict[str, Any]]] = [
            (e.t_us, 0, e) for e in session.drain_events()]
        timed += [(now_us, 1, status) for now_us, status in session.drain_progress()]
        for now_us, _, item in sorted(timed, key=lambda i: i[:2]):
            if isinstance(item, ControlEvent):
                self.event(item, t0_us)
                continue
            record = progress_record(item, (now_us - t0_us) / 1e6,
                                     areas_mm2=self.areas_mm2, footprint_mm=self.footprint_mm)
            if record is None:
                continue
            record["zone"] = self.zone_names.get(record["zone_id"], record["zone"])
            if self.as_json:
                json_line(record)
            else:
                self.console.print(Text(progress_line(record)), highlight=False,
                                   soft_wrap=True)

    def _pace(self, session: Watched) -> None:
        snap = session.snapshot
        t_s = snap.elapsed_s
        remaining_s = float(snap.status.get("remaining_s_est") or 0.0)
        behind = self.pace.check(t_s, time.monotonic() - self.wall0, remaining_s)
        if behind and self.as_json:
            json_line({"type": "pace", "t_s": round(t_s, 3), "text": behind})
        elif behind:
            self.console.print(Text(behind, style="yellow"), highlight=False, soft_wrap=True)
