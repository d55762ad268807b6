"""`devicectl sessions`: list the recorded sessions, show one (header, per-zone
results, event timeline), export one as JSON or its events as CSV.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from devicectl.chain import verify_session
from devicectl.commands import session_id, whole_number
from devicectl.commands.chain_cmd import add_verify
from devicectl.commands.patients_cmd import add_note_command
from devicectl.continuation import continued_by, continued_by_text
from devicectl.errors import DevicectlError, StoreError
from devicectl.eventkinds import (
    EventFilter,
    in_treatment_order,
    select_events,
    treatment_order,
    unknown_kinds_problem,
)
from devicectl.liveness import is_running
from devicectl.mapstyle import share_text
from devicectl.plain import plain
from devicectl.records_where import db_arg, default_db_path, resolve_db
from devicectl.report_content import cartridges_text, operators_text
from devicectl.store import EventRecord, SessionRecord, Store, parse_wall

#: How many of the sessions it lists `sessions list` checks against their hash chain.
LIST_VERIFIED: Final = 10
CSV_COLUMNS = ("t_us", "since_start_s", "wall", "kind", "zone_id", "safety", "text", "data")

EXPORT_HELP = (
    "json: one JSON document {session, zones, events} with the profile text, for archives"
    " and other programs; csv: the event log only, one header row then one row per event"
    f" ({', '.join(CSV_COLUMNS)}; data as JSON), for spreadsheets."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sessions",
        help="list, show, export and report recorded sessions",
        description="Read the session records (append-only; nothing here changes them).",
    )
    sub = parser.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--db",
            type=db_arg,
            default=None,
            metavar="PATH|URL",
            help="records: an SQLite file or the clinic's postgresql:// URL (default "
            f"$DEVICECTL_DB, else {default_db_path()})",
        )
        return p

    list_p = with_db(sub.add_parser("list", help="recent sessions, newest first"))
    list_p.add_argument("--limit", type=whole_number, default=50, help="how many (default 50)")
    list_p.set_defaults(func=list_sessions)

    show_p = with_db(
        sub.add_parser(
            "show", help="one session: header, per-zone results, event timeline",
            description="The session's header, zones and events. Routine events (commands "
            "sent, coverage holds and resumes, contact made/lost, SAMPLE) are counted, not "
            "listed, unless --kind asks for them.")
    )
    show_p.add_argument("id", type=session_id, metavar="ID",
                        help="session id (see `sessions list`)")
    show_p.add_argument("--kind", action="append", metavar="KIND[,KIND]",
                        help="only these event kinds (e.g. ESTOP,PEN_FAULT; `all` for every "
                        "event; default: all but the routine ones)")
    show_p.add_argument("--since", metavar="[MM:]SS", type=_session_seconds,
                        help="only events from this far into the session (default: from "
                        "its start)")
    show_p.add_argument("--json", action="store_true",
                        help="print one JSON document {session, zones, events, hidden, "
                        "verify_problem (null when the hash chain holds)} "
                        "instead of tables")
    show_p.set_defaults(func=show_session)

    frames_p = with_db(
        sub.add_parser(
            "frames",
            help="the flight recorder's frames of one session, one JSON object a line",
            description="Print the frames the flight recorder kept (the last 10 s on the wire, "
            "both ways, at each emergency stop, pen fault and bad end), decoded as "
            "`devicectl wire decode` prints them, with \"recording\" (1, 2, …), its "
            "\"trigger\", \"dir\" (tx: host to pen, rx: pen to host) and \"host_t_us\" "
            "(the host's session time, µs; a TELEMETRY keeps its own t_us, the pen's) added.",
        )
    )
    frames_p.add_argument("id", type=session_id, metavar="ID",
                          help="session id (see `sessions list`)")
    frames_p.add_argument("--recording", type=int, default=None, metavar="N",
                          help="only the Nth recording (default: all, in order)")
    frames_p.set_defaults(func=print_frames)

    export_p = with_db(
        sub.add_parser(
            "export",
            help="one session as JSON, or its events as CSV",
            description=f"Export a session. {EXPORT_HELP}",
        )
    )
    export_p.add_argument("id", type=session_id, metavar="ID",
                          help="session id (see `sessions list`)")
    export_p.add_argument("--format", choices=("json", "csv"), default="json", help=EXPORT_HELP)
    export_p.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="write here instead of stdout"
    )
    export_p.set_defaults(func=export_session)

    report_p = with_db(
        sub.add_parser(
            "report",
            help="one session as an HTML report with PNG figures and a PDF",
            description="Write a self-contained HTML report, its figures (PNG) and a PDF of "
            "one session (completed, aborted or interrupted) for the patient's record.",
        )
    )
    report_p.add_argument("id", type=session_id, metavar="ID",
                          help="session id (see `sessions list`)")
    report_p.add_argument("--out", type=Path, default=None, metavar="DIR",
                          help="folder for the files (default session-ID-report)")
    report_p.set_defaults(func=report_session)
    add_verify(sub, with_db)
    add_note_command(sub, with_db)


def _db(args: argparse.Namespace) -> Path | str:
    return resolve_db(args.db)


def _running(path: Path | str, session_id: int) -> bool:
    """A session's lock: beside an SQLite file, the server's on the clinic's (liveness.py)."""
    return is_running(path, session_id)


