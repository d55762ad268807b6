"""What a coverage shows: its grid for the live maps and the simulated technician.

`CoverageViews` is mixed into coverage.Coverage; it only reads the counts, and
copies what it hands out, so a monitor may hold a view while the loop stamps on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from devicectl.dose import DoseView, ZoneLimits
from devicectl.footprint import IntArray
from devicectl.patches import hand_mask
from devicectl.plan import ZonePlan
from devicectl.reach import Reach, room_in


class CoverageViews:
    """The views of a Coverage; the attributes are Coverage's (coverage.py)."""

    tracked: bool
    zones: Mapping[int, ZonePlan]
    limits: dict[int, ZoneLimits]
    reach: Reach
    hits: npt.NDArray[np.int32]
    cell_mm: float
    footprint_mm: float
    _ny: int
    _nx: int
    _x0_mm: float
    _y0_mm: float
    _labels: npt.NDArray[np.uint8]
    _treat: npt.NDArray[np.uint8]
    _target: npt.NDArray[np.int32]
    _max: npt.NDArray[np.int32]
    _patch_edge: npt.NDArray[np.bool_]
    _guard_dy: IntArray
    _guard_dx: IntArray
    _boxes: dict[int, tuple[tuple[slice, slice], npt.NDArray[np.bool_]]]

    def limits_grid(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """(target, maximum) hits per cell, shaped like the grid; 0 off the plan."""
        planned = np.isin(self._labels, list(self.limits))
        target = np.where(planned, self._target, 0).reshape(self._ny, self._nx)
        most = np.where(planned, self._max, 0).reshape(self._ny, self._nx)
        return target.astype(np.int32), most.astype(np.int32)

    def treated_grid(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
        """(zone, maximum) per cell, shaped like the grid: the plan's zone a stroke there
        treats (a patch's margin is its zone's, within the same maximum) and the cell's
        maximum hits; 0 off the plan. What counts as over a zone's maximum on screen
        (snapshot_build) as in the records (dose.zone_dose_stats)."""
        zone = np.where(np.isin(self._treat, list(self.limits)), self._treat, 0)
        most = np.where(zone != 0, self._max, 0)
        return (zone.astype(np.uint8).reshape(self._ny, self._nx),
                most.astype(np.int32).reshape(self._ny, self._nx))

    def zone_hits(self, zone_id: int) -> npt.NDArray[np.int32]:
        """A (ny, nx) copy of the hits on zone `zone_id`'s cells, 0 elsewhere."""
        out = np.where(self._labels == zone_id, self.hits, 0)
        return out.reshape(self._ny, self._nx)

    def hits_grid(self) -> npt.NDArray[np.int32]:
        """A (ny, nx) copy of the hits on every cell."""
        return self.hits.reshape(self._ny, self._nx).copy()

    def passes_grid(self) -> npt.NDArray[np.int32]:
        """The live views' name for `hits_grid`: the grid in its own unit. A method,
        not an alias: compiled (mypyc), a base class's alias breaks its subclasses."""
        return self.hits_grid()

    def zone_view(
        self, zone_id: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_], int, int] | None:
        """For live maps: the zone's hits and mask cropped to its bounding box,
        its target and maximum (hits). The crop is small, so a monitor can take
        it at its own rate without holding the GIL for long."""
        lim = self.limits.get(zone_id)
        box = self.zone_box(zone_id)
        if lim is None or box is None:
            return None
        sl, crop_mask = box
        hits = self.hits.reshape(self._ny, self._nx)[sl].copy()
        return hits, crop_mask, lim.target_hits, lim.max_hits

    def hand_view(self, zone_id: int) -> DoseView | None:
        """The zone's crop as the simulated technician sees it (firmware_sim.handpiece);
        a zone treated as patches shows its patches with their margin."""
        lim = self.limits.get(zone_id)
        box = self.zone_box(zone_id, treated=True)
        if lim is None or box is None or not self.tracked:
            return None
        (rows, cols), crop_mask = box
        x0, y0 = self.cell_centre_mm(rows.start, cols.start)
        half = self.cell_mm / 2
        shape = (self._ny, self._nx)
        hits = self.hits.reshape(shape)
        stampable = self.reach.stampable((rows, cols)) & (
            self._treat.reshape(shape)[rows, cols] == zone_id)
        room = room_in((rows, cols), hits, self._max.reshape(shape), stampable,
                       (self._guard_dy, self._guard_dx))
        return DoseView(
            x0 - half, y0 - half, self.cell_mm, hits[rows, cols].copy(), crop_mask,
            lim.target_hits, lim.max_hits, lim.hits_per_pass, room,
        )

    def zone_box(
        self, zone_id: int, *, treated: bool = False
    ) -> tuple[tuple[slice, slice], npt.NDArray[np.bool_]] | None:
        """The zone's bounding box on the grid and its mask there (cached); `treated`:
        the skin a stroke for the zone may reach (with a patch's margin)."""
        key = -zone_id if treated else zone_id
        box = self._boxes.get(key)
        if box is None:
            mask = (self._labels == zone_id).reshape(self._ny, self._nx)
            if treated and zone_id in self.zones and self.zones[zone_id].patches:
                mask = self._patch_reach(zone_id)
            ys, xs = np.nonzero(mask)
            if ys.size == 0:
                return None
            sl = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
            box = self._boxes[key] = (sl, mask[sl].copy())
        return box

    def _patch_reach(self, zone_id: int) -> npt.NDArray[np.bool_]:
        """A patched zone as a hand sees it (patches.hand_mask)."""
        shape = (self._ny, self._nx)
        treat = (self._treat == zone_id).reshape(shape)
        allowed = treat & ~self._patch_edge.reshape(shape)
        return hand_mask(treat, allowed, self.footprint_mm / self.cell_mm)

    def cell_centre_mm(self, iy: int, ix: int) -> tuple[float, float]:
        return (self._x0_mm + (ix + 0.5) * self.cell_mm, self._y0_mm + (iy + 0.5) * self.cell_mm)


__all__ = ["CoverageViews"]
