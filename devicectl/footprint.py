"""The scalp grid's geometry: the raster a coverage counts on, and a footprint's cells on it.

A stroke reaches the cells whose centres lie within its footprint disc
(`footprint_offsets`); the hold test looks one cell further (`grown`); a cell's
footprint may overhang its zone (`same_label_counts`). Pure functions of the
grid, shared by coverage.py and the simulated technician (firmware_sim.handpiece).
"""

from __future__ import annotations

import math
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

#: How many labels a grid cell may hold (uint8).
LABELS: Final = 256
#: The grid's unit: strokes over a cell (int32 is ample: 2·10⁹ strokes).
HITS: Final = np.int32

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


def footprint_offsets(footprint_mm: float, cell_mm: float) -> tuple[IntArray, IntArray]:
    """(dy, dx) of the cells whose centres lie within the footprint disc; never empty."""
    r_cells = footprint_mm / 2.0 / cell_mm
    n = max(0, math.ceil(r_cells))
    dy, dx = np.mgrid[-n : n + 1, -n : n + 1]
    inside = dy * dy + dx * dx <= r_cells * r_cells
    inside[n, n] = True
    return dy[inside].astype(np.int64), dx[inside].astype(np.int64)


def grown(dy: IntArray, dx: IntArray) -> tuple[IntArray, IntArray]:
    """The offsets of every footprint whose centre is within one cell (each axis) of ours:
    the footprint's own first, in their order, then the ring around it (CellsAround)."""
    own = set(zip(dy.tolist(), dx.tolist(), strict=True))
    ring = sorted({(a + sy, b + sx) for a, b in own for sy in (-1, 0, 1) for sx in (-1, 0, 1)}
                  - own)
    return (np.concatenate([dy, np.array([p[0] for p in ring], dtype=np.int64)]),
            np.concatenate([dx, np.array([p[1] for p in ring], dtype=np.int64)]))


def same_label_counts(labels: npt.NDArray[np.uint8], dy: IntArray, dx: IntArray) -> IntArray:
    """Per cell, how many cells of its footprint hold its own label (off the grid: none)."""
    ny, nx = labels.shape
    out = np.zeros((ny, nx), dtype=np.int64)
    for a, b in zip(dy.tolist(), dx.tolist(), strict=True):
        # cell (y, x) compares with (y + a, x + b), where that is on the grid
        ys, ye = max(0, -a), min(ny, ny - a)
        xs, xe = max(0, -b), min(nx, nx - b)
        if ys < ye and xs < xe:
            out[ys:ye, xs:xe] += labels[ys:ye, xs:xe] == labels[ys + a : ye + a, xs + b : xe + b]
    return out.reshape(-1)



def row_runs(dy: IntArray, dx: IntArray) -> list[tuple[int, int, int]]:
    """A shape's offsets as runs of consecutive columns: (row, first column, length)."""
    runs: list[tuple[int, int, int]] = []
    for a, b in sorted(zip(dy.tolist(), dx.tolist(), strict=True)):
        if runs and runs[-1][0] == a and runs[-1][1] + runs[-1][2] == b:
            runs[-1] = (a, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((a, b, 1))
    return runs


def reduce_over(op: np.ufunc, padded: npt.NDArray[Any], runs: list[tuple[int, int, int]],
                r: int, out: npt.NDArray[Any]) -> None:
    """out[y, x] = op over padded[r + a + y, r + b + x] for the shape's offsets (a, b),
    given as `row_runs`, and out[y, x] itself; `padded` has `r` more cells each side.

    For np.minimum or np.logical_or (op(v, v) = v): a run of n columns is reduced from
    two overlapping runs of 2^k ≤ n (a sparse table along x), so a shape costs an array
    operation per row run and per distinct length, not one per cell of the shape.
    """
    h, w = out.shape
    spans = [padded]  # spans[k][:, x]: op over padded[:, x : x + 2^k]
    while 2 ** len(spans) <= max(n for _a, _lo, n in runs):
        k = 2 ** (len(spans) - 1)
        spans.append(op(spans[-1][:, :-k], spans[-1][:, k:]))
    across: dict[int, npt.NDArray[Any]] = {}  # n -> op over padded[:, x : x + n]
    for a, lo, n in runs:
        run = across.get(n)
        if run is None:
            k = n.bit_length() - 1
            part = spans[k]
            run = across[n] = op(part[:, : part.shape[1] - (n - 2**k)], part[:, n - 2**k :])
        op(out, run[r + a : r + a + h, r + lo : r + lo + w], out=out)


class CellsAround:
    """The flat indices of the cells a shape (offsets `dy`, `dx`, none farther than
    `reach` cells) covers around a cell of an `ny` × `nx` grid, clipped to the grid; its
    first `inner` offsets are a shape of their own (the footprint inside the grown one).

    The last cell's indices are kept: the tip stays over a cell for several strokes,
    and each stroke asks for them (Coverage.add_strokes, then Coverage.spot), and for
    both shapes (the inner's are the first of the whole's). They are read-only, so that
    no caller can change what the next one gets.
    """

    __slots__ = ("_cell", "_dx", "_dy", "_flat", "_idx", "_inner", "_inner_idx", "_nx", "_ny",
                 "_reach")

    def __init__(self, ny: int, nx: int, dy: IntArray, dx: IntArray, reach: int,
                 inner: int) -> None:
        self._ny, self._nx = ny, nx
        self._dy, self._dx = dy, dx
        self._flat = dy * nx + dx
        self._reach = reach
        self._inner = inner
        self._cell = -1
        self._idx: IntArray = np.zeros(0, dtype=np.int64)  # filled on first use
        self._inner_idx: IntArray = self._idx

    def at(self, cell: int) -> IntArray:
        """The whole shape's cells around `cell`."""
        if cell != self._cell or cell < 0:
            self._fill(cell)
        return self._idx

    def inner_at(self, cell: int) -> IntArray:
        """The inner shape's cells around `cell`."""
        if cell != self._cell or cell < 0:
            self._fill(cell)
        return self._inner_idx

    def _fill(self, cell: int) -> None:
        iy, ix = cell // self._nx, cell % self._nx
        reach = self._reach
        idx: IntArray
        if reach <= ix < self._nx - reach and reach <= iy < self._ny - reach:
            idx = cell + self._flat
            inner = self._inner
        else:
            ys = iy + self._dy
            xs = ix + self._dx
            ok = (ys >= 0) & (ys < self._ny) & (xs >= 0) & (xs < self._nx)
            idx = ys[ok] * self._nx + xs[ok]
            inner = int(np.count_nonzero(ok[: self._inner]))
        idx.flags.writeable = False
        self._cell, self._idx, self._inner_idx = cell, idx, idx[:inner]


__all__ = [
    "HITS", "LABELS", "CellsAround", "IntArray", "Raster", "footprint_offsets", "grown",
    "reduce_over", "row_runs", "same_label_counts",
]
