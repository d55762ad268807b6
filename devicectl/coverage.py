"""Per-zone dose: strokes over each cell of the scalp map's grid, or estimated from strokes.

With position, each stroke adds one *hit* to every grid cell under its
footprint; a hit is the dose of one stroke spread over the footprint
(dose.stroke_punctures_per_cm2), so a cell's hits are its punctures per cm².
Each zone's target and maximum are hits (dose.zone_limits). Stamping may go on
only where the next stroke keeps every cell under the footprint within its
maximum: `spot` says so for a tip cell, over the footprint grown by one cell
(the tip moves < one cell between a telemetry frame and the STOP it causes).
Cells outside the zone being treated count as at their maximum, except that
the footprint may overhang the zone's border by MAX_OVERHANG_FRACTION of its
area; the spill that does land is recorded. Counters are kept incrementally so
the loop reads zone progress in O(1). Sans-I/O: times are given, never read.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from devicectl.coverage_zones import CoverageZones
from devicectl.dose import (
    NOMINAL_HAND_SPEED_MM_S,
    SPILL_MAX_PASSES,
    ZoneLimits,
    stroke_punctures_per_cm2,
    zone_limits,
)
from devicectl.footprint import (
    HITS,
    LABELS,
    CellsAround,
    IntArray,
    Raster,
    footprint_offsets,
    grown,
    same_label_counts,
)
from devicectl.patches import (
    MARGIN_BIT,
    patch_problems_untracked,
    patched_raster,
)
from devicectl.plan import ZonePlan
from devicectl.reach import Reach
from devicectl.safety import MAX_OVERHANG_FRACTION


class Spot(enum.IntEnum):
    """What a stroke with the tip over a cell would do, for the zone being treated."""

    NEEDS = 0  # a spot of the zone under the footprint is below target: treat here
    TREATABLE = 1  # at or over target; the next stroke keeps every cell within its maximum
    AT_MAX = 2  # the next stroke would take a cell under the footprint over its maximum
    OUTSIDE = 3  # another zone, or off the zones
    OFF_MAP = 4  # off the grid, or position unknown
    EDGE = 5  # in the zone, but the footprint would overhang its border too far


#: A verdict no stroke can change (the grid's layout; a cell at its maximum stays there).
_FOREVER: Final = 1 << 62


def _crossed(new: npt.NDArray[np.int32], limit: int, strokes: int) -> npt.NDArray[np.bool_]:
    """Which cells a stroke adding `strokes` hits to each took from below `limit` to it
    or over (`new`: their hits after): one comparison for the common single stroke."""
    out: npt.NDArray[np.bool_] = (
        new == limit if strokes == 1 else (new >= limit) & (new < limit + strokes)
    )
    return out


def _count(counter: list[int], labels: npt.NDArray[np.uint8], times: int = 1) -> None:
    """Add `times` to each label's counter once per cell of `labels`."""
    for label in labels.tolist():
        counter[label] += times


