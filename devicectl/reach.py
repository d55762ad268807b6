"""Which cells of a zone a stroke may still reach under the hold rules.

A stroke with the tip over cell t of the zone being treated is allowed when
the footprint overhangs the zone's border by at most the allowed fraction
(the tip is *allowed*) and no cell under the footprint grown by one cell is
at its maximum (the tip is not *blocked*). A cell of the zone is *reachable*
when some allowed tip's footprint covers it; a reachable cell below its target
is *held* once every allowed tip that covers it is blocked. Dose only grows,
so a held cell stays held: no allowed stroke can ever bring it to its target.
A zone's done is counted on its reachable cells less its held ones
(docs/profiles.md). The held set changes only when a cell reaches its maximum,
and is then updated around that cell alone. Sans-I/O, numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np
import numpy.typing as npt

from devicectl.footprint import reduce_over, row_runs

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_LABELS: Final = 256


def dilate(cells: BoolArray, dy: IntArray, dx: IntArray) -> BoolArray:
    """`cells` (2-D) grown by the offsets: out[y, x] = any cells[y - a, x - b]."""
    ny, nx = cells.shape
    out = np.zeros_like(cells)
    for a, b in zip(dy.tolist(), dx.tolist(), strict=True):
        ys, ye = max(0, a), min(ny, ny + a)
        xs, xe = max(0, b), min(nx, nx + b)
        if ys < ye and xs < xe:
            out[ys:ye, xs:xe] |= cells[ys - a : ye - a, xs - b : xe - b]
    return out


class Reach:
    """Reachable and held cells for the zones of a plan, on a (ny, nx) grid (flat arrays)."""

    def __init__(
        self,
        labels: npt.NDArray[np.uint8],
        shape: tuple[int, int],
        footprint: tuple[IntArray, IntArray],
        guard: tuple[IntArray, IntArray],
        tip_allowed: BoolArray,
        zone_ids: Iterable[int],
    ) -> None:
        self._labels = labels
        self._ny, self._nx = shape
        self._fp_dy, self._fp_dx = footprint
        self._guard_dy, self._guard_dx = guard
        self._reach = int(max(np.abs(self._guard_dy).max(), np.abs(self._guard_dx).max()))
        self.zone_ids = tuple(zone_ids)
        lut = np.zeros(_LABELS, dtype=bool)
        lut[list(self.zone_ids)] = True
        self.tip_allowed = tip_allowed & lut[labels]
        #: cells some allowed tip of their own zone covers
        self.reachable = self._covered(self.tip_allowed)
        self.reachable_cells = np.bincount(labels[self.reachable], minlength=_LABELS)
        #: tips whose grown footprint holds a cell at its maximum
        self.tip_blocked = np.zeros(labels.size, dtype=bool)
        #: reachable cells below target that no allowed, unblocked tip covers
        self.held = np.zeros(labels.size, dtype=bool)
        self.held_cells = np.zeros(_LABELS, dtype=np.int64)
        self._mark = np.zeros(labels.size, dtype=bool)  # _around's scratch

    def _covered(self, tips: BoolArray) -> BoolArray:
        """Cells covered by a footprint whose tip is in `tips` and in the cell's own zone."""
        labels2d = self._labels.reshape(self._ny, self._nx)
        tips2d = tips.reshape(self._ny, self._nx)
        out = np.zeros((self._ny, self._nx), dtype=bool)
        r = self._reach
        for zid in self.zone_ids:
            ys, xs = np.nonzero(tips2d & (labels2d == zid))
            if ys.size == 0:
                continue
            y0, y1 = max(0, int(ys.min()) - r), min(self._ny, int(ys.max()) + r + 1)
            x0, x1 = max(0, int(xs.min()) - r), min(self._nx, int(xs.max()) + r + 1)
            box_tips = tips2d[y0:y1, x0:x1] & (labels2d[y0:y1, x0:x1] == zid)
            box = dilate(box_tips, self._fp_dy, self._fp_dx) & (labels2d[y0:y1, x0:x1] == zid)
            out[y0:y1, x0:x1] |= box
        return out.reshape(-1)

    def _around(self, cells: IntArray, dy: IntArray, dx: IntArray) -> IntArray:
        """Flat indices of cells + offsets, on the grid, without repeats, ascending."""
        iy, ix = np.divmod(cells, self._nx)
        ys = (iy[:, None] + dy[None, :]).reshape(-1)
        xs = (ix[:, None] + dx[None, :]).reshape(-1)
        ok = (ys >= 0) & (ys < self._ny) & (xs >= 0) & (xs < self._nx)
        # marked on a grid kept all False between calls: ~10x np.unique's speed on the
        # thousands of cells around a stroke's worth of cells at their maximum
        mark = self._mark
        mark[ys[ok] * self._nx + xs[ok]] = True
        out: IntArray = np.flatnonzero(mark)
        mark[out] = False
        return out

    def on_max(self, cells: IntArray, hits: npt.NDArray[np.int32],
               target: npt.NDArray[np.int32]) -> None:
        """`cells` just reached their maximum (hits and target: the grid's, flat).
        Blocks the tips around them and holds the cells that lost their last allowed tip."""
        tips = self._around(cells, self._guard_dy, self._guard_dx)
        tips = tips[self.tip_allowed[tips] & ~self.tip_blocked[tips]]
        if tips.size == 0:
            return
        self.tip_blocked[tips] = True
        near = self._around(tips, self._fp_dy, self._fp_dx)
        near = near[self.reachable[near] & ~self.held[near] & (hits[near] < target[near])]
        if near.size == 0:
            return
        # for each candidate, is there still an allowed, unblocked tip of its zone over it?
        iy, ix = np.divmod(near, self._nx)
        ys = iy[:, None] + self._fp_dy[None, :]
        xs = ix[:, None] + self._fp_dx[None, :]
        on = (ys >= 0) & (ys < self._ny) & (xs >= 0) & (xs < self._nx)
        flat = np.where(on, ys * self._nx + xs, 0)
        free = on & self.tip_allowed[flat] & ~self.tip_blocked[flat]
        free &= self._labels[flat] == self._labels[near][:, None]
        lost = near[~free.any(axis=1)]
        if lost.size:
            self.held[lost] = True
            self.held_cells += np.bincount(self._labels[lost], minlength=_LABELS)

    def on_target(self, cells: IntArray) -> None:
        """`cells` reached their target (a held cell can, by a stroke in flight)."""
        was = cells[self.held[cells]]
        if was.size:
            self.held[was] = False
            self.held_cells -= np.bincount(self._labels[was], minlength=_LABELS)

    def rebuild(self, at_max: BoolArray, below_target: BoolArray) -> None:
        """Everything again from the grid (after a restore)."""
        grid = at_max.reshape(self._ny, self._nx)
        self.tip_blocked = dilate(grid, self._guard_dy, self._guard_dx).reshape(-1)
        free = self._covered(self.tip_allowed & ~self.tip_blocked)
        self.held = self.reachable & below_target & ~free
        self.held_cells = np.bincount(self._labels[self.held], minlength=_LABELS)

    def stampable(self, box: tuple[slice, slice]) -> BoolArray:
        """Tips where a stroke is allowed now, over the 2-D crop `box` of the grid."""
        rows, cols = box
        shape = (self._ny, self._nx)
        out: BoolArray = (self.tip_allowed.reshape(shape)[rows, cols]
                          & ~self.tip_blocked.reshape(shape)[rows, cols])
        return out


