"""Coverage rules: footprint on the grid, passes by the PASS_GAP_US rule, per-zone counters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.coverage import Coverage, Spot, footprint_offsets
from devicectl.errors import DevicectlError
from devicectl.plan import PASS_GAP_US, ZonePlan
from devicectl.zones import Zone, ZoneMap


def _square(zone_id: int, name: str, x0: float, y0: float, w: float, h: float) -> Zone:
    outline = ((x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h))
    return Zone(zone_id, name, name, outline, w * h)


MAP = ZoneMap((_square(1, "frontal", 0, 0, 20, 10), _square(2, "vertex", 0, 12, 20, 10)))


def _zone(zone_id: int, name: str, target: int = 1, maximum: int = 2) -> ZonePlan:
    return ZonePlan(zone_id, name, 1000, 1000, target, maximum, 0.9, 200.0, 0, 10.0)


ZONES = (_zone(1, "frontal"), _zone(2, "vertex"))


def _coverage(tracked: bool = True, footprint_dmm: int = 30) -> Coverage:
    return Coverage(MAP.raster(0.5), ZONES, footprint_dmm, tracked=tracked)


def test_footprint_is_a_disc_of_the_needle_diameter() -> None:
    dy, dx = footprint_offsets(3.0, 0.5)  # radius 3 cells
    assert (0, 0) in set(zip(dy.tolist(), dx.tolist(), strict=True))
    assert int((dy * dy + dx * dx).max()) <= 9
    assert len(dy) == 29  # cells of a radius-3 disc on a grid


def test_stroke_adds_one_pass_to_the_cells_under_the_footprint() -> None:
    cov = _coverage()
    cell = cov.cell_at(10.0, 5.0)
    cov.add_strokes(1, 1, cell, now_us=1_000_000)
    grid = cov.zone_passes(1)
    assert grid.max() == 1
    assert int(grid.sum()) == len(footprint_offsets(3.0, 0.5)[0])
    assert cov.strokes(1) == 1


def test_strokes_within_the_pass_gap_are_one_pass() -> None:
    cov = _coverage()
    cell = cov.cell_at(10.0, 5.0)
    for k in range(10):
        cov.add_strokes(1, 1, cell, now_us=k * (PASS_GAP_US // 2))
    assert cov.zone_passes(1).max() == 1
    assert cov.strokes(1) == 10


def test_stroke_after_a_gap_longer_than_pass_gap_is_a_new_pass() -> None:
    cov = _coverage()
    cell = cov.cell_at(10.0, 5.0)
    cov.add_strokes(1, 1, cell, now_us=0)
    cov.add_strokes(1, 1, cell, now_us=PASS_GAP_US + 1)
    assert cov.zone_passes(1).max() == 2


def test_several_strokes_in_one_frame_count_as_strokes_but_one_pass() -> None:
    cov = _coverage()
    cov.add_strokes(1, 5, cov.cell_at(10.0, 5.0), now_us=0)
    assert cov.strokes(1) == 5 and cov.zone_passes(1).max() == 1


def test_stroke_at_map_edge_is_clipped_to_the_grid() -> None:
    cov = _coverage()
    cov.add_strokes(1, 1, cov.cell_at(0.1, 0.1), now_us=0)
    assert cov.passes_grid().sum() > 0


def test_spot_tells_outside_needs_and_at_max() -> None:
    cov = _coverage()
    c = cov.cell_at(10.0, 5.0)
    assert cov.spot(1, c, 0) is Spot.NEEDS
    assert cov.spot(2, c, 0) is Spot.OUTSIDE
    assert cov.spot(1, -1, 0) is Spot.OFF_MAP
    cov.add_strokes(1, 1, c, now_us=0)
    assert cov.spot(1, c, 0) is Spot.TREATABLE
    cov.add_strokes(1, 1, c, now_us=2 * PASS_GAP_US)
    assert cov.spot(1, c, 0) is Spot.AT_MAX


@settings(max_examples=60, deadline=None)
@given(
    strokes=st.lists(
        st.tuples(
            st.floats(-2, 22), st.floats(-2, 24), st.integers(1, 3), st.integers(0, 700_000)
        ),
        max_size=40,
    )
)
def test_incremental_zone_counters_match_a_recount(
    strokes: list[tuple[float, float, int, int]],
) -> None:
    cov = _coverage()
    now = 0
    for x, y, n, dt in strokes:
        now += dt
        cov.add_strokes(1, n, cov.cell_at(x, y), now)
    labels = MAP.raster(0.5).labels.reshape(-1)
    for z in ZONES:
        mask = labels == z.zone_id
        at_target = int((cov.passes[mask] >= z.target_passes).sum())
        assert cov.fraction(z.zone_id) == pytest.approx(at_target / int(mask.sum()))
        assert cov.cells_at_max(z.zone_id) == int((cov.passes[mask] >= z.max_passes).sum())


def test_zone_is_done_at_its_target_fraction() -> None:
    cov = _coverage()
    assert not cov.done(1)
    now = 0
    for y in np.arange(0.25, 10, 1.0):
        for x in np.arange(0.25, 20, 1.0):
            cov.add_strokes(1, 1, cov.cell_at(float(x), float(y)), now)
            now += 1000
    assert cov.fraction(1) == 1.0 and cov.done(1) and not cov.done(2)


def test_without_position_passes_are_estimated_from_strokes_and_area() -> None:
    cov = _coverage(tracked=False)
    # strokes per pass = area / (footprint × 10 mm/s) × rate = 200 / 30 × 100
    per_pass = 200 / (3.0 * 10.0) * 100.0
    cov.add_strokes(1, int(per_pass) + 1, cov.cell_at(10.0, 5.0), 0)
    assert cov.passes_grid().sum() == 0  # no cells without position
    assert cov.done(1) and not cov.at_estimated_max(1)
    cov.add_strokes(1, int(per_pass) + 1, -1, 10)
    assert cov.at_estimated_max(1)


def test_coverage_state_survives_save_and_restore() -> None:
    cov = _coverage()
    cov.add_strokes(1, 3, cov.cell_at(5.0, 5.0), 0)
    cov.add_strokes(2, 2, cov.cell_at(5.0, 15.0), 0)
    again = _coverage()
    again.restore(cov.to_bytes())
    assert np.array_equal(again.passes_grid(), cov.passes_grid())
    assert again.strokes(1) == 3 and again.strokes(2) == 2
    assert again.fraction(1) == cov.fraction(1)
    assert again.cells_at_max(2) == cov.cells_at_max(2)


def test_restore_refuses_another_grid() -> None:
    other = Coverage(MAP.raster(1.0), ZONES, 30, tracked=True)
    with pytest.raises(DevicectlError, match="grid"):
        _coverage().restore(other.to_bytes())


def test_restore_refuses_garbage_in_one_sentence() -> None:
    with pytest.raises(DevicectlError, match="cannot be read"):
        _coverage().restore(b"not an archive")
