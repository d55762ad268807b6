"""What `devicectl run` prints without a live view: progress lines and JSON records.

Piped output (`make demo | tee`, CI) gets a progress line every 5 s of session
time, so a long zone does not look like a hang; `run --json` gets one JSON
object a line for each event, each progress step, and the session's start and
end. Pure functions of the session's snapshot (no controller, no clock): the
caller passes the session time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devicectl.mapstyle import zone_words
from devicectl.plan import estimated_passes
from devicectl.transitions import ControlEvent

#: States in which a progress line says something (a plan exists, the session is on).
_PROGRESS_STATES = frozenset({"CONFIGURING", "READY", "STAMPING", "PAUSED", "ZONE_DONE", "FAULT"})


def session_clock(t_s: float) -> str:
    """Session time as the event lines show it: [mm:ss.mmm]."""
    t_s = max(0.0, t_s)
    return f"[{int(t_s // 60):02d}:{int(t_s % 60):02d}.{int((t_s % 1) * 1000):03d}]"


def _mmss(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


@dataclass
class Pace:
    """Whether a virtual session keeps the speed it was asked for (`--speed`).

    The simulator runs as fast as the machine lets it, up to `speed` times real
    time; on a busy or slow machine it falls behind. `check` says so once, after
    `settle_s` of wall time; `summary` gives the whole run's figure at the end.
    """

    speed: float
    settle_s: float = 5.0
    #: Behind means under this share of the asked speed.
    slack: float = 0.8
    told: bool = False

    def rate(self, session_s: float, wall_s: float) -> float:
        return session_s / wall_s if wall_s > 0 else 0.0

    def check(self, session_s: float, wall_s: float, remaining_s: float) -> str | None:
        if self.told or self.speed <= 0 or wall_s < self.settle_s:
            return None
        rate = self.rate(session_s, wall_s)
        if rate >= self.slack * self.speed:
            return None
        self.told = True
        left = f"; about {_mmss(remaining_s / rate)} left" if rate > 0 and remaining_s else ""
        return (f"note: the simulation runs at {rate:.1f}× real time, behind the "
                f"{self.speed:g}× asked for (this machine cannot keep up){left}")

    def summary(self, session_s: float, wall_s: float) -> str | None:
        rate = self.rate(session_s, wall_s)
        if self.speed <= 0 or wall_s <= 0 or rate >= self.slack * self.speed:
            return None
        return (f"note: {_mmss(session_s)} of session time took {_mmss(wall_s)}: "
                f"{rate:.1f}× real time instead of the {self.speed:g}× asked for")


def mean_passes(strokes: int, area_mm2: float, footprint_mm: float, rate_hz: float) -> float:
    """Mean passes over a zone, from its strokes at the nominal hand speed (the
    plan's own estimate: a pass sweeps the zone in rows one footprint wide)."""
    if area_mm2 <= 0 or footprint_mm <= 0 or rate_hz <= 0:
        return 0.0
    return estimated_passes(strokes, area_mm2, footprint_mm, rate_hz)


def progress_record(
    status: Mapping[str, Any], t_s: float, *, areas_mm2: Mapping[int, float],
    footprint_mm: float,
) -> dict[str, Any] | None:
    """The progress of the active zone, or None when there is nothing to report."""
    state = str(status.get("state", ""))
    zones = list(status.get("zones") or ())
    if state not in _PROGRESS_STATES or not zones:
        return None
    index = min(int(status.get("zone_index") or 0), len(zones) - 1)
    z = zones[index]
    return {
        "type": "progress",
        "t_s": round(t_s, 3),
        "state": state,
        "zone": z["name"],
        "zone_id": z["zone_id"],
        "zone_number": index + 1,
        "zone_count": len(zones),
        "percent": round(100 * float(z["fraction"]), 1),
        "target_percent": round(100 * float(z["target_fraction"]), 1),
        # "N % of T %" as the report and the map say it (never rounded up to the target)
        "share": zone_words(float(z["fraction"]), float(z["target_fraction"])),
        # the dose the host counts (devicectl/dose.py), else the strokes' estimate
        "mean_passes": round(
            float(z["mean_passes"]) if z.get("mean_passes") is not None
            else mean_passes(int(z.get("strokes") or 0), areas_mm2.get(int(z["zone_id"]), 0.0),
                             footprint_mm, float(z.get("rate_dhz") or 0) / 10), 2),
        "at_max_percent": round(100 * float(z.get("at_max_fraction") or 0.0), 2),
        "at_max_cm2": round(float(z.get("at_max_cm2") or 0.0), 2),
        "remaining_s": round(float(status.get("remaining_s_est") or 0.0), 1),
    }


def progress_line(record: Mapping[str, Any]) -> str:
    """One plain line: state, zone, %, mean passes, time left."""
    return (
        f"{session_clock(record['t_s'])} PROGRESS {record['state']} · zone "
        f"{record['zone_number']}/{record['zone_count']} {record['zone']} · "
        f"{record['share']} · "
        f"≈ {record['mean_passes']:.2f} passes (mean) · about {_mmss(record['remaining_s'])} left"
    )


def event_record(event: ControlEvent, t0_us: int) -> dict[str, Any]:
    """One event as a JSON-able object (`run --json`)."""
    return {
        "type": "event",
        "t_s": round((event.t_us - t0_us) / 1e6, 6),
        "kind": event.kind.name,
        "zone_id": event.zone_id,
        "safety": event.safety,
        "text": event.text,
        "data": {k: _jsonable(v) for k, v in event.data.items()},
    }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value)
