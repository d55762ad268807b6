"""Per-zone coverage: passes counted on the scalp map's grid, or estimated from strokes.

With position, each stroke adds the needle footprint to the grid cells under it,
a cell gaining one pass when its previous stroke is more than PASS_GAP_US old
(plan.py defines a pass). Per-zone counters are kept incrementally so the loop
reads zone progress in O(1). Without position, passes are estimated from the
zone's strokes (plan.estimated_passes). Sans-I/O: times are given, never read.
"""

from __future__ import annotations

import enum
import io
import math
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from devicectl.errors import DevicectlError
from devicectl.plan import PASS_GAP_US, ZonePlan, estimated_passes

#: Long before any stroke: every cell's first stroke starts a pass.
_NEVER_US: Final = -(1 << 62)
_LABELS: Final = 256

IntArray = npt.NDArray[np.int64]


class Raster(Protocol):
    """The scalp map rasterised (zones.ZoneRaster): cell (iy, ix) covers
    [x0_mm + ix·cell_mm, x0_mm + (ix+1)·cell_mm) and likewise in y."""

    @property
    def labels(self) -> npt.NDArray[np.uint8]: ...
    @property
    def x0_mm(self) -> float: ...
    @property
    def y0_mm(self) -> float: ...
    @property
    def cell_mm(self) -> float: ...


class Spot(enum.IntEnum):
    """What the cell under the tip is, for the zone being treated."""

    NEEDS = 0  # below target: treat here
    TREATABLE = 1  # at or over target, under the maximum
    AT_MAX = 2  # at its maximum (or a neighbour under the footprint over it)
    OUTSIDE = 3  # another zone, or off the zones
    OFF_MAP = 4  # off the grid, or position unknown


def footprint_offsets(footprint_mm: float, cell_mm: float) -> tuple[IntArray, IntArray]:
    """(dy, dx) of the cells whose centres lie within the footprint disc; never empty."""
    r_cells = footprint_mm / 2.0 / cell_mm
    n = max(0, math.ceil(r_cells))
    dy, dx = np.mgrid[-n : n + 1, -n : n + 1]
    inside = dy * dy + dx * dx <= r_cells * r_cells
    inside[n, n] = True
    return dy[inside].astype(np.int64), dx[inside].astype(np.int64)


