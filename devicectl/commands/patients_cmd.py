"""`devicectl patients list|show REF`: each patient's sessions with zones, depths,
dose, interval status, adverse events and notes; and `devicectl sessions note`,
which adds a note or an adverse event to a session, also after it ended.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from devicectl.commands import session_id, utf8_text
from devicectl.commands.checklist_cmd import staff_id
from devicectl.errors import DevicectlError, StoreError
from devicectl.eventkinds import EventFilter, select_events
from devicectl.mapstyle import share_text
from devicectl.notes import ADVERSE_KINDS, Note, add_note, notes_of
from devicectl.patients import patient_ref
from devicectl.plain import plain
from devicectl.records_where import db_arg, default_db_path, resolve_db
from devicectl.report_content import continued_id
from devicectl.safety import INTERVAL_DEPTH_UM
from devicectl.safety_gonogo import ZoneInterval, zone_interval_days
from devicectl.store import SessionRecord, Store, parse_wall

Parser = argparse.ArgumentParser
#: Enough for any clinic's records: `patients` reads them all.
ALL_SESSIONS = 1_000_000


def register(sub: Any) -> None:
    p = sub.add_parser("patients", help="each patient's sessions, intervals and adverse events",
                       description="Read the records by patient (nothing here changes them).")
    actions = p.add_subparsers(dest="patients_command", required=True, metavar="ACTION")

    def with_db(q: Parser) -> Parser:
        q.add_argument("--db", type=db_arg, default=None, metavar="PATH|URL",
                       help="records: an SQLite file or the clinic's postgresql:// URL "
                       f"(default $DEVICECTL_DB, else {default_db_path()})")
        return q

    with_db(actions.add_parser("list", help="every patient: sessions, last one, adverse events")
            ).set_defaults(func=list_patients)
    show = with_db(actions.add_parser(
        "show", help="one patient's sessions: zones, depths, dose, interval status, adverse "
        "events and notes"))
    show.add_argument("ref", metavar="REF", help="the patient's reference (any case)")
    show.set_defaults(func=show_patient)


def add_note_command(sub: Any, with_db: Callable[[Parser], Parser]) -> None:
    """`sessions note ID --text ... [--adverse KIND] [--by ID]` (registered by sessions_cmd)."""
    p = with_db(sub.add_parser(
        "note",
        help="add a note or an adverse event to a session (also after it ended)",
        description="Append a note to a session's record; with --adverse it is an adverse "
        f"event of that kind ({', '.join(ADVERSE_KINDS)}). Notes are append-only and "
        "hash-chained like the events.",
    ))
    p.add_argument("id", type=session_id, metavar="ID", help="session id (see `sessions list`)")
    p.add_argument("--text", type=utf8_text, required=True, help="what happened, in words")
    p.add_argument("--adverse", type=utf8_text, metavar="KIND",
                   help=f"an adverse event: {', '.join(ADVERSE_KINDS)}")
    p.add_argument("--by", type=utf8_text, metavar="ID", help="who records it (recorded)")
    p.set_defaults(func=note_session)


def _db(args: argparse.Namespace) -> Path | str:
    """The records: an SQLite file that must exist, or the clinic's server."""
    path = resolve_db(args.db)
    if isinstance(path, Path) and not path.exists():
        raise StoreError(f"no records at {path}")
    return path


def note_session(args: argparse.Namespace) -> int:
    by = (args.by or "").strip()  # an ID, as the operator's is (none given: none recorded)
    author = staff_id(by, "--by", "who records the note") if by else None
    with Store(_db(args), create=False) as store:
        note = add_note(store.conn, args.id,
                        wall=datetime.now(UTC).isoformat(timespec="milliseconds"),
                        text=args.text, adverse=args.adverse, author=author,
                        where=store.path)
    print(f"session {note.session_id}: {note.label} recorded (note {note.id})")
    return 0


@dataclass
class _Patient:
    ref: str
    sessions: list[SessionRecord]
    notes: dict[int, list[Note]]
    #: the sessions without an outcome whose run holds their lock now (liveness.py)
    running: frozenset[int] = frozenset()
    #: session id -> the session it continues (a new session after a lost link)
    continues: dict[int, int] = field(default_factory=dict)

    @property
    def adverse(self) -> list[Note]:
        return [n for s in self.sessions for n in self.notes[s.id] if n.adverse_kind]

    def outcome(self, rec: SessionRecord) -> str:
        """Running or interrupted, for a session without an outcome."""
        return rec.outcome or ("running" if rec.id in self.running else "interrupted")


def _patients(path: Path | str) -> tuple[str, dict[str, _Patient]]:
    """Where the records are (for messages: a URL without its password) and each
    patient's sessions with their notes."""
    with Store(path, create=False, read_only=True) as store:
        records = sorted(store.sessions(limit=ALL_SESSIONS), key=lambda r: r.id)
        notes = notes_of(store.conn, [r.id for r in records])
        live = store.running_ids([r.id for r in records if r.outcome is None])
        flt = EventFilter.parse(["CONTINUES"], None)
        continues = {r.id: c for r in records if (c := continued_id(
            select_events(store.conn, r.id, flt).events)) is not None}
        where = str(store.path)
    out: dict[str, _Patient] = {}
    for rec in records:
        ref = rec.patient_ref.strip().upper()
        out.setdefault(ref, _Patient(ref, [], notes, live, continues)).sessions.append(rec)
    return where, out


