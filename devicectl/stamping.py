"""Where the tip is and whether it may stamp there: the coverage and contact rules of the loop.

`TipTracker` is fed every TELEMETRY (position, contact, stroke counter) and
answers, while a zone is being stamped, why stamping must hold (outside the
zone or too near its border, a stroke that would take a spot over its
maximum, contact lost too long, the estimated maximum) or
whether the tip is over a spot that needs treatment. It runs on every
frame; the coverage keeps its last spot verdict while that holds. Sans-I/O;
the controller sends the STOP/START.
"""

from __future__ import annotations

from typing import Final

from devicectl.coverage import Coverage, Spot
from devicectl.plan import ZonePlan
from devicectl.protocol import POSITION_UNKNOWN, Telemetry
from devicectl.safety import CONTACT_LOST_LIMIT_US

#: A stamp_count jump larger than this is a pen reboot or a glitch, not strokes.
MAX_STROKES_PER_FRAME: Final = 10_000
CONTACT_HOLD: Final = f"skin contact lost for more than {CONTACT_LOST_LIMIT_US // 1000} ms"
AT_MAX_HOLD: Final = "the next stroke would take a spot under the needles over its maximum dose"
FAST_HOLD: Final = "the tip moves too fast to keep the dose within its maximum"
_U32: Final = 0xFFFF_FFFF


class TipTracker:
    """The tip's cell, contact timer and stroke counter, and the hold verdicts they give."""

    __slots__ = ("_cell", "_check_done", "_contact_lost_us", "_fast", "_last_stamps", "_xy")

    def __init__(self) -> None:
        self._xy = (POSITION_UNKNOWN, POSITION_UNKNOWN)
        self._cell = -1
        self._contact_lost_us: int | None = None
        self._last_stamps: int | None = None
        self._check_done = True
        self._fast = False

    def restart_counting(self) -> None:
        """After a reconnect the pen's counter starts afresh: take the next one as the base."""
        self._last_stamps = None

    def recheck(self) -> None:
        """Ask again whether the zone is done (a new zone, a new START)."""
        self._check_done = True

    def observe(
        self,
        t: Telemetry,
        now_us: int,
        cov: Coverage | None,
        zone_id: int | None,
    ) -> int:
        """Take one TELEMETRY; returns a stroke-counter jump too large to be strokes, else 0.

        Strokes land on the cell under the tip, whatever the pen says of contact: a
        stroke reported with no contact may have stroked the air, or the skin under a
        sensor that flickers or lies, and the dose map must bound the second. (Until
        round 12 such strokes put no dose on the map, and a sensor saying "no contact"
        for 278 ms of every 280 kept most strokes off it, with no hold ever: the
        contact hold needs 300 ms in a row.) An honest lift costs the map at most the
        strokes of those 300 ms, counted where the tip is: more dose than was given,
        never less.
        """
        if t.contact:
            self._contact_lost_us = None
        elif self._contact_lost_us is None:
            self._contact_lost_us = now_us
        if cov is None:
            return 0
        if t.x_dmm != self._xy[0] or t.y_dmm != self._xy[1]:
            self._xy = (t.x_dmm, t.y_dmm)
            before = self._cell
            if cov.tracked and t.x_dmm != POSITION_UNKNOWN and t.y_dmm != POSITION_UNKNOWN:
                self._cell = cov.cell_at(t.x_dmm / 10.0, t.y_dmm / 10.0)
            else:
                self._cell = -1
            # More than a cell in a frame: faster than the dose hold can follow.
            self._fast = cov.cells_apart(before, self._cell) > 1
        else:
            self._fast = False
        last = self._last_stamps
        self._last_stamps = t.stamp_count
        if last is None or t.stamp_count == last:
            return 0
        strokes = (t.stamp_count - last) & _U32
        if strokes > MAX_STROKES_PER_FRAME:
            return strokes
        if zone_id is not None:
            cov.add_strokes(zone_id, strokes, self._cell, now_us)
            self._check_done = True
        return 0

    def zone_done(self, cov: Coverage, zone_id: int) -> bool:
        """The zone reached its target; asked again only after new strokes."""
        if not self._check_done:
            return False
        self._check_done = False
        return cov.done(zone_id)

    def hold(
        self,
        cov: Coverage,
        zone: ZonePlan,
        now_us: int,
        *,
        contact_sensor: bool,
        current_hold: str | None,
    ) -> tuple[str | None, bool]:
        """(why stamping must hold, or None; whether the tip is over a spot to treat).

        Stamping restarts after a coverage hold only over a spot below its
        target (not merely under its maximum), so the hold does not flicker
        at a zone's edge; after a contact hold any spot under its maximum will do.
        """
        lost = self._contact_lost_us
        if contact_sensor and lost is not None and now_us - lost > CONTACT_LOST_LIMIT_US:
            return CONTACT_HOLD, False
        if not cov.tracked:
            if cov.at_estimated_max(zone.zone_id):
                return f"zone {zone.name} reached its estimated maximum passes", False
            return None, True
        spot = cov.spot(zone.zone_id, self._cell, now_us)  # kept while it holds (Coverage)
        if spot is Spot.OUTSIDE or spot is Spot.OFF_MAP:
            return f"the tip is outside zone {zone.name}", False
        if spot is Spot.EDGE:
            return f"the needles would reach too far past the border of zone {zone.name}", False
        if self._fast and (lost is None or not contact_sensor):
            # on the skin and faster than the hold can follow: stamping stops, and a
            # held pen is not started again until the tip slows (it was restarted on
            # the next frame, so a fast hand got STOP and START on alternate frames)
            return (FAST_HOLD if current_hold is None else current_hold), False
        if spot is Spot.AT_MAX:
            return AT_MAX_HOLD, False
        return None, spot is Spot.NEEDS or current_hold == CONTACT_HOLD
