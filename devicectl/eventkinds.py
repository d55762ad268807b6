"""Which events people see by default, which stay pinned, and a session's events read
with those filters straight from the records (SQL does the filtering and counting).

A session records thousands of routine events: every command SENT, every
coverage hold and the resume after it, the pen's contact made/lost, a SAMPLE
each second. They stay in the records and in exports; the default lists (the
live page, `sessions show`) leave them out and say how many they left out.
Faults and emergency stops are pinned: the page keeps them in view until the
session is over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from devicectl.dbconn import Conn
from devicectl.records import EVENT_COLUMNS, event_from_row
from devicectl.store import EventRecord

#: Kinds left out of the default lists (all still recorded).
ROUTINE_KINDS: Final = frozenset({"SENT", "RESEND", "COVERAGE_HOLD", "RESUMED_STAMPING",
                                  "SAMPLE"})
#: PEN_EVENTs (data.event) left out likewise: the pen lifted and put back.
ROUTINE_PEN_EVENTS: Final = frozenset({"CONTACT_LOST", "CONTACT_MADE"})
#: Kinds kept in view until the session ends.
PINNED_KINDS: Final = frozenset({"PEN_FAULT", "ESTOP", "SAFETY_STOP", "LINK_LOST"})
#: `--kind all`: every event.
ALL = "ALL"
#: Kinds the records hold beside the controller's (transitions.EventKind): the clinic's
#: gate, the session's continuation, the pen process's grants, samples, flight records.
RECORD_KINDS: Final = frozenset({"CHECKLIST", "CONSENT", "INSTRUCTIONS", "OPERATOR",
                                 "CONTINUES", "PEN_PROCESS", "SAMPLE", "FLIGHT"})


def is_routine(kind: str, data: Any) -> bool:
    if kind in ROUTINE_KINDS:
        return True
    return kind == "PEN_EVENT" and isinstance(data, dict) and data.get("event") in (
        ROUTINE_PEN_EVENTS)


def is_pinned(kind: str) -> bool:
    return kind in PINNED_KINDS


_MARKS_ROUTINE = ",".join(f"'{k}'" for k in sorted(ROUTINE_KINDS))
_MARKS_PEN = ",".join(f"'{k}'" for k in sorted(ROUTINE_PEN_EVENTS))
#: The SQL twin of is_routine (the kinds are constants, not user input).
ROUTINE_SQL: Final = (
    f"(kind IN ({_MARKS_ROUTINE}) OR (kind = 'PEN_EVENT' AND "
    f"json_extract(data, '$.event') IN ({_MARKS_PEN})))"
)


@dataclass(frozen=True)
class EventFilter:
    """`kinds` None: the default (no routine events); containing ALL: every event."""

    kinds: frozenset[str] | None = None
    since_wall: str | None = None

    @classmethod
    def parse(cls, kinds: Iterable[str] | None, since_wall: str | None) -> EventFilter:
        names: set[str] = set()
        for item in kinds or ():
            names.update(k.strip().upper() for k in item.split(",") if k.strip())
        return cls(frozenset(names) if names else None, since_wall)


def known_kinds(conn: Conn) -> frozenset[str]:
    """The kinds a filter may name: the controller's, the records' own, and any this
    records file holds (one recorded by an older devicectl included)."""
    from devicectl.transitions import EventKind

    held = {str(k) for (k,) in conn.execute("SELECT DISTINCT kind FROM events").fetchall()}
    return frozenset({k.name for k in EventKind} | RECORD_KINDS | held)


def unknown_kinds_problem(conn: Conn, flt: EventFilter) -> str | None:
    """The sentence for a --kind that names no kind (a typo must not read as "none")."""
    if flt.kinds is None:
        return None
    known = known_kinds(conn)
    unknown = sorted(flt.kinds - known - {ALL})
    if not unknown:
        return None
    return (f"--kind: no event kind {', '.join(unknown)}; the kinds are "
            f"{', '.join(sorted(known))} (or all)")


@dataclass(frozen=True)
class Selection:
    events: list[EventRecord]
    #: kind -> how many events of that kind the filter left out
    hidden: dict[str, int]


def select_events(conn: Conn, session_id: int, flt: EventFilter) -> Selection:
    """The session's events that pass `flt`, in order, and counts of those left out.

    Two queries: the rows shown, and a GROUP BY count of the rest; no row that
    is not shown is decoded.
    """
    where = ["session_id = ?"]
    args: list[Any] = [session_id]
    if flt.since_wall is not None:
        where.append("wall >= ?")
        args.append(flt.since_wall)
    if flt.kinds is None:
        shown = f"NOT {ROUTINE_SQL}"
    elif ALL in flt.kinds:
        shown = "1 = 1"  # SQLite and PostgreSQL alike
    else:
        marks = ",".join("?" * len(flt.kinds))
        shown = f"kind IN ({marks})"
    kind_args = [] if flt.kinds is None or ALL in flt.kinds else sorted(flt.kinds)
    base = " AND ".join(where)
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE {base} AND {shown} ORDER BY id",
        [*args, *kind_args],
    ).fetchall()
    counts = conn.execute(
        f"SELECT kind, COUNT(*) FROM events WHERE {base} AND NOT ({shown}) GROUP BY kind",
        [*args, *kind_args],
    ).fetchall()
    return Selection([event_from_row(r) for r in rows], {str(k): int(n) for k, n in counts})


def treatment_order(conn: Conn, session_id: int) -> dict[int, int]:
    """Zone id -> its place in the order the session treated the zones (the first
    ZONE_STARTED of each); the records keep zones by name, not in that order."""
    rows = conn.execute(
        "SELECT zone_id, MIN(id) AS first FROM events WHERE session_id = ? AND "
        "kind = 'ZONE_STARTED' AND zone_id IS NOT NULL GROUP BY zone_id ORDER BY first",
        (session_id,),
    ).fetchall()
    return {int(zid): rank for rank, (zid, _) in enumerate(rows)}


def in_treatment_order(zones: Iterable[Any], order: dict[int, int]) -> list[Any]:
    """`zones` (with .zone_id) sorted as treated; zones never started keep their order, last."""
    listed = list(zones)
    return sorted(listed, key=lambda z: (order.get(z.zone_id, len(order)), listed.index(z)))
