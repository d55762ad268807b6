"""What the live page shows, as one JSON-able dict, and the diff sent over SSE.

Pure functions (no clock, no threads, no I/O): the hub (devicectl/web/hub.py)
calls them with the session's status snapshot and its own time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from devicectl.dose import dose_cells
from devicectl.mapstyle import NOT_PLANNED_FILL, reached, reached_colour, zone_caption
from devicectl.safety import DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM
from devicectl.store import EventRecord
from devicectl.transitions import COMMAND_STATES, Command, State
from devicectl.zones import ZoneMap

#: Keys whose value is a list that only grows at its end (items start with a
#: strictly increasing number): a diff sends the new items under "<key>+".
APPEND_KEYS = ("trace", "events")
#: Heat-map cell values: no passes (or outside the zones), under target, at target, at maximum.
HEAT_NONE, HEAT_UNDER, HEAT_TARGET, HEAT_MAX = 0, 1, 2, 3
_RANK_TO_HEAT = np.array([HEAT_NONE, HEAT_TARGET, HEAT_UNDER, HEAT_MAX], dtype=np.uint8)
#: The page's depth chart spans this many seconds.
TRACE_WINDOW_S = 30.0
#: Events kept for the page's timeline.
EVENTS_SHOWN = 60
#: Faults and emergency stops kept pinned above it, for the whole session.
PINNED_SHOWN = 20
#: The page's controls and the commands each may send ("resume" starts a ready zone).
PAGE_ACTIONS: Mapping[str, tuple[Command, ...]] = {
    "pause": (Command.PAUSE,),
    "resume": (Command.RESUME, Command.START),
    "next_zone": (Command.NEXT_ZONE,),
    "clear_fault": (Command.CLEAR_FAULT,),
    "abort": (Command.ABORT,),
}


def actions_in(state: str, *, finished: bool = False, fault_final: bool = False) -> list[str]:
    """The page's controls that can act in `state` (the controller's COMMAND_STATES);
    none once the session's loop has ended. A session that ends in FAULT (a faulty
    pen, spec H5: `fault_final`) is offered neither CLEAR_FAULT nor ABORT: the
    controller refuses both, and the session is on its way to its end."""
    if finished or state not in State.__members__:
        return []
    st = State[state]
    actions = [a for a, cmds in PAGE_ACTIONS.items()
               if any(st in COMMAND_STATES[c] for c in cmds)]
    if fault_final:
        actions = [a for a in actions if a not in ("clear_fault", "abort")]
    return actions


def map_state(zone_map: ZoneMap) -> dict[str, Any]:
    """The scalp map for the page's SVG: outlines in mm, sent once per client."""
    return {
        "bounds_mm": list(zone_map.bounds_mm),
        "scalp_mm": [list(pt) for pt in zone_map.scalp_outline_mm],
        "zones": [
            {"zone_id": z.id, "name": z.name, "label": z.label,
             "outline_mm": [list(pt) for pt in z.outline_mm]}
            for z in zone_map.zones
        ],
    }


