"""The page's source for a session another process runs: its records, read once a second.

`devicectl monitor --db PATH` watches through the records alone: the state
from the last STATE event (or the outcome), the zones' latest results, the
pen from SAMPLE events when the session records them. Read-only by design.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devicectl.errors import StoreError
from devicectl.eventkinds import in_treatment_order, treatment_order
from devicectl.liveness import is_running
from devicectl.records import open_database
from devicectl.store import Store, parse_wall

#: The records are read at most this often (s).
READ_PERIOD_S = 1.0
_FAULT_KINDS = ("PEN_FAULT", "SAFETY_STOP", "LINK_LOST", "ESTOP")


class RecordsSource:
    """A Source (devicectl/web/hub.py) over one session's records."""

    def __init__(self, db_path: Path, session_id: int) -> None:
        self.db_path = db_path
        self.session_id = session_id
        self._status: dict[str, Any] = {"state": "CONNECTING"}
        self._read_at = -1e9
        self._tracked = True
        self._closed = False

    def now_s(self) -> float:
        return time.monotonic()

    def tracked(self) -> bool:
        return self._tracked

    def finished(self) -> bool:
        return self._closed

    def heat(self) -> dict[str, Any] | None:
        return None  # the records hold coverage per zone; the grid is the live session's

    def status(self) -> Mapping[str, Any]:
        now = time.monotonic()
        if now - self._read_at >= READ_PERIOD_S:
            self._read_at = now
            try:
                self._status = self._read()
            except StoreError as exc:
                self._status = dict(self._status, stop_reason=str(exc))
        return self._status

    def _last(self, conn: Any, kinds: tuple[str, ...]) -> tuple[str, str, Any] | None:
        marks = ",".join("?" * len(kinds))
        row = conn.execute(
            f"SELECT kind, text, data FROM events WHERE session_id = ? AND kind IN ({marks}) "
            "ORDER BY id DESC LIMIT 1",
            (self.session_id, *kinds),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _read(self) -> dict[str, Any]:
        import json

        with Store(self.db_path, create=False, read_only=True) as store:
            rec = store.session(self.session_id)
        conn = open_database(self.db_path, create=False, read_only=True)
        try:
            state_ev = self._last(conn, ("STATE",))
            fault_ev = self._last(conn, _FAULT_KINDS)
            sample_ev = self._last(conn, ("SAMPLE",))
            last_wall = conn.execute(
                "SELECT wall FROM events WHERE session_id = ? ORDER BY id DESC LIMIT 1",
                (self.session_id,)).fetchone()
            order = treatment_order(conn, self.session_id)
            active_zone = conn.execute(
                "SELECT zone_id FROM events WHERE session_id = ? AND kind = 'ZONE_STARTED' "
                "ORDER BY id DESC LIMIT 1", (self.session_id,)
            ).fetchone()
        finally:
            conn.close()
        # Over: an outcome, or none and no process running it (devicectl/liveness.py).
        over = rec.outcome is not None or not is_running(self.db_path, self.session_id)
        state = "CONNECTING"
        if rec.outcome is not None:
            state = rec.outcome.upper()
        elif over:
            state = "INTERRUPTED"
        elif state_ev is not None:
            state = json.loads(state_ev[2] or "{}").get("to", state)
        self._tracked = rec.position_mode != "estimated"
        self._closed = over
        active_id = active_zone[0] if active_zone is not None else None
        zones = [
            {"zone_id": z.zone_id, "name": z.name, "depth_um": z.depth_um,
             "rate_dhz": z.rate_dhz, "target_fraction": z.target_fraction,
             "fraction": z.fraction, "cells_at_max": z.cells_at_max, "seconds": z.seconds,
             "strokes": z.strokes, "done": z.done,
             "active": z.zone_id == active_id and rec.outcome is None}
            for z in in_treatment_order(rec.zones, order)
        ]
        pen = None
        if sample_ev is not None:
            data = json.loads(sample_ev[2] or "{}")
            pen = {k: data.get(k) for k in ("depth_cmd_um", "depth_meas_um", "rate_meas_dhz")}
        started = parse_wall(rec.started_at)
        if rec.ended_at:
            end = parse_wall(rec.ended_at)
        elif over:
            end = parse_wall(last_wall[0]) if last_wall is not None else started
        else:
            end = datetime.now(UTC)
        return {
            "state": state,
            # A session that ended after a fault keeps its banner, whatever its outcome.
            "fault": fault_ev[1] if fault_ev is not None and (
                over or state in ("FAULT", "LINK_LOST")) else None,
            "stop_reason": None,
            "zones": zones,
            "pen": pen,
            "position_mode": rec.position_mode,
            "elapsed_s": (end - started).total_seconds(),
            "remaining_s_est": 0.0,
        }