def _open_existing(path: Path | str, session_id: int) -> Store:
    if isinstance(path, Path) and not path.exists():
        raise StoreError(f"no session {session_id} in {path}: no records yet there")
    return Store(path, create=False, read_only=True)


def outcome_text(outcome: str | None, *, running: bool = False) -> str:
    """A session without an outcome is running (its process holds its lock,
    devicectl/liveness.py) or interrupted (resumable)."""
    if outcome is not None:
        return outcome
    return "running" if running else "interrupted"


def list_sessions(args: argparse.Namespace) -> int:
    path = _db(args)
    console = Console()
    if isinstance(path, Path) and not path.exists():
        console.print(f"no records yet at {path}", markup=False, highlight=False)
        return 0
    with Store(path, create=False, read_only=True) as store:
        records = store.sessions(limit=args.limit)
        where = store.path
        live = store.running_ids([r.id for r in records if r.outcome is None])
        # as the report and `sessions show`: records that fail verify are said first; the
        # newest LIST_VERIFIED only (a 30-minute session's 12,000 events take ~60 ms)
        broken = {r.id for r in records[:LIST_VERIFIED]
                  if verify_session(store.conn, r.id).problem is not None}
    if not records:
        console.print(f"no records yet at {where}", markup=False, highlight=False)
        return 0
    table = Table(title=plain(f"sessions in {where}"))
    for name in ("id", "started", "patient ref", "profile", "outcome", "zones done"):
        table.add_column(name, justify="right" if name == "id" else "left", overflow="fold")
    for rec in records:
        done = sum(1 for z in rec.zones if z.done)
        outcome = outcome_text(rec.outcome, running=rec.id in live)
        if rec.id in broken:
            outcome += " — RECORDS FAIL VERIFICATION"
        table.add_row(*(plain(cell) for cell in (
            rec.id, rec.started_at, rec.patient_ref, rec.profile_name, outcome,
            f"{done}/{len(rec.zones)}",
        )))
    if broken:
        ids = ", ".join(str(i) for i in sorted(broken))
        console.print(plain(f"RECORDS FAIL VERIFICATION for session(s) {ids} "
                            "(devicectl sessions verify ID says why)", "bold white on red"),
                      soft_wrap=True)
    console.print(table)
    if len(records) > LIST_VERIFIED:
        console.print(f"(the newest {LIST_VERIFIED} checked against their hash chain here; "
                      "`devicectl sessions verify` checks every session)", style="dim",
                      markup=False, highlight=False)
    _unsaved_note(console, path)
    return 0


def _unsaved_note(console: Console, db: Path | str) -> None:
    """In red, when records of this database wait in its unsaved file."""
    from devicectl.unsaved import not_yet_replayed

    note = not_yet_replayed(db)
    if note is not None:
        console.print(plain(note, "bold red"), soft_wrap=True)


def _since_start(rec: SessionRecord, event: EventRecord) -> float | None:
    # Wall time, not t_us: a resumed session restarts the monotonic clock.
    try:
        return (parse_wall(event.wall) - parse_wall(rec.started_at)).total_seconds()
    except StoreError:
        return None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    sign = "-" if seconds < 0 else ""
    minutes, secs = divmod(abs(seconds), 60.0)
    return f"{sign}{int(minutes):02d}:{secs:06.3f}"


