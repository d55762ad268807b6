"""The dose grid: each stroke's punctures over its footprint, limits in hits, the hold
verdicts (maximum, border overhang), spill, counters, and the saved grid's measures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.coverage import Coverage, Spot, footprint_offsets
from devicectl.dose import (
    pass_punctures_per_cm2,
    stroke_punctures_per_cm2,
    zone_dose_stats,
    zone_limits,
)
from devicectl.errors import DevicectlError
from devicectl.footprint import grown
from devicectl.plan import ZonePlan
from devicectl.safety import MAX_OVERHANG_FRACTION
from devicectl.zones import Zone, ZoneMap


def _square(zone_id: int, name: str, x0: float, y0: float, w: float, h: float) -> Zone:
    outline = ((x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h))
    return Zone(zone_id, name, name, outline, w * h)


MAP = ZoneMap((_square(1, "frontal", 0, 0, 20, 10), _square(2, "vertex", 0, 12, 20, 10)))
#: 12 needles at 100 Hz over a 3.0 mm footprint: one pass is 12·100/(3·10) = 40 per mm².
PASS_DOSE = pass_punctures_per_cm2(12, 1000, 30)


def _zone(zone_id: int, name: str, target: int = 1, maximum: int = 2,
          cap: float | None = None) -> ZonePlan:
    return ZonePlan(zone_id, name, 1000, 1000, target, maximum, 0.9, 200.0, 0, 10.0,
                    pass_punctures_per_cm2=PASS_DOSE, max_punctures_per_cm2=cap)


ZONES = (_zone(1, "frontal"), _zone(2, "vertex"))


def _coverage(tracked: bool = True, zones: tuple[ZonePlan, ...] = ZONES) -> Coverage:
    return Coverage(MAP.raster(0.5), zones, 30, tracked=tracked, needle_count=12)


def test_pass_dose_is_needles_times_rate_over_footprint_times_hand_speed() -> None:
    # the docs' example: 12 needles, 10 Hz, 5.0 mm footprint, 10 mm/s -> 240 per cm²
    assert pass_punctures_per_cm2(12, 100, 50) == pytest.approx(240.0)
    assert pytest.approx(4000.0) == PASS_DOSE
    assert pass_punctures_per_cm2(36, 100, 50) == pytest.approx(3 * 240.0)


def test_footprint_is_a_disc_of_the_needle_diameter() -> None:
    dy, dx = footprint_offsets(3.0, 0.5)  # radius 3 cells
    assert (0, 0) in set(zip(dy.tolist(), dx.tolist(), strict=True))
    assert int((dy * dy + dx * dx).max()) <= 9
    assert len(dy) == 29  # cells of a radius-3 disc on a grid


def test_a_stroke_puts_its_needles_punctures_on_the_skin_under_it() -> None:
    cov = _coverage()
    cov.add_strokes(1, 1, cov.cell_at(10.0, 5.0))
    grid = cov.zone_hits(1)
    assert grid.max() == 1 and int(grid.sum()) == 29
    # punctures per cm² × cm² summed over the grid: exactly the 12 needles
    assert float(grid.sum()) * cov.punctures_per_hit * cov.cell_cm2() == pytest.approx(12.0)
    assert cov.punctures_per_hit == pytest.approx(stroke_punctures_per_cm2(12, 29, 0.5))


def test_dwelling_accumulates_dose_stroke_by_stroke() -> None:
    cov = _coverage()
    cell = cov.cell_at(10.0, 5.0)
    for _ in range(10):
        cov.add_strokes(1, 1, cell)
    cov.add_strokes(1, 5, cell)  # several strokes in one frame are several doses
    assert cov.zone_hits(1).max() == 15
    assert cov.strokes(1) == 15


def test_limits_round_the_target_up_and_the_maximum_down() -> None:
    lim = zone_limits(1, 3, 4, 240.0, None, 60.0)  # 4 hits a pass
    assert (lim.target_hits, lim.max_hits, lim.hits_per_pass) == (12, 16, 4.0)
    lim = zone_limits(1, 3, 4, 250.0, None, 60.0)  # 4.17 hits a pass
    assert (lim.target_hits, lim.max_hits) == (13, 16)


def test_max_punctures_per_cm2_caps_the_maximum_below_max_passes() -> None:
    lim = zone_limits(1, 3, 4, 240.0, 850.0, 60.0)
    assert lim.max_hits == 14  # 850 / 60 = 14.2, down


def test_a_cap_below_the_target_is_a_go_no_go_problem() -> None:
    cov = _coverage(zones=(_zone(1, "frontal", 2, 3, cap=100.0), _zone(2, "vertex")))
    assert cov.problems and "maximum dose is below its target" in cov.problems[0]


def test_stroke_at_map_edge_is_clipped_to_the_grid() -> None:
    cov = _coverage()
    cov.add_strokes(1, 1, cov.cell_at(0.1, 0.1))
    assert cov.hits_grid().sum() > 0


def test_spot_tells_outside_off_map_needs_and_treatable() -> None:
    cov = _coverage()
    c = cov.cell_at(10.0, 5.0)
    assert cov.spot(1, c) is Spot.NEEDS
    assert cov.spot(2, c) is Spot.OUTSIDE
    assert cov.spot(1, -1) is Spot.OFF_MAP
    lim = cov.limits[1]
    cov.add_strokes(1, lim.target_hits, c)
    assert cov.spot(1, c) is Spot.TREATABLE


def test_spot_is_at_max_when_the_next_stroke_would_take_any_cell_over() -> None:
    cov = _coverage()
    lim = cov.limits[1]
    centre = cov.cell_at(10.0, 5.0)
    cov.add_strokes(1, lim.max_hits - 1, centre)
    assert cov.spot(1, centre) is not Spot.AT_MAX  # one more stroke is still allowed
    cov.add_strokes(1, 1, centre)
    assert cov.spot(1, centre) is Spot.AT_MAX
    # 2.0 mm away the centre cell is not at max itself, but the footprint edge
    # (radius 1.5 mm, grown by one cell) reaches the cells that are
    near = cov.cell_at(12.0, 5.0)
    assert int(cov.hits[near]) < lim.max_hits
    assert cov.spot(1, near) is Spot.AT_MAX
    far = cov.cell_at(15.5, 5.0)
    assert cov.spot(1, far) is Spot.NEEDS


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([1, 2]),
    st.floats(-1.0, 21.0), st.floats(-1.0, 23.0),
    st.lists(st.tuples(st.sampled_from([1, 2]), st.integers(-4, 4), st.integers(-4, 4),
                       st.integers(1, 2)), min_size=1, max_size=30),
)
def test_a_kept_spot_verdict_is_the_one_the_grid_gives_now(
    zone_id: int, x: float, y: float, strokes: list[tuple[int, int, int, int]]
) -> None:
    """Coverage.spot keeps its last verdict for as many strokes as cannot change it:
    asked over and over at one cell while strokes land around it (either zone, either
    side of a border), it always answers what the grid gives afresh. A thin pass
    (5 strokes to the target, 8 to the maximum) so that every verdict changes."""
    cov = _coverage(zones=tuple(replace(z, pass_punctures_per_cm2=PASS_DOSE / 6) for z in ZONES))
    assert (cov.limits[1].target_hits, cov.limits[1].max_hits) == (5, 8)
    probe = cov.cell_at(x, y)
    for stroke_zone, dx, dy, n in strokes:
        cov.add_strokes(stroke_zone, n, cov.cell_at(x + dx * 0.5, y + dy * 0.5))
        fresh, _lasts = cov._spot_lasting(zone_id, probe)
        assert cov.spot(zone_id, probe) is fresh


def _spot_from_grid(cov: Coverage, zone_id: int, cell: int) -> Spot:
    """Spot's definition read off the grid alone (no kept verdict, no Reach, no cached
    footprint): the layout's verdicts, then any cell under the grown footprint at its
    maximum, then any cell of the zone under the footprint below its target."""
    if cell < 0:
        return Spot.OFF_MAP
    if int(cov._treat[cell]) != zone_id:
        return Spot.OUTSIDE
    if cov._fp_cells - int(cov._same[cell]) > cov._overhang_cells or cov._patch_edge[cell]:
        return Spot.EDGE
    ny, nx = cov.raster.labels.shape
    iy, ix = divmod(cell, nx)

    def around(oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
        ys, xs = iy + oy, ix + ox
        ok = (ys >= 0) & (ys < ny) & (xs >= 0) & (xs < nx)
        return ys[ok] * nx + xs[ok]

    dy, dx = footprint_offsets(cov.footprint_mm, cov.cell_mm)
    under = around(*grown(dy, dx))
    if (cov.hits[under] >= cov._max[under]).any():
        return Spot.AT_MAX
    fp = around(dy, dx)
    fp = fp[cov._labels[fp] == zone_id]
    return Spot.NEEDS if (cov.hits[fp] < cov._target[fp]).any() else Spot.TREATABLE


@settings(max_examples=40, deadline=None)
@given(
    st.floats(-1.0, 21.0), st.floats(-1.0, 23.0),
    st.lists(st.tuples(st.sampled_from([0, 0, 0, -1, 1]), st.sampled_from([0, 0, 0, -1, 1]),
                       st.integers(0, 2), st.sampled_from([1, 1, 1, 2])),
             min_size=1, max_size=80),
    st.booleans(),
)
def test_spot_along_a_hand_path_is_what_the_grid_gives_afresh(
    x: float, y: float, steps: list[tuple[int, int, int, int]], frontal_at_max: bool,
) -> None:
    """The loop's way: the tip wanders cell by cell, strokes land under it, and spot is
    asked at the tip before and after each stroke. Every verdict, kept or worked out
    from the counts the coverage keeps (Reach's blocked tips), is the one the grid gives
    afresh, and so are the zone counters (a restore recounts them from the grid). A
    thin pass (5 strokes to the target, 8 to the maximum) so that every verdict comes;
    or frontal's maximum 0 passes (a plan the go/no-go refuses): at it from the start."""
    zones = tuple(replace(z, pass_punctures_per_cm2=PASS_DOSE / 6) for z in ZONES)
    if frontal_at_max:
        zones = (replace(zones[0], max_passes=0), zones[1])
    cov = _coverage(zones=zones)
    for ddx, ddy, n, zone in steps:
        x, y = x + ddx * cov.cell_mm, y + ddy * cov.cell_mm
        tip = cov.cell_at(x, y)
        assert cov.spot(zone, tip) is _spot_from_grid(cov, zone, tip)
        cov.add_strokes(zone, n, tip)
        assert cov.spot(zone, tip) is _spot_from_grid(cov, zone, tip)
    if frontal_at_max:
        return  # (its cells at the maximum from the start are not counted as such)
    fresh = _coverage(zones=zones)
    fresh.restore(cov.to_bytes())
    assert cov._sum_hits == fresh._sum_hits
    assert cov._at_target == fresh._at_target
    assert cov._at_max == fresh._at_max
    assert np.array_equal(cov.reach.held, fresh.reach.held)
    allowed = cov.reach.tip_allowed
    assert np.array_equal(cov.reach.tip_blocked & allowed, fresh.reach.tip_blocked & allowed)


@pytest.mark.parametrize("y_mm", [5.0, 1.0])  # inside the zone; by its border
def test_a_kept_spot_verdict_changes_at_the_stroke_that_changes_it(y_mm: float) -> None:
    """Dwelling, one stroke at a time: NEEDS up to the target, TREATABLE up to the
    maximum, then AT_MAX, each from the very stroke that makes it so."""
    cov = _coverage(zones=tuple(replace(z, pass_punctures_per_cm2=PASS_DOSE / 6) for z in ZONES))
    cell = cov.cell_at(10.0, y_mm)
    target, most = cov.limits[1].target_hits, cov.limits[1].max_hits
    assert cov.spot(1, cell) is Spot.NEEDS
    for k in range(1, most + 2):
        cov.add_strokes(1, 1, cell)
        expected = Spot.NEEDS if k < target else Spot.TREATABLE if k < most else Spot.AT_MAX
        assert cov.spot(1, cell) is expected, k


def test_a_restore_forgets_the_kept_spot_verdict() -> None:
    cov = _coverage()
    centre = cov.cell_at(10.0, 5.0)
    cov.add_strokes(1, cov.limits[1].max_hits, centre)
    assert cov.spot(1, centre) is Spot.AT_MAX
    cov.restore(_coverage().to_bytes())  # an empty grid
    assert cov.spot(1, centre) is Spot.NEEDS


def test_footprint_overhanging_the_border_too_far_is_held() -> None:
    cov = _coverage()
    inside = cov.cell_at(10.0, 2.0)
    assert cov.spot(1, inside) is Spot.NEEDS
    at_border = cov.cell_at(10.0, 0.25)  # nearly half the footprint off the zone
    assert cov.spot(1, at_border) is Spot.EDGE
    dy, _dx = footprint_offsets(3.0, 0.5)
    assert MAX_OVERHANG_FRACTION * len(dy) < len(dy) / 2


def test_spill_onto_another_zone_is_recorded_per_zone() -> None:
    cov = _coverage()
    # near frontal's lower border (y = 10); vertex starts at 12, 1.5 mm radius: no spill
    cov.add_strokes(1, 1, cov.cell_at(10.0, 9.0))
    assert cov.spill_cm2(2) == 0.0 and cov.spill_cm2(0) > 0.0  # the gap between the zones
    cov.add_strokes(2, 1, cov.cell_at(10.0, 12.5))
    assert cov.spill_cm2(0) > 0.0
    cov.add_strokes(1, 1, cov.cell_at(10.0, 10.5))  # off frontal: its footprint reaches vertex
    assert cov.spill_cm2(2) > 0.0
    assert set(cov.spills()) == {0, 2}


@settings(max_examples=60, deadline=None)
@given(
    strokes=st.lists(
        st.tuples(st.floats(-2, 22), st.floats(-2, 24), st.integers(1, 3), st.sampled_from([1, 2])),
        max_size=40,
    )
)
def test_incremental_zone_counters_match_the_saved_grid(
    strokes: list[tuple[float, float, int, int]],
) -> None:
    cov = _coverage()
    for x, y, n, zone in strokes:
        cov.add_strokes(zone, n, cov.cell_at(x, y))
    stats = zone_dose_stats(cov.to_bytes())
    labels = MAP.raster(0.5).labels.reshape(-1)
    for z in ZONES:
        s = stats[z.zone_id]
        lim = cov.limits[z.zone_id]
        mask = labels == z.zone_id
        assert s["cells"] == int(mask.sum())
        assert cov.fraction(z.zone_id) == pytest.approx(s["cells_at_target"] / s["cells"])
        assert cov.cells_at_max(z.zone_id) == int((cov.hits[mask] >= lim.max_hits).sum())
        assert cov.mean_passes(z.zone_id) == pytest.approx(s["mean_passes"], abs=1e-3)
        assert cov.spill_cm2(z.zone_id) == pytest.approx(s["spill_cm2"], abs=0.01)
        assert sum(s["histogram"]) == s["cells"]
        assert cov.cells_over_max(z.zone_id) == s["cells_over_max"]


def test_saved_grid_gives_the_dose_measures_of_the_export() -> None:
    cov = _coverage()
    c = cov.cell_at(10.0, 5.0)
    cov.add_strokes(1, 3, c)
    s = zone_dose_stats(cov.to_bytes())[1]
    per_hit = cov.punctures_per_hit
    assert s["punctures_per_cm2_max"] == pytest.approx(3 * per_hit, abs=0.1)
    assert s["punctures_per_cm2_mean"] == pytest.approx(3 * 29 * per_hit / s["cells"], abs=0.1)
    assert s["histogram"][3] == 29 and s["histogram"][0] == s["cells"] - 29


def test_zone_is_done_at_its_target_fraction() -> None:
    cov = _coverage()
    assert not cov.done(1)
    target = cov.limits[1].target_hits
    for y in np.arange(0.25, 10, 1.0):
        for x in np.arange(0.25, 20, 1.0):
            cov.add_strokes(1, target, cov.cell_at(float(x), float(y)))
    assert cov.fraction(1) == 1.0 and cov.done(1) and not cov.done(2)
    assert cov.mean_passes(1) > 1.0


def test_without_position_dose_is_estimated_from_strokes_and_area() -> None:
    cov = _coverage(tracked=False)
    # one pass over 200 mm² at 4000 per cm² is 8000 punctures: 667 strokes of 12 needles
    per_pass = PASS_DOSE * 2.0 / 12
    cov.add_strokes(1, int(per_pass) + 1, cov.cell_at(10.0, 5.0))
    assert cov.hits_grid().sum() == 0  # no cells without position
    assert cov.done(1) and not cov.at_estimated_max(1)
    assert cov.mean_passes(1) == pytest.approx((int(per_pass) + 1) / per_pass)
    cov.add_strokes(1, int(per_pass), -1)
    assert cov.at_estimated_max(1)  # the next stroke would pass 2 passes


def test_coverage_state_survives_save_and_restore() -> None:
    cov = _coverage()
    cov.add_strokes(1, 3, cov.cell_at(5.0, 5.0))
    cov.add_strokes(2, 2, cov.cell_at(5.0, 15.0))
    cov.add_strokes(1, 1, cov.cell_at(5.0, 10.5))
    again = _coverage()
    again.restore(cov.to_bytes())
    assert np.array_equal(again.hits_grid(), cov.hits_grid())
    assert again.strokes(1) == 4 and again.strokes(2) == 2
    assert again.fraction(1) == cov.fraction(1)
    assert again.cells_at_max(2) == cov.cells_at_max(2)
    assert again.mean_passes(1) == cov.mean_passes(1)
    assert again.spills() == cov.spills()


def test_an_archive_saved_by_np_savez_compressed_still_restores() -> None:
    """Records written before the archive's level changed (np.savez_compressed, zlib 6)
    take back exactly as the new archives do."""
    import io
    import zipfile

    cov = _coverage()
    cov.add_strokes(1, 3, cov.cell_at(5.0, 5.0))
    cov.add_strokes(2, 2, cov.cell_at(5.0, 15.0))
    new = cov.to_bytes()
    with np.load(io.BytesIO(new), allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with zipfile.ZipFile(io.BytesIO(new)) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    for data in (new, buf.getvalue()):
        again = _coverage()
        again.restore(data)
        assert np.array_equal(again.hits_grid(), cov.hits_grid())
        assert again.strokes(1) == 3 and again.strokes(2) == 2
        assert again.fraction(2) == cov.fraction(2)


@pytest.mark.parametrize(("top", "stored"), [
    (255, np.uint8), (256, np.uint16), (65_535, np.uint16), (65_536, np.int32),
])
def test_the_archive_keeps_every_count_in_the_narrowest_type_that_holds_it(
    top: int, stored: type[np.generic]
) -> None:
    """The archive's counts are stored as uint8 while they fit (a quarter of the bytes to
    deflate once a second), uint16 above 255, the grid's own int32 above that: whatever
    the type, `restore` and the dose measures take back exactly what a full-width
    archive gives (a count that did not fit its type would wrap: 256 → 0 in uint8)."""
    import io
    import zipfile

    from devicectl.coverage_archive import ARCHIVE_LEVEL

    cov = _coverage()
    cov.add_strokes(1, 3, cov.cell_at(5.0, 5.0))
    cov.add_strokes(2, 2, cov.cell_at(5.0, 15.0))
    cov.hits[cov.cell_at(5.0, 5.0)] = top  # the largest count, at a boundary of a type
    cov.hits[cov.cell_at(5.0, 15.0)] = top - 1
    new = cov.to_bytes()
    with np.load(io.BytesIO(new), allow_pickle=False) as saved:
        assert saved["hits"].dtype == stored
        wide = {name: saved[name] for name in saved.files}
    wide["hits"] = cov.hits.copy()  # the same archive with the grid's own int32 counts
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=ARCHIVE_LEVEL) as zf:
        for name, array in wide.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    old = buf.getvalue()
    assert zone_dose_stats(new) == zone_dose_stats(old)
    narrow, full = _coverage(), _coverage()
    narrow.restore(new)
    full.restore(old)
    assert narrow.hits.dtype == full.hits.dtype == cov.hits.dtype
    assert np.array_equal(narrow.hits_grid(), cov.hits_grid())
    assert np.array_equal(full.hits_grid(), cov.hits_grid())
    assert narrow.cells_at_max(1) == full.cells_at_max(1) > 0
    assert narrow.fraction(2) == full.fraction(2) > 0


def test_restore_refuses_another_grid() -> None:
    other = Coverage(MAP.raster(1.0), ZONES, 30, tracked=True, needle_count=12)
    with pytest.raises(DevicectlError, match="grid"):
        _coverage().restore(other.to_bytes())


def test_restore_refuses_garbage_in_one_sentence() -> None:
    with pytest.raises(DevicectlError, match="cannot be read"):
        _coverage().restore(b"not an archive")
