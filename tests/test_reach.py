"""reach.room_in: per tip cell of a crop, the strokes left before a cell under its grown
footprint reaches its maximum; footprint.reduce_over, which it and the simulated hand's
dilations use: each against its definition computed cell by cell."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.footprint import footprint_offsets, grown, reduce_over, row_runs
from devicectl.reach import room_in

BIG = np.iinfo(np.int32).max


def _room_by_definition(box: tuple[slice, slice], hits: np.ndarray, most: np.ndarray,
                        stampable: np.ndarray, guard: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    rows, cols = box
    ny, nx = hits.shape
    out = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.int64)
    for y in range(rows.start, rows.stop):
        for x in range(cols.start, cols.stop):
            left = [int(most[y + a, x + b]) - int(hits[y + a, x + b])
                    for a, b in zip(guard[0].tolist(), guard[1].tolist(), strict=True)
                    if 0 <= y + a < ny and 0 <= x + b < nx]
            room = max(0, min(left, default=BIG)) if stampable[y, x] else 0
            out[y - rows.start, x - cols.start] = room
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.integers(4, 18), st.integers(4, 18),  # the grid
    st.sampled_from([0.5, 1.2, 2.0, 3.0]),  # the footprint's diameter, in cells
    st.integers(0, 2**32 - 1),
    st.data(),
)
def test_room_is_the_least_room_under_the_grown_footprint(
    ny: int, nx: int, diameter: float, seed: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    dy, dx = footprint_offsets(diameter, 1.0)
    guard = grown(dy, dx)
    most = rng.integers(20, 40, (ny, nx)).astype(np.int32)
    hits = (most - rng.integers(-1, 30, (ny, nx))).astype(np.int32)  # a few past it
    stampable = rng.random((ny, nx)) < 0.8
    y0 = data.draw(st.integers(0, ny - 1))
    y1 = data.draw(st.integers(y0 + 1, ny))
    x0 = data.draw(st.integers(0, nx - 1))
    x1 = data.draw(st.integers(x0 + 1, nx))
    box = (slice(y0, y1), slice(x0, x1))
    room = room_in(box, hits, most, stampable[box], guard)
    assert room.dtype == np.int32
    assert np.array_equal(room, _room_by_definition(box, hits, most, stampable, guard))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.floats(0.0, 4.0), st.integers(0, 2**32 - 1))
def test_reduce_over_a_shape_is_the_reduction_over_its_cells(
    ny: int, nx: int, radius: float, seed: int
) -> None:
    """np.logical_or over a disc (a dilation) and np.minimum over a grown footprint."""
    rng = np.random.default_rng(seed)
    dy, dx = footprint_offsets(2 * radius, 1.0)
    for shape in ((dy, dx), grown(dy, dx)):
        r = int(max(np.abs(shape[0]).max(), np.abs(shape[1]).max()))
        for op, grid in ((np.logical_or, rng.random((ny, nx)) < 0.1),
                         (np.minimum, rng.integers(-50, 50, (ny, nx)))):
            fill = False if op is np.logical_or else 99
            padded = np.pad(grid, r, constant_values=fill)
            out = np.full((ny, nx), fill, dtype=grid.dtype)
            reduce_over(op, padded, row_runs(*shape), r, out)
            offsets = list(zip(shape[0].tolist(), shape[1].tolist(), strict=True))
            for y in range(ny):
                for x in range(nx):
                    cells = [padded[r + y + a, r + x + b] for a, b in offsets]
                    want = any(cells) if op is np.logical_or else min(cells)
                    assert out[y, x] == want, (y, x)