def room_in(
    box: tuple[slice, slice],
    hits: npt.NDArray[np.int32],
    most: npt.NDArray[np.int32],
    stampable: BoolArray,
    guard: tuple[IntArray, IntArray],
) -> npt.NDArray[np.int32]:
    """Per tip cell of the 2-D crop `box`: the strokes it may still give before a cell
    under its grown footprint reaches its maximum (0 where `stampable`, the crop's, is not:
    no stroke is allowed there)."""
    rows, cols = box
    ny, nx = hits.shape
    r = int(max(np.abs(guard[0]).max(), np.abs(guard[1]).max()))
    y0, y1 = rows.start - r, rows.stop + r
    x0, x1 = cols.start - r, cols.stop + r
    big = np.iinfo(np.int32).max
    # int32: a maximum less hits fits (both are within 0..big)
    left = np.full((y1 - y0, x1 - x0), big, dtype=np.int32)
    gy0, gy1, gx0, gx1 = max(0, y0), min(ny, y1), max(0, x0), min(nx, x1)
    left[gy0 - y0 : gy1 - y0, gx0 - x0 : gx1 - x0] = (
        most[gy0:gy1, gx0:gx1] - hits[gy0:gy1, gx0:gx1]
    )
    h, w = rows.stop - rows.start, cols.stop - cols.start
    out = np.full((h, w), big, dtype=np.int32)
    reduce_over(np.minimum, left, row_runs(*guard), r, out)
    np.maximum(out, 0, out=out)
    out[~stampable] = 0
    return out