class Coverage(CoverageZones):
    """Hits per grid cell and dose per zone for one plan; `tracked` = position known.
    Its views (coverage_views), save/restore (coverage_archive) and figures per zone
    (coverage_zones) are mixed in."""

    def __init__(
        self,
        raster: Raster,
        zones: Sequence[ZonePlan],
        footprint_dmm: int,
        *,
        tracked: bool,
        needle_count: int,
    ) -> None:
        # a zone treated as patches: the rest of it reads as off the plan (patches.py)
        raster = patched_raster(raster, zones)
        self.raster = raster
        self.tracked = tracked
        self.zones = {z.zone_id: z for z in zones}
        labels2d = np.ascontiguousarray(raster.labels, dtype=np.uint8)
        self._ny, self._nx = int(labels2d.shape[0]), int(labels2d.shape[1])
        self._labels = labels2d.reshape(-1)
        self._x0_mm = float(raster.x0_mm)
        self._y0_mm = float(raster.y0_mm)
        self.cell_mm = float(raster.cell_mm)
        self._inv_cell = 1.0 / self.cell_mm
        self.footprint_dmm = footprint_dmm
        self.footprint_mm = footprint_dmm / 10.0
        self.needle_count = needle_count
        dy, dx = footprint_offsets(self.footprint_mm, self.cell_mm)
        self._fp_cells = int(dy.size)
        reach = int(max(np.abs(dy).max(), np.abs(dx).max()))
        gy, gx = grown(dy, dx)
        self._guard_dy, self._guard_dx = gy, gx
        # the footprint's cells (the first), and those a footprint one cell away reaches
        self._guard = CellsAround(self._ny, self._nx, gy, gx, reach + 1, inner=self._fp_cells)
        # the zone a stroke there treats: a patch's margin is its zone's to treat
        treat_of = np.arange(LABELS, dtype=np.uint8)
        for z in zones:
            if z.patches:
                treat_of[z.zone_id | MARGIN_BIT] = z.zone_id
        self._treat_of = treat_of
        treat2d = treat_of[labels2d]
        self._treat = treat2d.reshape(-1)

        def own_counts(grid: npt.NDArray[np.uint8]) -> IntArray:
            """Per cell of a plan's zone, its footprint's cells on its own label. Only
            the plan's zones are ever stamped: count their cells alone (the whole map
            took ~40 ms, long enough, on a loaded machine, to starve the pen's
            watchdog while the controller configures it)."""
            out = np.zeros(self._ny * self._nx, dtype=np.int64)
            reach = int(max(np.abs(dy).max(), np.abs(dx).max()))
            for z in zones:
                ys, xs = np.nonzero(grid == z.zone_id)
                if ys.size == 0:
                    continue
                y0, y1 = max(0, int(ys.min()) - reach), min(self._ny, int(ys.max()) + reach + 1)
                x0, x1 = max(0, int(xs.min()) - reach), min(self._nx, int(xs.max()) + reach + 1)
                counts = same_label_counts(grid[y0:y1, x0:x1], dy, dx).reshape(y1 - y0, x1 - x0)
                out2d = out.reshape(self._ny, self._nx)
                mine = grid[y0:y1, x0:x1] == z.zone_id
                out2d[y0:y1, x0:x1][mine] = counts[mine]
            return out

        self._same = own_counts(treat2d)
        # footprints wholly on one label (counters by one zone); differs only with margins
        margins = bool((labels2d != treat2d).any())
        pure = (own_counts(labels2d) if margins else self._same) == self._fp_cells
        # cells whose grown footprint lies in their own zone: the hold test there
        # compares with one number, the zone's maximum (the common case, and fast)
        inner = (self._same == self._fp_cells).reshape(self._ny, self._nx)
        core = inner.copy()
        core[1:, :] &= inner[:-1, :]
        core[:-1, :] &= inner[1:, :]
        core[:, 1:] &= inner[:, :-1]
        core[:, :-1] &= inner[:, 1:]
        core[1:, 1:] &= inner[:-1, :-1]
        core[1:, :-1] &= inner[:-1, 1:]
        core[:-1, 1:] &= inner[1:, :-1]
        core[:-1, :-1] &= inner[1:, 1:]
        self._overhang_cells = math.floor(MAX_OVERHANG_FRACTION * self._fp_cells)
        # a patch (with its margin) is never overhung: no stroke there reaches past it,
        # even one that lands a cell on from where the tip was seen (the guard)
        patched = [z.zone_id for z in zones if z.patches]
        self._patch_edge = np.zeros(self._labels.size, dtype=bool)
        if patched:
            inside = same_label_counts(treat2d, gy, gx)
            self._patch_edge = np.isin(self._treat, patched) & (inside < gy.size)
        self.punctures_per_hit = (
            stroke_punctures_per_cm2(max(1, needle_count), self._fp_cells, self.cell_mm)
        )
        self.limits: dict[int, ZoneLimits] = {
            z.zone_id: zone_limits(
                z.zone_id, z.target_passes, z.max_passes, z.pass_punctures_per_cm2,
                z.max_punctures_per_cm2, self.punctures_per_hit,
            )
            for z in zones
        }
        #: Why this plan cannot be dosed on this grid (empty: it can); the go/no-go reads it.
        self.problems = tuple(
            f"zone {self.zones[lim.zone_id].name}: its maximum dose is below its target "
            f"({lim.max_hits} < {lim.target_hits} strokes over a spot)"
            for lim in self.limits.values()
            if lim.max_hits < lim.target_hits
        ) + tuple(patch_problems_untracked(zones, tracked))
        # Cells off the plan may take spill up to SPILL_MAX_PASSES of the thinnest pass.
        spill_cap = min(
            (max(1, math.floor(SPILL_MAX_PASSES * lim.hits_per_pass))
             for lim in self.limits.values()),
            default=1,
        )
        target_of = np.full(LABELS, np.iinfo(HITS).max, dtype=HITS)
        max_of = np.full(LABELS, spill_cap, dtype=HITS)
        for lim in self.limits.values():
            target_of[lim.zone_id] = lim.target_hits
            max_of[lim.zone_id] = lim.max_hits
            if self.zones[lim.zone_id].patches:  # its margin: the same limits
                target_of[lim.zone_id | MARGIN_BIT] = lim.target_hits
                max_of[lim.zone_id | MARGIN_BIT] = lim.max_hits
        # the same per zone as plain ints, for the loop's reads of one zone's
        self._target_hits: list[int] = target_of.tolist()
        #: per zone id, whether it has patches (so margins: treated, never needed)
        self._margined: list[bool] = [False] * LABELS
        for z in zones:
            self._margined[z.zone_id] = bool(z.patches)
        self._max_hits: list[int] = max_of.tolist()
        self._target = target_of[self._labels]
        self._max = max_of[self._labels]
        # per cell, the zone whose spot verdict there takes the core's path (neither
        # OUTSIDE nor EDGE for it), else 0, no plan's zone (zone ids start at 1): one
        # byte read in the loop, where each numpy array's took ~0.15 µs
        # tips the layout allows (the footprint overhangs its zone by at most the allowed
        # fraction, and crosses no patch's edge): Reach's allowed tips, the same array
        allowed = (self._fp_cells - self._same <= self._overhang_cells) & ~self._patch_edge
        # ... and whose maximum a stroke reaches (Reach.on_max marks the tips it blocks)
        quick = core.reshape(-1) & allowed & (max_of[self._treat] > 0)
        self._core_zone = np.where(quick, self._treat, 0).astype(np.uint8).tobytes()
        self._zone_cells = np.bincount(self._labels, minlength=LABELS)
        # per cell, the zone a stroke there counts for alone (its footprint wholly on that
        # zone's cells), else 0 (as _core_zone)
        self._pure_zone = np.where(pure, self._labels, 0).astype(np.uint8).tobytes()
        self.hits = np.zeros(self._labels.size, dtype=HITS)
        self._spilled = np.zeros(self._labels.size, dtype=bool)
        # per label: hits, cells at target (reachable), cells at maximum; plain ints, as
        # a stroke changes one zone's (a numpy element's update took ~0.25 µs)
        self._sum_hits = [0] * LABELS
        self._at_target = [0] * LABELS
        self._at_max = [0] * LABELS
        self._spill_cells = np.zeros(LABELS, dtype=np.int64)
        #: per zone, the deepest treatment that spilled onto it (µm)
        self._spill_depth_um = np.zeros(LABELS, dtype=np.int64)
        self._strokes: dict[int, int] = {z.zone_id: 0 for z in zones}
        self._boxes: dict[int, tuple[tuple[slice, slice], npt.NDArray[np.bool_]]] = {}
        #: the cells a stroke may still reach (docs/profiles.md, "When a zone is done")
        self.reach = Reach(
            self._treat, (self._ny, self._nx), (dy, dx), (gy, gx), allowed, self.limits,
        )
        if patched:  # a patch's margin is treated (its tips reach), but not measured
            self.reach.reachable &= self._treat == self._labels
            self.reach.reachable_cells = np.bincount(self._treat[self.reach.reachable],
                                                     minlength=LABELS)
        #: bumped whenever a stroke lands on the grid (or a restore replaces it), so that
        #: a copy of the grid (the snapshot's crop) is made again only when it changed
        self.version = 0
        #: strokes landed on the grid; each adds one hit to the cells under it, and hits
        #: only grow (until a restore), so a spot verdict lasts a known number of them
        self.landed = 0
        # the last spot verdict, and `landed` up to which it holds (-1: none)
        self._memo_zone, self._memo_cell, self._memo_spot = -1, -1, Spot.OFF_MAP
        self._memo_until = -1

    # --- positions ----------------------------------------------------------

    def cell_at(self, x_mm: float, y_mm: float) -> int:
        """Flat index of the cell under (x, y), or -1 off the grid."""
        ix = math.floor((x_mm - self._x0_mm) * self._inv_cell)
        iy = math.floor((y_mm - self._y0_mm) * self._inv_cell)
        if 0 <= ix < self._nx and 0 <= iy < self._ny:
            cell: int = iy * self._nx + ix
            return cell
        return -1

    def cells_apart(self, a: int, b: int) -> int:
        """Chebyshev distance between two cells in cells (0 if either is off the grid:
        no distance is measured from or to an unknown place)."""
        if a < 0 or b < 0:
            return 0
        nx = self._nx  # // and %, not divmod: plain integer operations when compiled
        return max(abs(a // nx - b // nx), abs(a % nx - b % nx))

    def footprint_cells(self, cell: int) -> IntArray:
        """Flat indices of the cells a stroke with the tip over `cell` reaches (read-only)."""
        return self._guard.inner_at(cell)

    # --- updates ------------------------------------------------------------

    def add_strokes(self, zone_id: int, strokes: int, cell: int, now_us: int = 0) -> None:
        """Record `strokes` new strokes of zone `zone_id`'s treatment at `cell`.

        `cell` is -1 when the position is unknown or off the grid: the strokes
        still count towards the zone's stroke total (the estimate) but mark no
        cells. Dwelling is dose: every stroke adds a hit to every cell under it.
        """
        if strokes <= 0:
            return
        self._strokes[zone_id] = self._strokes.get(zone_id, 0) + strokes
        if cell < 0 or not self.tracked:
            return
        self.landed += strokes
        idx = self.footprint_cells(cell)
        hits = self.hits
        old = hits[idx]
        new = old + strokes
        hits[idx] = new
        self.version += 1
        if zone_id > 0 and self._pure_zone[cell] == zone_id:
            # the whole footprint inside the zone: scalar limits, no spill
            self._sum_hits[zone_id] += strokes * idx.size
            top = int(new.max())
            t = self._target_hits[zone_id]
            if top >= t:  # only then can a cell have crossed a threshold
                crossed = _crossed(new, t, strokes)
                n = int(np.count_nonzero(crossed))
                if n:
                    self._at_target[zone_id] += n
                    if self.reach.held_cells[zone_id]:
                        self.reach.on_target(idx[crossed])
                m = self._max_hits[zone_id]
                if top >= m:
                    maxed = _crossed(new, m, strokes)
                    n = int(np.count_nonzero(maxed))
                    if n:
                        self._at_max[zone_id] += n
                        self.reach.on_max(idx[maxed], self.hits, self._target)
                        self._memo_until = -1  # (spot: a kept verdict may be AT_MAX now)
            return
        labs = self._labels[idx]
        _count(self._sum_hits, labs, strokes)
        t_arr = self._target[idx]
        reached = (old < t_arr) & (new >= t_arr) & self.reach.reachable[idx]
        if reached.any():
            _count(self._at_target, labs[reached])
            self.reach.on_target(idx[reached])
        m_arr = self._max[idx]
        reached = (old < m_arr) & (new >= m_arr)
        if reached.any():
            _count(self._at_max, labs[reached])
            self.reach.on_max(idx[reached], self.hits, self._target)
            self._memo_until = -1
        out = idx[self._treat_of[labs] != zone_id]
        if out.size:
            depth = self.zones[zone_id].depth_um if zone_id in self.zones else 0
            spilt = self._labels[out]
            np.maximum.at(self._spill_depth_um, spilt, depth)
        fresh = out[~self._spilled[out]]
        if fresh.size:
            self._spilled[fresh] = True
            self._spill_cells += np.bincount(self._labels[fresh], minlength=LABELS)

    # --- queries ------------------------------------------------------------

    def spot(self, zone_id: int, cell: int, now_us: int = 0) -> Spot:
        """What a stroke with the tip over `cell` would do to zone `zone_id` (tracked mode).

        AT_MAX when any cell under the footprint, or under a footprint one cell
        away, is at its maximum: the next stroke may land there before a STOP
        reaches the pen. EDGE when more than MAX_OVERHANG_FRACTION of the
        footprint lies outside the zone. NEEDS when a cell of the zone under the
        footprint is below its target: stamping may restart there, so every cell
        an allowed stroke reaches can be finished (module reach).

        The last verdict is kept for as many landed strokes as cannot change it
        (the loop asks at every frame and after every stroke; `_spot_lasting`).
        """
        if zone_id == self._memo_zone and cell == self._memo_cell and (
                self.landed <= self._memo_until):
            return self._memo_spot
        spot, lasts = self._spot_lasting(zone_id, cell)
        self._memo_zone, self._memo_cell, self._memo_spot = zone_id, cell, spot
        self._memo_until = self.landed + lasts
        return spot

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self._memo_until = -1  # the hits were replaced: no verdict carries over

    def _spot_lasting(self, zone_id: int, cell: int) -> tuple[Spot, int]:
        """`spot`'s verdict, and how many more landed strokes it surely survives.

        A stroke adds one hit to each cell under it, so after n more strokes no
        cell has gained more than n: NEEDS, from the fewest hits on the footprint
        (`low`), stands while low + n stays below the target. NEEDS and TREATABLE
        become AT_MAX only when a cell reaches its maximum, and add_strokes then
        forgets the kept verdict. The layout's verdicts, and AT_MAX, never change
        (hits only grow). By a zone's border the verdict lasts until the next stroke.
        """
        if cell < 0:
            return Spot.OFF_MAP, _FOREVER
        if zone_id > 0 and self._core_zone[cell] == zone_id:
            # the grown footprint in the zone (so neither OUTSIDE nor EDGE), and the tip
            # allowed: a cell under it at its maximum has blocked it (Reach.on_max)
            if self.reach.tip_blocked[cell]:
                return Spot.AT_MAX, _FOREVER
            fp = self.footprint_cells(cell)
            if self._margined[zone_id]:  # a margin is treated, not needed: the zone's own
                fp = fp[self._labels[fp] == zone_id]
                if fp.size == 0:
                    return Spot.TREATABLE, _FOREVER
            low = int(self.hits[fp].min())
            target = self._target_hits[zone_id]
            if low < target:
                return Spot.NEEDS, target - 1 - low
            return Spot.TREATABLE, _FOREVER
        if int(self._treat[cell]) != zone_id:
            return Spot.OUTSIDE, _FOREVER
        if self._fp_cells - int(self._same[cell]) > self._overhang_cells or self._patch_edge[cell]:
            return Spot.EDGE, _FOREVER
        idx = self._guard.at(cell)
        # by a zone's border: cells of other limits around; asked again after any stroke
        if bool((self.hits[idx] >= self._max[idx]).any()):
            return Spot.AT_MAX, _FOREVER
        fp = self.footprint_cells(cell)
        fp = fp[self._labels[fp] == zone_id]
        if bool((self.hits[fp] < self._target[fp]).any()):
            return Spot.NEEDS, 0
        return Spot.TREATABLE, 0


__all__ = [
    "NOMINAL_HAND_SPEED_MM_S", "Coverage", "IntArray", "Raster", "Spot", "footprint_offsets",
]
