"""What the clinic view shows, read from the clinic's records (PostgreSQL): every
live session (its process holds its running lock on the server, store_pg), and
one session's state, zones and latest events. Read-only: SELECTs only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from devicectl.dbconn import Conn
from devicectl.eventkinds import in_treatment_order, is_routine, treatment_order
from devicectl.records import EVENT_COLUMNS, event_from_row
from devicectl.store import EventRecord, SessionRecord, Store
from devicectl.store_pg import running_session_ids

#: A session's page lists this many of its latest events (routine ones left out).
EVENTS_SHOWN: Final = 30


@dataclass(frozen=True, slots=True)
class LiveSession:
    session_id: int
    room: str | None
    operator: str | None
    patient_ref: str
    profile: str
    started_at: str
    state: str
    zone: str | None
    #: the active zone's coverage over its target, 0..100 (the whole plan's when none is active)
    percent: int


@dataclass(frozen=True, slots=True)
class SessionView:
    live: LiveSession
    outcome: str | None
    running: bool
    zones: list[dict[str, Any]]
    events: list[EventRecord]


def _state(conn: Conn, rec: SessionRecord, running: bool) -> str:
    if rec.outcome is not None:
        return rec.outcome.upper()
    if not running:
        return "INTERRUPTED"
    row = conn.execute("SELECT data FROM events WHERE session_id = ? AND kind = 'STATE'"
                       " ORDER BY id DESC LIMIT 1", (rec.id,)).fetchone()
    if row is None:
        return "CONNECTING"
    return str(json.loads(row[0] or "{}").get("to", "CONNECTING"))


#: The zones' labels by name and by the map's zone id (a zone just started may have
#: no coverage row yet, only its ZONE_STARTED event).
Labels = dict[str | int, str]


def zone_labels(zone_map: Any) -> Labels:
    out: Labels = {}
    for z in zone_map.zones:
        out[z.name] = out[z.id] = z.label
    return out


def _live(conn: Conn, rec: SessionRecord, running: bool, labels: Labels) -> LiveSession:
    active = conn.execute("SELECT zone_id FROM events WHERE session_id = ? AND"
                          " kind = 'ZONE_STARTED' ORDER BY id DESC LIMIT 1", (rec.id,)).fetchone()
    zone = next((z for z in rec.zones if active is not None and z.zone_id == active[0]), None)
    name = labels.get(zone.name, zone.name) if zone is not None else None
    if zone is None and active is not None and active[0] is not None:
        name = labels.get(int(active[0]), f"zone {active[0]}")
    if zone is not None:
        share = zone.fraction / zone.target_fraction if zone.target_fraction else 1.0
    else:
        target = sum(z.target_fraction for z in rec.zones)
        share = sum(min(z.fraction, z.target_fraction) for z in rec.zones) / target \
            if target else 0.0
    return LiveSession(
        rec.id, rec.room, rec.operator, rec.patient_ref, rec.profile_name, rec.started_at,
        _state(conn, rec, running), name,
        max(0, min(100, round(100 * share))))


def live_sessions(store: Store, labels: Labels | None = None) -> list[LiveSession]:
    """Every session running now in the clinic, by room."""
    running = running_session_ids(store.conn)  # type: ignore[arg-type]
    out = [_live(store.conn, store.session(sid), True, labels or {})
           for sid in sorted(running)]
    live = [s for s in out if s.state not in ("COMPLETE", "ABORTED", "REFUSED", "FAULT",
                                               "LINK_LOST")]
    return sorted(live, key=lambda s: (s.room or "", s.session_id))


def session_view(store: Store, session_id: int, labels: Labels | None = None
                 ) -> SessionView:
    """One session as its page shows it (StoreError when there is none)."""
    rec = store.session(session_id)
    conn = store.conn
    running = session_id in running_session_ids(conn)  # type: ignore[arg-type]
    order = treatment_order(conn, session_id)
    zones = [{"name": labels.get(z.name, z.name) if labels else z.name,
              "percent": round(100 * z.fraction), "target": round(100 * z.target_fraction),
              "strokes": z.strokes, "done": bool(z.done)}
             for z in in_treatment_order(rec.zones, order)]
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? AND kind NOT IN"
        " ('SENT', 'RESEND', 'COVERAGE_HOLD', 'RESUMED_STAMPING', 'SAMPLE')"
        " ORDER BY id DESC LIMIT ?", (session_id, EVENTS_SHOWN * 2)).fetchall()
    events = [e for e in (event_from_row(r) for r in rows) if not is_routine(e.kind, e.data)]
    return SessionView(_live(conn, rec, running, labels or {}), rec.outcome, running, zones,
                       events[:EVENTS_SHOWN])
