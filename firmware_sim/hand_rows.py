"""Where the technician's hand goes: rows over a zone, or over the host's dose map.

`rows_over` lays rows across a zone's outline, a pitch apart, for a hand that
does not watch the map. `watched_rows` reads the map (dose.DoseView): the
stretches of rows that still hold spots below target, clear of the spots at
their maximum, a band at a time; when no row has enough left, the touch-up
rests the tip on single spots. Pure functions of the view; handpiece.Hand
walks the rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from devicectl.dose import DoseView
from devicectl.footprint import IntArray, footprint_offsets, reduce_over

if TYPE_CHECKING:
    from firmware_sim.handpiece import HandParams

Point = tuple[float, float]
#: A rest on one spot is given as a row this long (mm), crossed in the rest's time.
DAB_MM = 0.1


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

def watched_rows(
    view: DoseView,
    pitch_mm: float,
    footprint_mm: float,
    params: HandParams,
    *,
    shift: bool,
    band_mm: tuple[float, float] | None = None,
) -> list[tuple[Point, Point]]:
    """The stretches of rows `pitch_mm` apart that still hold spots below target,
    in the first band of `block_rows` rows that has any; `shift` moves the rows
    half a pitch (every other pass), so the spots between rows get their share.

    A stretch runs over the columns whose band (cells within reach_fraction of
    the footprint's radius of the row's line) holds a spot of the zone below
    target and no spot at its maximum, with the tip kept border_inset of the
    radius inside the zone; stretches closer than a footprint are joined (the
    hand sweeps on and the host holds over the gap). Rows alternate direction.
    """
    hits, mask = view.hits, view.mask
    cell = view.cell_mm
    nv = hits.shape[0]
    radius = footprint_mm / 2
    band = max(0, int(radius * params.reach_fraction / cell))
    inset_cells = radius * params.border_inset_fraction / cell
    inset = math.ceil(inset_cells)
    need = mask & (hits < view.target_hits)
    # the tip keeps a footprint (and a cell) away from every spot at its maximum
    blocked = _grown(mask & (hits >= view.max_hits), radius / cell + 1.5)
    # the tip may go where the zone extends `inset` cells every way (a cross test)
    ok = ~_grown(~np.pad(mask, inset + 1), inset_cells)[inset + 1 : -inset - 1,
                                                         inset + 1 : -inset - 1]
    rows: list[tuple[Point, Point]] = []
    if not need.any():
        return rows
    join = max(1, int(footprint_mm / cell))
    n_rows = max(1, int(nv * cell / pitch_mm))
    margin = (nv * cell - (n_rows - 1) * pitch_mm) / 2 + (pitch_mm / 2 if shift else 0.0)
    lines: list[tuple[float, npt.NDArray[np.bool_]]] = []
    for i in range(n_rows):
        v_mm = margin + i * pitch_mm
        iv = min(nv - 1, int(v_mm / cell))
        a, b = max(0, iv - band), min(nv, iv + band + 1)
        lines.append((v_mm, need[a:b].any(axis=0) & ~blocked[iv] & ok[iv]))
    if band_mm is not None:
        lo_mm, hi_mm = band_mm[0] - view.y0_mm, band_mm[1] - view.y0_mm
        chosen = [i for i, (v, w) in enumerate(lines) if lo_mm <= v < hi_mm and w.any()]
    else:
        chosen = [i for i, (_v, w) in enumerate(lines) if w.sum() * cell >= params.min_row_mm]
    if not chosen:
        if view.room is not None:
            return _touch_up(view, need, footprint_mm, params)
        reach = _grown(need, radius * params.reach_fraction / cell)
        return _dabs(view, reach & ~blocked & ok, footprint_mm, params)
    for i in chosen:
        if band_mm is None and (i - chosen[0]) * pitch_mm >= params.block_mm:
            break
        v_mm, wanted = lines[i]
        edges = np.flatnonzero(np.diff(np.concatenate(([0], wanted.view(np.int8), [0]))))
        spans: list[list[int]] = []
        for s_i, e_i in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
            if spans and s_i - spans[-1][1] < join:
                spans[-1][1] = e_i
            else:
                spans.append([s_i, e_i])
        for s_i, e_i in spans:
            if (e_i - s_i) * cell < params.min_stretch_mm:
                continue
            ua = view.x0_mm + (s_i + 0.5) * cell
            ub = view.x0_mm + (e_i - 0.5) * cell
            vv = view.y0_mm + v_mm
            if len(rows) % 2:
                ua, ub = ub, ua
            rows.append(((ua, vv), (ub, vv)))
    return rows


def _touch_up(
    view: DoseView, need: npt.NDArray[np.bool_], footprint_mm: float, params: HandParams
) -> list[tuple[Point, Point]]:
    """The touch-up with the host's map of where a stroke is allowed (view.room):
    rests on the allowed tips that cover the most spots below target, until every
    such spot that an allowed stroke can reach is under one (at most dab_batch)."""
    assert view.room is not None
    cell = view.cell_mm
    dy, dx = footprint_offsets(footprint_mm, cell)
    tips = view.room > 0
    ny, nx = need.shape
    gain = np.zeros((ny, nx), dtype=np.int32)
    for a, b in zip(dy.tolist(), dx.tolist(), strict=True):
        ys, ye = max(0, -a), min(ny, ny - a)
        xs, xe = max(0, -b), min(nx, nx - b)
        if ys < ye and xs < xe:
            gain[ys:ye, xs:xe] += need[ys + a : ye + a, xs + b : xe + b]
    gain[~tips] = 0
    left = need & (spread(gain > 0, dy, dx))
    out: list[tuple[Point, Point]] = []
    for iy, ix in zip(*np.nonzero(left), strict=True):
        if not left[iy, ix]:
            continue
        ys, xs = iy + dy, ix + dx
        on = (ys >= 0) & (ys < ny) & (xs >= 0) & (xs < nx)
        ys, xs = ys[on], xs[on]
        best = int(np.argmax(gain[ys, xs]))
        ty, tx = int(ys[best]), int(xs[best])
        if gain[ty, tx] <= 0:
            continue
        cy, cx = ty + dy, tx + dx
        on = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
        left[cy[on], cx[on]] = False
        x = view.x0_mm + (tx + 0.5) * cell
        y = view.y0_mm + (ty + 0.5) * cell
        out.append(((x, y), (x + DAB_MM, y)))
        if len(out) >= params.dab_batch:
            break
    return out


def spread(cells: npt.NDArray[np.bool_], dy: IntArray, dx: IntArray) -> npt.NDArray[np.bool_]:
    """Cells within a footprint of `cells` (offsets dy, dx; symmetric)."""
    ny, nx = cells.shape
    out = np.zeros_like(cells)
    for a, b in zip(dy.tolist(), dx.tolist(), strict=True):
        ys, ye = max(0, a), min(ny, ny + a)
        xs, xe = max(0, b), min(nx, nx + b)
        if ys < ye and xs < xe:
            out[ys:ye, xs:xe] |= cells[ys - a : ye - a, xs - b : xe - b]
    return out


def _dabs(
    view: DoseView, spots: npt.NDArray[np.bool_], footprint_mm: float, params: HandParams
) -> list[tuple[Point, Point]]:
    """The touch-up: short rests on spots below target, a footprint apart, each
    given as a row 0.1 mm long to be crossed in the time its strokes take."""
    ys, xs = np.nonzero(spots)
    out: list[tuple[Point, Point]] = []
    cell = view.cell_mm
    taken: list[tuple[float, float]] = []
    spacing2 = (footprint_mm * 0.8) ** 2
    for iy, ix in zip(ys.tolist(), xs.tolist(), strict=True):
        x = view.x0_mm + (ix + 0.5) * cell
        y = view.y0_mm + (iy + 0.5) * cell
        if any((x - a) ** 2 + (y - b) ** 2 < spacing2 for a, b in taken[-64:]):
            continue
        taken.append((x, y))
        out.append(((x, y), (x + 0.1, y)))
    return out


def _grown(cells: npt.NDArray[np.bool_], radius_cells: float) -> npt.NDArray[np.bool_]:
    """`cells` grown by a disc of `radius_cells` (centres within it; footprint.reduce_over)."""
    out = cells.copy()
    if not cells.any():
        return out
    n = math.ceil(radius_cells)
    r2 = radius_cells * radius_cells
    runs: list[tuple[int, int, int]] = []  # the disc's rows: (dy, first dx, length)
    for dy in range(-n, n + 1):
        half = [dx for dx in range(n + 1) if dy * dy + dx * dx <= r2]
        if half:
            runs.append((dy, -half[-1], 2 * half[-1] + 1))
    reduce_over(np.logical_or, np.pad(cells, n), runs, n, out)
    return out


__all__ = ["DAB_MM", "Point", "rows_over", "spread", "watched_rows"]
