"""The technician's hand: moves the pen's tip over the scalp map and presses its buttons.

It sweeps the zone of the pen's current target in overlapping rows, lifting
between rows, then sweeps again across (the next pass), until the target zone
changes. A hand that watches the dose map (`watch`, the host's live map) sweeps
only the rows that still hold spots below target, skips the stretches at their
maximum, and speeds up as the spots near their target. Deterministic for a
seed; advanced by `advance(now_us, ...)`, no clock. Which rows (hand_rows.py)
is decided apart from walking them (here).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from devicectl.dose import DoseView
from devicectl.footprint import footprint_offsets
from devicectl.protocol import PenEvent, PenState
from firmware_sim.hand_rows import DAB_MM, Point, rows_over, spread, watched_rows


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
    #: A hand that watches the map presses it only when the map shows nothing left
    #: it can treat: while it still sees work, a stopped pen is the host's hold.
    next_zone_after_ms: int = 1500
    #: Watching the map: a stretch of a row is swept when a spot below target
    #: lies within this fraction of the footprint's radius of the row's line.
    reach_fraction: float = 0.8
    #: Stretches shorter than this (mm) are not worth putting the pen down for.
    min_stretch_mm: float = 1.0
    #: A row whose stretches add up to less than this (mm) waits for the touch-up
    #: at the end, when no row has that much left.
    min_row_mm: float = 10.0
    #: The touch-up: the tip rests on a spot below target for the strokes it
    #: still needs, at most this long, lifting between spots.
    dab_max_ms: int = 1500
    #: Watching the map, the hand sweeps fast, so each sweep adds a little dose
    #: (about a stroke over each spot) and the spots reach their target evenly.
    watch_speed_min_mm_s: float = 5.0
    watch_speed_max_mm_s: float = 35.0
    #: Watching the map, rows never closer than this (mm).
    min_pitch_mm: float = 0.5
    #: Watching the map, the tip keeps this fraction of the footprint's radius
    #: inside the zone's border (the host holds where the needles reach too far out).
    border_inset_fraction: float = 0.5
    #: Watching the map, the hand finishes a band this tall (mm) before it moves
    #: on (a technician works a patch at a time, not the whole zone thinly).
    block_mm: float = 20.0
    #: Rests planned at once in the touch-up before the hand looks at the map again.
    dab_batch: int = 24


MapView = Callable[[int], DoseView | None]

# read once a frame; Final: compiled, constants (module globals are dict look-ups)
_TWO_PI: Final = 2 * math.pi
_MIN_SWEEP_MM: Final = 2 * DAB_MM  # longer contact segments sweep (and wobble)
_STAMPING: Final = PenState.STAMPING
_READY: Final = PenState.READY

@dataclass(frozen=True, slots=True)
class _Segment:
    x0_mm: float
    y0_mm: float
    x1_mm: float
    y1_mm: float
    t0_us: int
    t1_us: int
    contact: bool
    #: from (x0, y0) to (x1, y1), worked out once, not at every frame along it
    length_mm: float

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
        self._view: MapView | None = None
        #: the stroke rate the pen was set to (the technician reads it off the plan)
        self.rate_hz = 8.0
        self._speeds: list[float] = []  # per row, when watching the map

    def watch(self, view: MapView | None) -> None:
        """Look at the dose map (zone id -> DoseView) when choosing rows; None: do not."""
        self._view = view

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

    def advance(
        self, now_us: int, pen_state: PenState, target_zone_id: int, rate_dhz: int = 0
    ) -> None:
        if rate_dhz > 0:
            self.rate_hz = rate_dhz / 10.0
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
        length = seg.length_mm
        if seg.contact and length > _MIN_SWEEP_MM:
            # wobble across the direction of travel (not while resting on a spot)
            w = self.params.jitter_mm * math.sin(
                _TWO_PI * self.params.jitter_hz * now_us / 1e6 + self._jitter_phase
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
        if state is _STAMPING:
            self._stamped_zone = zone_id
            self._stopped_since_us = None
            return
        if state is not _READY or zone_id == 0 or zone_id != self._stamped_zone:
            self._stopped_since_us = None
            return
        if self._stopped_since_us is None:
            self._stopped_since_us = now_us
        elif (
            not self._paused
            and zone_id not in self._next_pressed
            and now_us - self._stopped_since_us >= self.params.next_zone_after_ms * 1000
        ):
            if self._sees_work(zone_id):
                self._stopped_since_us = now_us  # held: look at the map again later
                return
            self._press(PenEvent.BUTTON_NEXT_ZONE)
            self._next_pressed.add(zone_id)
            self._stamped_zone = 0
            self._stopped_since_us = None

    def _sees_work(self, zone_id: int) -> bool:
        """Watching the map: a spot below target that an allowed stroke still reaches."""
        view = self._view(zone_id) if self._view is not None else None
        if view is None:
            return False
        need = view.mask & (view.hits < view.target_hits)
        if view.room is None:
            return bool(need.any())
        dy, dx = footprint_offsets(self.footprint_mm, view.cell_mm)
        return bool((need & spread(view.room > 0, dy, dx)).any())

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
        view = self._view(self.zone_id) if self._view is not None else None
        if view is not None:
            # the band to work next, then a sweep sized to what that band still needs
            first = watched_rows(view, pitch, self.footprint_mm, self.params, shift=False)
            rows = first
            if first and first[0][0] != first[0][1] and abs(first[0][1][0] - first[0][0][0]) > 0.5:
                ys = [r[0][1] for r in first]
                band = (min(ys) - pitch / 2, max(ys) + pitch / 2)
                pitch, speed = self._sweep_for(view, band)
                rows = watched_rows(view, pitch, self.footprint_mm, self.params,
                                    shift=self.pass_index % 2 == 1, band_mm=band) or first
            else:
                speed = self.params.watch_speed_max_mm_s
            if rows:
                self._speeds = [self._row_speed(view, s, e, speed) for s, e in rows]
                return rows
            # nothing below target that the hand can reach: rest, lifted, where it is
            self._speeds = []
            here = (self.x_mm, self.y_mm)
            return [(here, here)]
        self._speeds = []
        return rows_over(
            self.outlines[self.zone_id],
            pitch,
            self.footprint_mm / 2,
            across=self.pass_index % 2 == 1,
        )

    def _sweep_for(self, view: DoseView, band: tuple[float, float]) -> tuple[float, float]:
        """Row pitch and hand speed for a sweep that brings the typical spot below
        target in the band (y, mm) to one stroke short of it, strokes spaced as
        far along the row as across (an even lattice of strokes gives an even dose)."""
        p = self.params
        ny = view.hits.shape[0]
        rows = (view.y0_mm + (np.arange(ny) + 0.5) * view.cell_mm)
        in_band = ((rows >= band[0]) & (rows < band[1]))[:, None]
        need = view.mask & (view.hits < view.target_hits) & in_band
        if not need.any():
            return self.footprint_mm, p.watch_speed_max_mm_s
        deficit = float(np.median(view.target_hits - view.hits[need]))
        dose = max(1.0, deficit - 1.0)  # strokes over each spot this sweep
        area = math.pi * (self.footprint_mm / 2) ** 2
        pitch = math.sqrt(area / dose)
        speed = pitch * self.rate_hz
        if speed > p.watch_speed_max_mm_s or speed < p.watch_speed_min_mm_s:
            speed = min(p.watch_speed_max_mm_s, max(p.watch_speed_min_mm_s, speed))
            pitch = area * self.rate_hz / (dose * speed)
        pitch = min(max(pitch, p.min_pitch_mm), self.footprint_mm * (1.0 - p.overlap))
        return pitch, speed * self._rng.uniform(0.95, 1.05)

    def _row_speed(self, view: DoseView, start: Point, end: Point, speed: float) -> float:
        length = math.hypot(end[0] - start[0], end[1] - start[1])
        if length > 0.5:
            return speed
        # a dab: rest for the strokes the spot still needs
        ix = int((start[0] - view.x0_mm) / view.cell_mm)
        iy = int((start[1] - view.y0_mm) / view.cell_mm)
        # the most any spot under the needles still needs, without taking another
        # past its maximum (the host would hold there anyway)
        n = int(self.footprint_mm / 2 / view.cell_mm)
        ys = slice(max(0, iy - n), iy + n + 1)
        xs = slice(max(0, ix - n), ix + n + 1)
        under = view.hits[ys, xs][view.mask[ys, xs]]
        if under.size == 0:
            return length / (1.0 / self.rate_hz)
        missing = view.target_hits - int(under.min())
        if view.room is not None and 0 <= iy < view.room.shape[0] and 0 <= ix < view.room.shape[1]:
            room = int(view.room[iy, ix])
        else:
            room = view.max_hits - int(under.max()) - 1
        strokes = max(1, min(missing, room))
        seconds = min(self.params.dab_max_ms / 1000, (strokes + 0.5) / self.rate_hz)
        return length / seconds

    def _lift_to(self, to: Point, t_us: int) -> _Segment:
        p = self.params
        dur_us = self._rng.randint(p.lift_ms_min, p.lift_ms_max) * 1000
        return _Segment(self.x_mm, self.y_mm, to[0], to[1], t_us, t_us + dur_us, False,
                        math.hypot(to[0] - self.x_mm, to[1] - self.y_mm))

    def _next_segment(self, seg: _Segment) -> _Segment:
        self.x_mm, self.y_mm = seg.x1_mm, seg.y1_mm
        if not seg.contact:
            (x0, y0), (x1, y1) = self._rows[self._row]
            length = math.hypot(x1 - x0, y1 - y0)
            if length == 0.0 and not self._speeds and self._view is not None:
                # resting, lifted: look at the map again after a moment
                self.pass_index += 1
                self._row = 0
                self._rows = self._rows_for_pass()
                return self._lift_to(self._rows[0][0], seg.t1_us)
            if self._row < len(self._speeds):
                speed = self._speeds[self._row]
            else:
                speed = self._rng.uniform(self.params.speed_min_mm_s, self.params.speed_max_mm_s)
            dur_us = max(1000, int(length / speed * 1e6))
            return _Segment(x0, y0, x1, y1, seg.t1_us, seg.t1_us + dur_us, True, length)
        self._row += 1
        if self._row >= len(self._rows):
            self.pass_index += 1
            self._row = 0
            self._rows = self._rows_for_pass()
        return self._lift_to(self._rows[self._row][0], seg.t1_us)