def _fw(fw_version: int | None) -> str:
    return "?" if fw_version is None else f"{fw_version >> 8}.{fw_version & 0xFF}"


def _session_seconds(text: str) -> float:
    """'90', '1:30' or '01:30.5': seconds into the session."""
    try:
        minutes, _, seconds = text.rpartition(":")
        value = float(seconds) + 60 * (int(minutes) if minutes else 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time into the session; give seconds (90) or MM:SS (1:30)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is before the session's start")
    return value


#: Above this many events, the timeline is printed as plain lines (a table of
#: thousands of rows takes rich seconds to lay out).
TABLE_ROWS_MAX = 500


def show_session(args: argparse.Namespace) -> int:
    path = _db(args)
    with _open_existing(path, args.id) as store:
        rec = store.session(args.id)
        since = getattr(args, "since", None)
        since_wall = None
        if since is not None:
            since_wall = (parse_wall(rec.started_at) + timedelta(seconds=since)).isoformat()
        flt = EventFilter.parse(getattr(args, "kind", None), since_wall)
        problem = unknown_kinds_problem(store.conn, flt)
        if problem is not None:
            raise DevicectlError(problem)
        selection = select_events(store.conn, args.id, flt)
        order = treatment_order(store.conn, args.id)
        chain = verify_session(store.conn, args.id)
        fitted = select_events(store.conn, args.id,
                               EventFilter.parse(["DEVICE,OPERATOR"], None)).events
        cartridges = cartridges_text(rec, fitted)
        operators = operators_text(rec, fitted)
        successor = continued_by(store.conn, args.id)
    events = selection.events
    running = rec.outcome is None and _running(path, rec.id)
    if getattr(args, "json", False):
        document = json.loads(export_json(rec, events))
        document["session"]["status"] = outcome_text(rec.outcome, running=running)
        document["hidden"] = selection.hidden
        document["verify_problem"] = chain.problem  # None: the chain holds
        print(json.dumps(document, indent=2, default=str, ensure_ascii=False))
        return 0
    console = Console()
    if chain.problem is not None:  # first: nothing below can be taken as what happened
        console.print(plain(f"RECORDS FAIL VERIFICATION (devicectl sessions verify {rec.id}): "
                            f"{chain.problem}", "bold white on red"), soft_wrap=True)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    serial = "?" if rec.device_serial is None else str(rec.device_serial)
    for name, value in (
        ("session", rec.id),
        ("patient ref", rec.patient_ref),
        ("operator", operators or "?"),
        ("profile", f"{rec.profile_name} ({rec.profile_hash[:12]})"),
        ("pen", f"serial {serial}, firmware {_fw(rec.fw_version)}"),
        ("cartridge", cartridges),
        ("position", rec.position_mode or "?"),
        ("started", rec.started_at),
        ("ended", rec.ended_at or "-"),
        ("outcome", outcome_text(rec.outcome, running=running)),
        *((("continued by", continued_by_text(successor)),) if successor is not None else ()),
    ):
        head.add_row(name, plain(value))
    console.print(head)

    zones = Table(title="zones")
    for name in ("zone", "depth mm", "rate Hz", "coverage", "strokes", "time", "cells at max"):
        zones.add_column(name, justify="left" if name == "zone" else "right", overflow="fold")
    for z in in_treatment_order(rec.zones, order):  # as treated, not alphabetically
        zones.add_row(
            plain(z.name + (" ✓" if z.done else "")),
            f"{z.depth_um / 1000:.2f}",
            f"{z.rate_dhz / 10:.1f}",
            f"{share_text(z.fraction, z.target_fraction)}% / {z.target_fraction * 100:.0f}%",
            str(z.strokes),
            _clock(z.seconds),
            str(z.cells_at_max),
        )
    console.print(zones)

    if len(events) > TABLE_ROWS_MAX:
        console.print("events", markup=False, highlight=False)
        for e in events:
            zone = "" if e.zone_id is None else str(e.zone_id)
            kind = e.kind + (" !" if e.safety else "")
            console.print(plain(f"{_clock(_since_start(rec, e))}  {kind:<18} {zone:>4}  {e.text}"),
                          soft_wrap=True)
    else:
        timeline = Table(title="events")
        for name in ("time", "kind", "zone", "text"):
            timeline.add_column(name, overflow="fold")
        for e in events:
            timeline.add_row(
                _clock(_since_start(rec, e)),
                plain(e.kind + (" !" if e.safety else "")),
                "" if e.zone_id is None else str(e.zone_id),
                plain(e.text),
            )
        console.print(timeline)
    if not events:
        console.print("no events match", markup=False, highlight=False)
    if selection.hidden:
        counts = ", ".join(f"{k} {n:,}" for k, n in sorted(selection.hidden.items(),
                                                          key=lambda kv: -kv[1]))
        console.print(f"{sum(selection.hidden.values()):,} events not listed ({counts}); "
                      f"--kind all lists every event", markup=False, highlight=False)
    _unsaved_note(console, path)
    return 0


def frame_lines(events: list[EventRecord], only: int | None = None) -> list[str]:
    """The FLIGHT events' frames as JSON lines (see `sessions frames`)."""
    from devicectl.columnar import decode_recorded
    from devicectl.flight import DIRECTIONS, SLOT_BYTES, unpack

    recordings = [e for e in events if e.kind == "FLIGHT"]
    out: list[str] = []
    for number, e in enumerate(recordings, start=1):
        if only is not None and number != only:
            continue
        try:
            frames = unpack(str(e.data.get("frames", "")))
        except ValueError as exc:
            raise StoreError(f"recording {number} ({e.wall}) is damaged: {exc}") from exc
        head = {"recording": number, "trigger": e.data.get("trigger")}
        # all the recording's frames at once, by columns (same objects as frame by frame)
        per_frame = decode_recorded([f.raw for f in frames])
        for f, columnar_events in zip(frames, per_frame, strict=True):
            where = {"dir": DIRECTIONS[f.direction], "host_t_us": f.t_us}
            if f.length > SLOT_BYTES:
                decoded = [{"discarded": "too_long", "length": f.length}]
            else:
                decoded = columnar_events
            for d in decoded:
                out.append(json.dumps(head | where | d | {"hex": f.raw.hex(" ")}))
    return out


def print_frames(args: argparse.Namespace) -> int:
    with _open_existing(_db(args), args.id) as store:
        events = store.events(args.id)
    count = sum(1 for e in events if e.kind == "FLIGHT")
    if args.recording is not None and not 1 <= args.recording <= count:
        raise StoreError(f"session {args.id} has {count} flight recordings; "
                         f"--recording {args.recording} is not one of them")
    lines = frame_lines(events, args.recording)
    if not count:
        print(f"session {args.id} has no flight recording (kept at an emergency stop, a pen "
              "fault, or an end in fault or link lost)", file=sys.stderr)
    for line in lines:
        print(line)
    return 0


def export_json(
    rec: SessionRecord, events: list[EventRecord], coverage: bytes | None = None
) -> str:
    from devicectl.dose import zones_with_dose

    session: dict[str, Any] = asdict(rec)
    # each zone's dose measures, computed from the saved grid (dose.zone_dose_stats)
    zones = zones_with_dose(session.pop("zones"), coverage)
    document = {
        "session": session,
        "zones": zones,
        "events": [asdict(e) | {"data": dict(e.data)} for e in events],
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def export_csv(rec: SessionRecord, events: list[EventRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in events:
        since = _since_start(rec, e)
        writer.writerow(
            (
                e.t_us,
                "" if since is None else f"{since:.3f}",
                e.wall,
                e.kind,
                "" if e.zone_id is None else e.zone_id,
                int(e.safety),
                e.text,
                json.dumps(dict(e.data), default=str, separators=(",", ":")),
            )
        )
    return out.getvalue()


def export_session(args: argparse.Namespace) -> int:
    with _open_existing(_db(args), args.id) as store:
        rec = store.session(args.id)
        events = store.events(args.id)
        coverage = store.coverage_state(args.id)
    text = (
        export_json(rec, events, coverage) if args.format == "json" else export_csv(rec, events)
    )
    out: Path | None = args.out
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DevicectlError(f"cannot write the export to {out}: {exc.strerror}") from exc
    return 0


def report_session(args: argparse.Namespace) -> int:
    from devicectl.report import write_report  # matplotlib loads only for reports

    out: Path = args.out if args.out is not None else Path(f"session-{args.id}-report")
    files = write_report(_db(args), args.id, out)
    print(f"report: {files.html}")
    print(f"pdf: {files.pdf}")
    for fig in files.figures:
        print(f"figure: {fig}")
    return 0
