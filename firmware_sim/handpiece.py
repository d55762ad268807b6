"""The technician's hand: moves the pen's tip over the scalp map and presses its buttons.

It sweeps the zone of the pen's current target in overlapping rows, lifting
between rows, then sweeps again across (the next pass), until the target zone
changes. Deterministic for a seed; advanced by `advance(now_us, ...)`, no clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from devicectl.protocol import PenEvent, PenState

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class HandParams:
    """How this technician works. Speeds in mm/s, times in ms."""

    speed_min_mm_s: float = 5.0
    speed_max_mm_s: float = 30.0
    #: Rows overlap by this fraction of the footprint.
    overlap: float = 0.3
    #: Side-to-side wobble of the hand while it strokes along a row.
    jitter_mm: float = 0.4
    jitter_hz: float = 3.0
    lift_ms_min: int = 150
    lift_ms_max: int = 400
    #: The NEXT_ZONE rule: after stamping in a zone, once the host has kept the
    #: pen stopped (READY, no fault) this long with that zone's target still in
    #: force, and the hand has no PAUSE of its own pending, it presses NEXT_ZONE,
    #: once per zone: a technician who was told "not done" does not keep pressing.
    next_zone_after_ms: int = 1500


@dataclass(frozen=True, slots=True)
class _Segment:
    x0_mm: float
    y0_mm: float
    x1_mm: float
    y1_mm: float
    t0_us: int
    t1_us: int
    contact: bool


def rows_over(
    outline: Iterable[Point], pitch_mm: float, inset_mm: float, *, across: bool
) -> list[tuple[Point, Point]]:
    """Rows (start, end) covering a polygon: scanlines `pitch_mm` apart, ends inset.

    `across` = False gives rows along x (one after another in y); True, rows
    along y. Rows alternate direction, as a hand sweeping back and forth does.
    Works in (u, v) = (x, y), or (y, x) across, and maps back at the end.
    """
    pts = [(y, x) for x, y in outline] if across else list(outline)
    vs = [p[1] for p in pts]
    lo, hi = min(vs), max(vs)
    n = max(1, int((hi - lo) / pitch_mm))
    margin = ((hi - lo) - (n - 1) * pitch_mm) / 2
    uv_rows: list[tuple[Point, Point]] = []
    for i in range(n):
        v = lo + margin + i * pitch_mm
        us: list[float] = []
        for (au, av), (bu, bv) in zip(pts, pts[1:] + pts[:1], strict=True):
            if (av <= v < bv) or (bv <= v < av):
                us.append(au + (v - av) * (bu - au) / (bv - av))
        us.sort()
        for a, b in zip(us[0::2], us[1::2], strict=False):
            if b - a > 2 * inset_mm:
                a, b = a + inset_mm, b - inset_mm
            else:
                a = b = (a + b) / 2
            if len(uv_rows) % 2:
                a, b = b, a
            uv_rows.append(((a, v), (b, v)))
    if across:
        return [((s[1], s[0]), (e[1], e[0])) for s, e in uv_rows]
    return uv_rows


class Hand:
    """Position (mm, on the scalp map), contact, and button presses over time."""

    def __init__(
        self,
        zone_outlines: dict[int, tuple[Point, ...]],
        footprint_mm: float,
        *,
        seed: int = 0,
        params: HandParams | None = None,
    ) -> None:
        self.outlines = zone_outlines
        self.footprint_mm = footprint_mm
        self.params = params or HandParams()
        self._rng = random.Random(seed ^ 0x4A4D)
        self.x_mm = 0.0
        self.y_mm = -20.0  # resting in front of the hairline, lifted
        self.contact = False
        self.zone_id = 0
        self.pass_index = 0
        self._rows: list[tuple[Point, Point]] = []
        self._row = 0
        self._seg: _Segment | None = None
        self._jitter_phase = self._rng.uniform(0, 2 * math.pi)
        self._lifted_until_us = 0
        self._presses: list[PenEvent] = []
        self._scheduled: list[tuple[int, PenEvent]] = []
        self._stamped_zone = 0
        self._stopped_since_us: int | None = None
        self._next_pressed: set[int] = set()  # zones whose NEXT_ZONE was pressed already
        self._paused = False

    # --- scenarios and the firmware read these ----------------------------------

    def lift_until(self, t_us: int) -> None:
        """Hold the tip off the skin until `t_us` (the contact-lost scenario)."""
        self._lifted_until_us = max(self._lifted_until_us, t_us)

    def schedule_press(self, t_us: int, button: PenEvent) -> None:
        self._scheduled.append((t_us, button))
        self._scheduled.sort(key=lambda p: p[0])

    def take_presses(self) -> list[PenEvent]:
        out, self._presses = self._presses, []
        return out

    # --- time -------------------------------------------------------------------

    def advance(self, now_us: int, pen_state: PenState, target_zone_id: int) -> None:
        while self._scheduled and self._scheduled[0][0] <= now_us:
            _, button = self._scheduled.pop(0)
            self._press(button)
        self._next_zone_rule(now_us, pen_state, target_zone_id)
        if target_zone_id != self.zone_id:
            self._begin_zone(target_zone_id, now_us)
        seg = self._seg
        if seg is None:
            self.contact = False
            return
        while now_us >= seg.t1_us:
            seg = self._next_segment(seg)
        self._seg = seg
        span = seg.t1_us - seg.t0_us
        f = (now_us - seg.t0_us) / span if span > 0 else 1.0
        dx, dy = seg.x1_mm - seg.x0_mm, seg.y1_mm - seg.y0_mm
        x, y = seg.x0_mm + f * dx, seg.y0_mm + f * dy
        if seg.contact:
            # wobble across the direction of travel
            length = math.hypot(dx, dy) or 1.0
            w = self.params.jitter_mm * math.sin(
                2 * math.pi * self.params.jitter_hz * now_us / 1e6 + self._jitter_phase
            )
            x, y = x - dy / length * w, y + dx / length * w
        self.x_mm, self.y_mm = x, y
        self.contact = seg.contact and now_us >= self._lifted_until_us

    def _press(self, button: PenEvent) -> None:
        if button is PenEvent.BUTTON_PAUSE:
            self._paused = True
        elif button is PenEvent.BUTTON_RESUME:
            self._paused = False
        self._presses.append(button)

    def _next_zone_rule(self, now_us: int, state: PenState, zone_id: int) -> None:
        if state is PenState.STAMPING:
            self._stamped_zone = zone_id
            self._stopped_since_us = None
            return
        if state is not PenState.READY or zone_id == 0 or zone_id != self._stamped_zone:
            self._stopped_since_us = None
            return
        if self._stopped_since_us is None:
            self._stopped_since_us = now_us
        elif (
            not self._paused
            and zone_id not in self._next_pressed
            and now_us - self._stopped_since_us >= self.params.next_zone_after_ms * 1000
        ):
            self._press(PenEvent.BUTTON_NEXT_ZONE)
            self._next_pressed.add(zone_id)
            self._stamped_zone = 0
            self._stopped_since_us = None

    def _begin_zone(self, zone_id: int, now_us: int) -> None:
        self.zone_id = zone_id
        self.pass_index = 0
        self._row = 0
        if zone_id not in self.outlines:
            self._seg = None
            self._rows = []
            return
        self._rows = self._rows_for_pass()
        self._seg = self._lift_to(self._rows[0][0], now_us) if self._rows else None

    def _rows_for_pass(self) -> list[tuple[Point, Point]]:
        pitch = self.footprint_mm * (1.0 - self.params.overlap)
        return rows_over(
            self.outlines[self.zone_id],
            pitch,
            self.footprint_mm / 2,
            across=self.pass_index % 2 == 1,
        )

    def _lift_to(self, to: Point, t_us: int) -> _Segment:
        p = self.params
        dur_us = self._rng.randint(p.lift_ms_min, p.lift_ms_max) * 1000
        return _Segment(self.x_mm, self.y_mm, to[0], to[1], t_us, t_us + dur_us, False)

    def _next_segment(self, seg: _Segment) -> _Segment:
        self.x_mm, self.y_mm = seg.x1_mm, seg.y1_mm
        if not seg.contact:
            (x0, y0), (x1, y1) = self._rows[self._row]
            speed = self._rng.uniform(self.params.speed_min_mm_s, self.params.speed_max_mm_s)
            dur_us = max(1000, int(math.hypot(x1 - x0, y1 - y0) / speed * 1e6))
            return _Segment(x0, y0, x1, y1, seg.t1_us, seg.t1_us + dur_us, True)
        self._row += 1
        if self._row >= len(self._rows):
            self.pass_index += 1
            self._row = 0
            self._rows = self._rows_for_pass()
        return self._lift_to(self._rows[self._row][0], seg.t1_us)