def heat_cells(
    passes: npt.NDArray[np.int64],
    target: npt.NDArray[np.int64],
    maximum: npt.NDArray[np.int64],
    factor: int,
) -> npt.NDArray[np.uint8]:
    """Downsample a passes grid by `factor` into heat values, the worst cell winning.

    `target` and `maximum` are per-cell grids of the same shape (0 outside the
    plan). A block shows "at maximum" if any cell in it is, "under target" if
    any is treated but short, else "at target" if any is; so a spot at the
    maximum is never hidden by its neighbours.
    """
    # Ranked so that a block's max() is its worst cell: none 0, at target 1,
    # under target 2, at maximum 3 (a cell at its maximum is past its target).
    planned = maximum > 0
    treated = planned & (passes > 0)
    rank = treated.view(np.uint8) + (treated & (passes < target)).view(np.uint8)
    rank += (planned & (passes >= maximum)).view(np.uint8) * np.uint8(2)
    np.minimum(rank, 3, out=rank)
    shape: tuple[int, ...] = rank.shape
    ny, nx = shape[0], shape[1]
    by, bx = -(-ny // factor), -(-nx // factor)
    padded = np.zeros((by * factor, bx * factor), dtype=np.uint8)
    padded[:ny, :nx] = rank
    rows = padded.reshape(by, factor, bx * factor).max(axis=1)
    worst = rows.reshape(by, bx, factor).max(axis=2)
    out: npt.NDArray[np.uint8] = _RANK_TO_HEAT[worst]
    return out


def heat_state(
    cells: npt.NDArray[np.uint8], x0_mm: float, y0_mm: float, cell_mm: float
) -> dict[str, Any]:
    """The heat map as the page reads it: row-major digits, one per cell."""
    ny, nx = int(cells.shape[0]), int(cells.shape[1])
    return {
        "x0_mm": x0_mm,
        "y0_mm": y0_mm,
        "cell_mm": cell_mm,
        "nx": int(nx),
        "ny": int(ny),
        "cells": "".join("0123"[v] for v in cells.reshape(-1).tolist()),
    }


def in_trace_window(t_s: float, newest_s: float) -> bool:
    """Whether a trace point at `t_s` is kept (and drawn, app.js): within TRACE_WINDOW_S
    of the newest point, whatever the session's clock says since."""
    return t_s >= newest_s - TRACE_WINDOW_S


def trace_point(t_s: float, status: Mapping[str, Any]) -> list[Any] | None:
    """[t_s, depth_cmd_um, depth_meas_um, x_mm, y_mm] from a snapshot's pen, or None."""
    pen = status.get("pen")
    if not pen:
        return None
    return [round(t_s, 2), pen.get("depth_cmd_um"), pen.get("depth_meas_um"),
            pen.get("x_mm"), pen.get("y_mm")]


def event_item(seq: int, event: EventRecord) -> list[Any]:
    """[seq, t_s, kind, text, zone_id, safety] for the page's timeline."""
    return [seq, round(event.t_us / 1e6, 3), event.kind, event.text, event.zone_id,
            event.safety]


def map_shading(
    map_zones: Sequence[Mapping[str, Any]], zones: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each map zone's fill and caption, as the session report's map has them."""
    by_name = {z.get("name"): z for z in zones}
    out = []
    for mz in map_zones:
        z = by_name.get(mz["name"])
        if z is None:
            fill, caption = NOT_PLANNED_FILL, zone_caption(mz["label"], None, None)
        else:
            fraction = float(z.get("fraction") or 0.0)
            target = float(z.get("target_fraction") or 0.0)
            fill = reached_colour(reached(fraction, target))
            caption = zone_caption(mz["label"], fraction, target)
        out.append({"zone_id": mz["zone_id"], "fill": fill, "caption": caption})
    return out


def page_state(
    status: Mapping[str, Any],
    *,
    header: Mapping[str, Any],
    trace: Sequence[list[Any]],
    events: Sequence[list[Any]],
    heat: Mapping[str, Any] | None,
    pinned: Sequence[list[Any]] = (),
    hidden_events: int = 0,
    map_zones: Sequence[Mapping[str, Any]] = (),
    tracked: bool,
    records_error: str | None = None,
    finished: bool = False,
) -> dict[str, Any]:
    """The whole page's state: what a client opened now must receive first.

    Only the keys below reach the page: a snapshot's extra keys (the link
    counters, a plan's details) stay on the host.
    """
    pen = status.get("pen")
    state = str(status.get("state", "CONNECTING"))
    return {
        "header": dict(header),
        "state": state,
        "actions": actions_in(state, finished=finished,
                              fault_final=bool(status.get("fault_final"))),
        "over": finished,
        "fault": status.get("fault"),
        "stop_reason": status.get("stop_reason"),
        "records_failure": status.get("records_failure"),
        "go_no_go": list(status.get("go_no_go") or ()),
        "zone_index": status.get("zone_index", 0),
        # each zone's dose columns as the terminal and the report say them (dose.dose_cells):
        # the page shows this text, it does not format the figures itself
        "zones": [dict(z) | {"dose_text": list(dose_cells(z))}
                  for z in status.get("zones") or ()],
        "shading": map_shading(map_zones, status.get("zones") or ()),
        "pen": dict(pen) if pen else None,
        "position_mode": status.get("position_mode"),
        "tracked": tracked,
        "elapsed_s": round(float(status.get("elapsed_s") or 0.0), 1),
        "remaining_s_est": round(float(status.get("remaining_s_est") or 0.0), 1),
        "depth_cap_um": DEPTH_CAP_UM,
        # A measured stroke may read up to this before the pen or the host stops it.
        "depth_limit_um": OVERDEPTH_LIMIT_UM,
        "heat": dict(heat) if heat is not None else None,
        "trace": [list(x) for x in trace],
        "events": [list(x) for x in events],
        "pinned": [list(x) for x in pinned],
        "hidden_events": hidden_events,
        "records_error": records_error,
    }


def diff(prev: Mapping[str, Any] | None, cur: Mapping[str, Any]) -> dict[str, Any]:
    """What a client that has `prev` needs to reach `cur`; everything when prev is None.

    Top-level keys are replaced whole when they changed; APPEND_KEYS send only
    the items after the last one the client has, under "<key>+".
    """
    if prev is None:
        return dict(cur)
    out: dict[str, Any] = {}
    for key, value in cur.items():
        if key in APPEND_KEYS:
            new = _after(prev.get(key) or (), value)
            if new:
                out[key + "+"] = new
        elif prev.get(key) != value:
            out[key] = value
    for key in prev:
        if key not in cur:
            out[key] = None
    return out


def _after(old: Iterable[list[Any]], new: Sequence[list[Any]]) -> list[list[Any]]:
    last = None
    for item in old:
        last = item[0]
    if last is None:
        return list(new)
    return [item for item in new if item[0] > last]


def apply(state: dict[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """The page's side of `diff` (app.js does the same): for tests and the monitor.
    The appended lists are kept as the hub keeps them: the trace's last TRACE_WINDOW_S
    before its newest point, the newest EVENTS_SHOWN events."""
    out = dict(state)
    for key, value in delta.items():
        if key.endswith("+") and key[:-1] in APPEND_KEYS:
            out[key[:-1]] = list(out.get(key[:-1]) or ()) + list(value)
        else:
            out[key] = value
    trace = out.get("trace")
    if trace:
        out["trace"] = [p for p in trace if in_trace_window(p[0], trace[-1][0])]
    events = out.get("events")
    if events and len(events) > EVENTS_SHOWN:
        out["events"] = events[-EVENTS_SHOWN:]
    return out