def list_patients(args: argparse.Namespace) -> int:
    path, patients = _patients(_db(args))
    console = Console()
    if not patients:
        console.print(f"no sessions yet in {path}", markup=False, highlight=False)
        return 0
    table = Table(title=plain(f"patients in {path}"))
    for col in ("patient ref", "sessions", "first", "last", "last outcome", "adverse events"):
        table.add_column(col, overflow="fold")
    for p in sorted(patients.values(), key=lambda p: p.ref):
        last = p.sessions[-1]
        table.add_row(plain(p.ref), str(len(p.sessions)), p.sessions[0].started_at[:10],
                      last.started_at[:10], p.outcome(last), str(len(p.adverse)))
    console.print(table)
    return 0


def show_patient(args: argparse.Namespace) -> int:
    ref = patient_ref(args.ref)
    db = _db(args)
    path, patients = _patients(db)
    patient = patients.get(ref)
    if patient is None:
        raise DevicectlError(f"no sessions of patient {ref} in {path}; `devicectl patients "
                             "list` shows them")
    console = Console()
    console.print(plain(f"patient {ref} · {len(patient.sessions)} sessions · "
                       f"{len(patient.adverse)} adverse events", "bold"))
    for rec in patient.sessions:
        _show_session(console, rec, patient.notes[rec.id], patient.outcome(rec),
                      patient.continues.get(rec.id))
    spills, lasts = _interval_facts(db, patient.sessions)
    console.print(_interval_table(patient.sessions, spills, lasts))
    return 0


def _interval_facts(
    db: Path | str, sessions: list[SessionRecord]
) -> tuple[dict[int, dict[str, int]], dict[int, str]]:
    """Per session id, what the go/no-go reads too: the zones its footprint spilled onto
    (from its saved grid) with the deepest treatment that spilled, and, for one without
    an end (interrupted), its last record's time."""
    from devicectl.store import zone_spill_of
    from devicectl.zones import load_zone_map

    names = {z.id: z.name for z in load_zone_map().zones}
    with Store(db, create=False) as store:
        spills = {rec.id: {names[zid]: depth_um
                           for zid, (cm2, depth_um) in zone_spill_of(store, rec.id).items()
                           if zid in names and cm2 > 0 and depth_um > 0}
                  for rec in sessions}
        lasts = {rec.id: max((e.wall for e in events), key=parse_wall) for rec in sessions
                 if rec.ended_at is None and (events := store.events(rec.id))}
    return spills, lasts


def _show_session(console: Console, rec: SessionRecord, notes: list[Note],
                  outcome: str, continues: int | None = None) -> None:
    head = (f"session {rec.id} · {rec.started_at} · {rec.profile_name} "
            f"({rec.profile_hash[:12]}) · {outcome} · operator "
            f"{rec.operator or '?'}")
    if continues is not None:
        head += f" · continues session {continues}: its strokes are included here"
    table = Table(title=plain(head), title_justify="left")
    for col in ("zone", "depth mm", "rate Hz", "coverage", "strokes", "cells at max", "done"):
        table.add_column(col, justify="left" if col == "zone" else "right")
    for z in rec.zones:
        table.add_row(plain(z.name), f"{z.depth_um / 1000:.2f}", f"{z.rate_dhz / 10:g}",
                      f"{share_text(z.fraction, z.target_fraction)} % / "
                      f"{100 * z.target_fraction:.0f} %",
                      str(z.strokes), str(z.cells_at_max), "yes" if z.done else "no")
    console.print(table)
    for n in notes:
        by = f" by {n.author}" if n.author else ""
        style = "bold red" if n.adverse_kind else ""
        console.print(plain(f"  {n.wall} {n.label}{by}: {n.text}", style), soft_wrap=True)


def _profile_interval(rec: SessionRecord) -> int | None:
    from devicectl.profile import load_profile_text

    try:
        return load_profile_text(rec.profile_text, f"session {rec.id}").profile.min_interval_days
    except DevicectlError:
        return None


def _interval_table(sessions: list[SessionRecord],
                    spills: Mapping[int, Mapping[str, int]] | None = None,
                    lasts: Mapping[int, str] | None = None) -> Table:
    """Per zone: the last session that stamped it or spilled onto it (`spills`: _spills),
    and from when it may be treated again (that session's profile interval, with the
    28-day floor after a deep treatment or spill)."""
    latest: dict[str, tuple[datetime, SessionRecord, int, bool]] = {}
    for rec in sessions:
        # as the go/no-go: the latest of its start, its end and its last record
        moment = max(parse_wall(w) for w in (rec.started_at, rec.ended_at,
                                             (lasts or {}).get(rec.id)) if w is not None)
        touched = {z.name: z.depth_um for z in rec.zones if z.strokes > 0}
        spilled = (spills or {}).get(rec.id, {})
        for name in touched.keys() | spilled.keys():
            if name not in latest or moment >= latest[name][0]:
                depth_um = max(touched.get(name, 0), spilled.get(name, 0))
                latest[name] = (moment, rec, depth_um, name not in touched)
    now = datetime.now(UTC)
    table = Table(title="interval status", title_justify="left")
    for col in ("zone", "last treated", "session", "depth mm", "interval", "may be treated"):
        table.add_column(col)
    for name, (moment, rec, depth_um, by_spill) in sorted(latest.items()):
        interval = _profile_interval(rec)
        days = zone_interval_days(ZoneInterval(name, depth_um, interval or 0),
                                  deep_before=depth_um > INTERVAL_DEPTH_UM)
        due = moment + timedelta(days=days)
        # to the minute, rounded up: the go/no-go refuses until the moment itself
        up = (due + timedelta(seconds=59, microseconds=999_999)).astimezone(UTC)
        when = "now" if due <= now else f"from {up:%Y-%m-%d %H:%M} UTC"
        shown = f"{days} days" if interval is not None else f"{days} days (profile unreadable)"
        table.add_row(plain(name), moment.date().isoformat(), str(rec.id),
                      f"{depth_um / 1000:.2f}" + (" (spill)" if by_spill else ""), shown, when)
    return table