class Coverage:
    """Passes per grid cell and per zone for one plan; `tracked` = position known."""

    def __init__(
        self,
        raster: Raster,
        zones: Sequence[ZonePlan],
        footprint_dmm: int,
        *,
        tracked: bool,
    ) -> None:
        self.raster = raster
        self.tracked = tracked
        self.zones = {z.zone_id: z for z in zones}
        labels = np.ascontiguousarray(raster.labels, dtype=np.uint8)
        self._ny, self._nx = labels.shape
        self._labels = labels.reshape(-1)
        self._x0_mm = float(raster.x0_mm)
        self._y0_mm = float(raster.y0_mm)
        self._inv_cell = 1.0 / float(raster.cell_mm)
        self.footprint_mm = footprint_dmm / 10.0
        self._dy, self._dx = footprint_offsets(self.footprint_mm, float(raster.cell_mm))
        self._reach = int(max(np.abs(self._dy).max(), np.abs(self._dx).max()))
        self._flat_off = self._dy * self._nx + self._dx
        target_of = np.zeros(_LABELS, dtype=np.int64)
        max_of = np.zeros(_LABELS, dtype=np.int64)
        for z in zones:
            target_of[z.zone_id] = z.target_passes
            max_of[z.zone_id] = z.max_passes
        # Cells outside the plan's zones have target = max = 0: a pass count is
        # never 0 right after an increment, so they never enter a zone counter.
        self._target = target_of[self._labels]
        self._max = max_of[self._labels]
        # The bound a neighbour may not pass: its maximum; unbounded off the plan.
        self._over = np.where(self._max > 0, self._max, np.iinfo(np.int64).max)
        self._zone_cells = np.bincount(self._labels, minlength=_LABELS)
        self.passes = np.zeros(self._labels.size, dtype=np.int64)
        self._last_us = np.full(self._labels.size, _NEVER_US, dtype=np.int64)
        self._at_target = np.zeros(_LABELS, dtype=np.int64)
        self._at_max = np.zeros(_LABELS, dtype=np.int64)
        self._strokes: dict[int, int] = {z.zone_id: 0 for z in zones}
        self._boxes: dict[int, tuple[tuple[slice, slice], npt.NDArray[np.bool_]]] = {}
        #: bumped whenever a pass is added, so callers can cache spot verdicts
        self.version = 0

    # --- positions ----------------------------------------------------------

    def cell_at(self, x_mm: float, y_mm: float) -> int:
        """Flat index of the cell under (x, y), or -1 off the grid."""
        ix = math.floor((x_mm - self._x0_mm) * self._inv_cell)
        iy = math.floor((y_mm - self._y0_mm) * self._inv_cell)
        if 0 <= ix < self._nx and 0 <= iy < self._ny:
            cell: int = iy * self._nx + ix
            return cell
        return -1

    def _footprint(self, cell: int) -> IntArray:
        iy, ix = divmod(cell, self._nx)
        r = self._reach
        out: IntArray
        if r <= ix < self._nx - r and r <= iy < self._ny - r:
            out = cell + self._flat_off
            return out
        ys = iy + self._dy
        xs = ix + self._dx
        ok = (ys >= 0) & (ys < self._ny) & (xs >= 0) & (xs < self._nx)
        out = ys[ok] * self._nx + xs[ok]
        return out

    # --- updates ------------------------------------------------------------

    def add_strokes(self, zone_id: int, strokes: int, cell: int, now_us: int) -> None:
        """Record `strokes` new strokes of zone `zone_id`'s treatment at `cell`.

        `cell` is -1 when the position is unknown or off the grid: the strokes
        still count towards the zone's stroke total (the estimate) but mark no
        cells. Several strokes in one call are one moment: at most one pass.
        """
        if strokes <= 0:
            return
        self._strokes[zone_id] = self._strokes.get(zone_id, 0) + strokes
        if cell < 0 or not self.tracked:
            return
        idx = self._footprint(cell)
        fresh = idx[(now_us - self._last_us[idx]) > PASS_GAP_US]
        self._last_us[idx] = now_us
        if fresh.size == 0:
            return
        self.passes[fresh] += 1
        self.version += 1
        p = self.passes[fresh]
        hit = fresh[p == self._target[fresh]]
        if hit.size:
            self._at_target += np.bincount(self._labels[hit], minlength=_LABELS)
        hit = fresh[p == self._max[fresh]]
        if hit.size:
            self._at_max += np.bincount(self._labels[hit], minlength=_LABELS)

    # --- queries ------------------------------------------------------------

    def spot(self, zone_id: int, cell: int, now_us: int) -> Spot:
        """What the tip over `cell` would do to zone `zone_id` at `now_us` (tracked mode).

        AT_MAX when the cell is at its maximum, or when a stroke here would
        give a spot under the footprint already one over its maximum yet
        another pass (its last stroke is more than PASS_GAP_US old): that
        bounds every spot to its maximum plus one pass, the footprint's edge
        reaching it before the centre does.
        """
        if cell < 0:
            return Spot.OFF_MAP
        if int(self._labels[cell]) != zone_id:
            return Spot.OUTSIDE
        passes = int(self.passes[cell])
        if passes >= int(self._max[cell]):
            return Spot.AT_MAX
        idx = self._footprint(cell)
        over = idx[self.passes[idx] > self._over[idx]]
        if over.size and bool(np.any(now_us - self._last_us[over] > PASS_GAP_US)):
            return Spot.AT_MAX
        if passes < int(self._target[cell]):
            return Spot.NEEDS
        return Spot.TREATABLE

    def strokes(self, zone_id: int) -> int:
        return self._strokes.get(zone_id, 0)

    def estimated_passes(self, zone_id: int) -> float:
        z = self.zones[zone_id]
        if z.area_mm2 <= 0 or z.rate_dhz <= 0 or self.footprint_mm <= 0:
            return 0.0
        return estimated_passes(
            self._strokes.get(zone_id, 0), z.area_mm2, self.footprint_mm, z.rate_dhz / 10.0
        )

    def fraction(self, zone_id: int) -> float:
        """The fraction of the zone at its target passes (estimated without position)."""
        z = self.zones[zone_id]
        if not self.tracked:
            if z.target_passes <= 0:
                return 1.0
            return min(1.0, self.estimated_passes(zone_id) / z.target_passes)
        cells = int(self._zone_cells[zone_id])
        return int(self._at_target[zone_id]) / cells if cells else 1.0

    def cells_at_max(self, zone_id: int) -> int:
        """Cells of the zone at or over their maximum (tracked mode; 0 otherwise)."""
        return int(self._at_max[zone_id])

    def zone_cells(self, zone_id: int) -> int:
        return int(self._zone_cells[zone_id])

    def done(self, zone_id: int) -> bool:
        """The zone reached its target: the target fraction, or the estimated target."""
        z = self.zones[zone_id]
        if not self.tracked:
            return self.estimated_passes(zone_id) >= z.target_passes
        return self.fraction(zone_id) >= z.target_fraction

    def at_estimated_max(self, zone_id: int) -> bool:
        """Without position: the zone's strokes reached its estimated maximum."""
        return self.estimated_passes(zone_id) >= self.zones[zone_id].max_passes

    def zone_passes(self, zone_id: int) -> npt.NDArray[np.int64]:
        """A (ny, nx) copy of the passes on zone `zone_id`'s cells, 0 elsewhere."""
        out = np.where(self._labels == zone_id, self.passes, 0)
        return out.reshape(self._ny, self._nx)

    def passes_grid(self) -> npt.NDArray[np.int64]:
        """A (ny, nx) copy of the passes on every cell."""
        return self.passes.reshape(self._ny, self._nx).copy()

    def cells_over_max(self, zone_id: int) -> int:
        """Cells of the zone past their maximum (O(cells): for summaries, not the loop)."""
        mask = self._labels == zone_id
        return int(np.count_nonzero(self.passes[mask] > self._max[mask]))

    def zone_view(
        self, zone_id: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], int, int] | None:
        """For live maps: the zone's passes and mask cropped to its bounding box,
        its target and maximum. The crop is small, so a monitor thread can take
        it at its own rate without holding the GIL for long."""
        z = self.zones.get(zone_id)
        if z is None:
            return None
        box = self._boxes.get(zone_id)
        if box is None:
            mask = (self._labels == zone_id).reshape(self._ny, self._nx)
            ys, xs = np.nonzero(mask)
            if ys.size == 0:
                return None
            sl = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
            box = self._boxes[zone_id] = (sl, mask[sl].copy())
        sl, crop_mask = box
        passes = self.passes.reshape(self._ny, self._nx)[sl].copy()
        return passes, crop_mask, z.target_passes, z.max_passes

    def max_passes_in(self, zone_id: int) -> int:
        """The most passes on any cell of the zone."""
        mask = self._labels == zone_id
        return int(self.passes[mask].max()) if mask.any() else 0

    # --- save / restore -----------------------------------------------------

    def to_bytes(self) -> bytes:
        """The counts, as an .npz archive: enough to resume after a crash."""
        return self.snapshot()()

    def snapshot(self) -> Callable[[], bytes]:
        """A copy of the counts now (a memcpy), serialised to `to_bytes` form only
        when called: the inner loop takes the copy, the record writer's thread
        pays for the archive (a few ms that must stay off the loop)."""
        shape = np.array([self._ny, self._nx], dtype=np.int64)
        passes = self.passes.copy()
        ids = np.array(sorted(self._strokes), dtype=np.int64)
        strokes = np.array([self._strokes[i] for i in ids], dtype=np.int64)

        def archive() -> bytes:
            buf = io.BytesIO()
            np.savez(buf, shape=shape, passes=passes, zone_ids=ids, strokes=strokes)
            return buf.getvalue()

        return archive

    def restore(self, data: bytes) -> None:
        """Take the counts of `to_bytes` back; refuses those of another grid."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                shape = tuple(int(v) for v in saved["shape"])
                passes = np.asarray(saved["passes"], dtype=np.int64)
                ids = [int(v) for v in saved["zone_ids"]]
                strokes = [int(v) for v in saved["strokes"]]
        except (OSError, ValueError, KeyError) as exc:
            raise DevicectlError(f"the saved coverage cannot be read: {exc}") from None
        if shape != (self._ny, self._nx) or passes.shape != self.passes.shape:
            raise DevicectlError(
                f"the saved coverage is for a {shape[0]}×{shape[1]} grid, "
                f"not this map's {self._ny}×{self._nx}"
            )
        self.passes[:] = passes
        self._last_us[:] = _NEVER_US
        for i, n in zip(ids, strokes, strict=True):
            self._strokes[i] = n
        reached = (self.passes >= self._target) & (self._target > 0)
        self._at_target = np.bincount(self._labels[reached], minlength=_LABELS)
        maxed = (self.passes >= self._max) & (self._max > 0)
        self._at_max = np.bincount(self._labels[maxed], minlength=_LABELS)
        self.version += 1
