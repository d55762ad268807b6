"""Patch treatment (issue 13 item 7): a profile's zone treated only on its
patches, circles or polygons on the map with a margin. Done when: an AA patch
profile treats only its patches, run end to end through the real CLI and the
simulated pen and hand; bad patch data is refused where it is written."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from clinic_support import GATE
from hypothesis import given, settings
from hypothesis import strategies as st
from test_coverage import _spot_from_grid

from devicectl import dose
from devicectl.cli import main
from devicectl.coverage import Coverage, Spot, footprint_offsets
from devicectl.patches import MARGIN_BIT, REST_BIT, Patch, patch_area_mm2, patched_raster
from devicectl.plan import NOMINAL_DEVICE
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.store import Store
from devicectl.zones import CHECK_CELL_MM, default_zone_map

DATA = Path(__file__).parent / "data"
TWO_PATCHES = DATA / "aa-two-patches.yaml"
SHORT = DATA / "short-frontal.yaml"
OCCIPITAL = 6


def test_an_aa_patch_profile_treats_only_its_patches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`devicectl run --sim --speed 0 --yes` over a two-patch profile: the zone is
    done, no spot over its maximum, every stroke's dose inside the patches and
    their margin (counted on the saved grid), and the export and the report give
    the patches' area."""
    db = tmp_path / "aa.db"
    code = main(["run", "--profile", str(TWO_PATCHES), "--patient", "P-AA1", "--sim", "--yes",
                 "--speed", "0", "--no-web", "--seed", "1", "--db", str(db), *GATE])
    capsys.readouterr()
    assert code == 0
    assert main(["sessions", "export", "1", "--format", "json", "--db", str(db)]) == 0
    (zone,) = json.loads(capsys.readouterr().out)["zones"]
    zone_map = default_zone_map()
    loaded = load_profile(TWO_PATCHES, zone_map=zone_map)
    shapes = loaded.profile.zones[0].patch_shapes
    assert zone["name"] == "occipital" and zone["done"] is True
    assert zone["cells_over_max"] == 0 and zone["spill_cm2"] == 0
    patches_cm2 = patch_area_mm2(zone_map, "occipital", shapes) / 100
    with_margin_cm2 = patch_area_mm2(zone_map, "occipital", shapes, margin=True) / 100
    assert zone["area_cm2"] == pytest.approx(patches_cm2, abs=0.01)
    assert zone["margin_cm2"] == pytest.approx(with_margin_cm2 - patches_cm2, abs=0.01)
    assert zone["area_cm2"] < 0.1 * zone_map.by_name("occipital").area_mm2 / 100

    with Store(db, create=False) as store:
        state = store.coverage_state(1)
    assert state is not None
    with np.load(io.BytesIO(state), allow_pickle=False) as saved:
        shape = tuple(int(v) for v in saved["shape"])
        hits = np.asarray(saved["hits"]).reshape(shape)
        labels = np.asarray(saved["labels"]).reshape(shape)
    treated = (labels == OCCIPITAL) | (labels == OCCIPITAL | MARGIN_BIT)
    assert hits[treated].sum() > 0
    assert hits[~treated].sum() == 0, "dose outside the patches and their margin"
    assert np.count_nonzero(labels == OCCIPITAL | REST_BIT) > 10 * np.count_nonzero(treated)
    # every cell of a patch is its own, every cell of the margin within it
    raster = zone_map.raster(CHECK_CELL_MM)
    ys, xs = np.nonzero(treated)
    for y, x in zip(ys[::97].tolist(), xs[::97].tolist(), strict=True):
        cx = raster.x0_mm + (x + 0.5) * CHECK_CELL_MM
        cy = raster.y0_mm + (y + 0.5) * CHECK_CELL_MM
        assert any(bool(p.contains(np.array(cx), np.array(cy))) for p in shapes)

    out = tmp_path / "report"
    assert main(["sessions", "report", "1", "--db", str(db), "--out", str(out)]) == 0
    html = (out / "session-1-report.html").read_text()
    assert "Patches treated" in html
    for p in shapes:
        alone = patch_area_mm2(zone_map, "occipital", [p]) / 100
        assert f"{alone:.1f}" in html


# --- located errors -----------------------------------------------------------------

BAD = [
    ("centre_mm: [-45, 258]", "centre_mm: [0, 100]", "- name: left",
     "zones[0].patches[0]: left: circle r 12 mm at (0, 100) is outside zone 'occipital'; "
     "it lies in mid_scalp"),
    ("centre_mm: [-45, 258]", "centre_mm: [-45, 218]", "- name: left",
     "zones[0].patches[0]: left: circle r 12 mm at (-45, 218) reaches"),
    ("radius_mm: 12", "radius_mm: -3", "radius_mm",
     "zones[0].patches[0].radius_mm: -3 is out of range; must be > 0"),
    ("patch_margin_mm: 5", "patch_margin_mm: -1", "patch_margin_mm",
     "zones[0].patch_margin_mm: -1 is out of range; must be ≥ 0"),
    ("outline_mm: [[20, 240], [45, 242], [42, 262], [24, 260]]",
     "outline_mm: [[20, 240], [45, 242]]", "outline_mm",
     "zones[0].patches[1].outline_mm: a polygon needs at least 3 points [x, y] (mm), not 2"),
    ("outline_mm: [[20, 240], [45, 242], [42, 262], [24, 260]]",
     "outline_mm: [[20, 240], [45, 262], [42, 240], [24, 262]]", "outline_mm",
     "zones[0].patches[1].outline_mm: crosses itself"),
    ("radius_mm: 12", "radius_mm: 12\n        outline_mm: [[1, 2], [3, 4], [5, 1]]",
     "- name: left", "zones[0].patches[0]: a patch is a circle"),
]


@pytest.mark.parametrize(("old", "new", "marker", "expected"), BAD,
                         ids=["outside", "straddles", "radius", "margin", "two_points",
                              "self_crossing", "both_shapes"])
def test_bad_patch_data_is_refused_where_it_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    old: str, new: str, marker: str, expected: str,
) -> None:
    text = TWO_PATCHES.read_text()
    assert old in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new))
    assert main(["profile", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = path.read_text().splitlines()
    line = next(i for i, x in enumerate(lines, 1) if marker in x)
    problem = next(x for x in err.splitlines() if expected in x)
    assert problem.startswith(f"{path}:{line}:"), problem


def test_a_margin_without_patches_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "margin.yaml"
    path.write_text(SHORT.read_text() + "    patch_margin_mm: 5\n")
    assert main(["profile", "validate", str(path)]) == 1


def test_a_profile_without_patches_keeps_its_hash() -> None:
    """Stored sessions name their profile by hash: the new fields must not change
    the hash of a profile that does not use them (the value before patches)."""
    assert load_profile(SHORT).content_hash == (
        "b2cca93ba92c01737624c932bd5e05055989cab7e9b653b5096da95ae60830c1")


# --- the grid ----------------------------------------------------------------------


def _coverage(*, tracked: bool = True) -> Coverage:
    zone_map = default_zone_map()
    plan = make_plan(load_profile(TWO_PATCHES, zone_map=zone_map), NOMINAL_DEVICE, zone_map)
    return Coverage(zone_map.raster(0.5), plan.zones, plan.footprint_dmm, tracked=tracked,
                    needle_count=plan.needle_count)


def test_the_host_holds_outside_the_patches_and_where_a_stroke_would_pass_the_margin() -> None:
    cov = _coverage()
    assert cov.spot(OCCIPITAL, cov.cell_at(-45, 258)) is Spot.NEEDS  # the circle's centre
    assert cov.spot(OCCIPITAL, cov.cell_at(-45, 258 - 13)) is Spot.NEEDS  # 1 mm into the margin
    # 1 mm inside the margin's edge: the footprint (5 mm) would reach past it
    assert cov.spot(OCCIPITAL, cov.cell_at(-45, 258 - 16)) is Spot.EDGE
    assert cov.spot(OCCIPITAL, cov.cell_at(0, 290)) is Spot.OUTSIDE  # the occipital, no patch
    assert cov.zone_cells(OCCIPITAL) * 0.25 == pytest.approx(cov.zones[OCCIPITAL].area_mm2)
    # a stroke that does land past the margin is spill onto the occipital, not "off the zones"
    cov.add_strokes(OCCIPITAL, 1, cov.cell_at(-45, 258 - 16))
    assert set(cov.spills()) == {OCCIPITAL}
    assert set(dose.zone_spill(cov.to_bytes())) == {OCCIPITAL}


def test_a_patch_plan_is_no_go_without_position() -> None:
    assert not _coverage().problems
    (problem,) = _coverage(tracked=False).problems
    assert "needs a pen that reports its position" in problem


def test_the_saved_grid_and_the_geometry_agree_on_the_margin_label() -> None:
    assert dose._MARGIN_BIT == MARGIN_BIT  # dose.py keeps a copy, to import nothing at load


@settings(max_examples=25, deadline=None)
@given(
    x=st.floats(-60, 60), y=st.floats(245, 275), r=st.floats(1.0, 15.0),
    margin=st.floats(0.0, 8.0),
)
def test_a_circle_patch_labels_exactly_its_cells(x: float, y: float, r: float,
                                                 margin: float) -> None:
    """For every circle in the occipital zone: each cell of the zone is the patch,
    its margin or the rest, by the distance of its centre; the area is the cells'."""
    zone_map = default_zone_map()
    raster = zone_map.raster(CHECK_CELL_MM)
    patch = Patch("", (x, y), r, (), margin)

    class Z:
        zone_id = OCCIPITAL
        patches = (patch,)

    labels = patched_raster(raster, [Z()]).labels
    ny, nx = labels.shape
    gx, gy = np.meshgrid(raster.x0_mm + (np.arange(nx) + 0.5) * CHECK_CELL_MM,
                         raster.y0_mm + (np.arange(ny) + 0.5) * CHECK_CELL_MM)
    d = np.hypot(gx - x, gy - y)
    own = raster.labels == OCCIPITAL
    assert np.array_equal(labels == OCCIPITAL, own & (d <= r))
    assert np.array_equal(labels == OCCIPITAL | MARGIN_BIT, own & (d > r) & (d <= r + margin))
    assert np.array_equal(labels == OCCIPITAL | REST_BIT, own & (d > r + margin))
    assert np.array_equal(labels[~own], raster.labels[~own])
    area = patch_area_mm2(zone_map, "occipital", [patch])
    assert area == np.count_nonzero(labels == OCCIPITAL) * CHECK_CELL_MM ** 2
    assert area == pytest.approx(math.pi * r * r, abs=2 * math.pi * r * CHECK_CELL_MM + 1)


# --- the shipped profiles ---------------------------------------------------------

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def test_the_shipped_aa_profile_treats_patches_with_triamcinolone_and_cites_its_sources(
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile = load_profile(PROFILES / "aa-patch.yaml").profile
    assert profile.condition == "alopecia_areata"
    assert all(z.patches and z.patch_margin_mm >= 5 for z in profile.zones)
    assert [a.name for a in profile.adjuncts] == ["triamcinolone"]
    assert all(source in profile.notes for source in ("PMC8776974", "PMC9674065", "NCT04147845"))
    assert main(["profile", "show", str(PROFILES / "aa-patch.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Patch in occipital" in out and "margin 5 mm" in out


def test_the_shipped_te_profile_says_what_it_could_not_verify() -> None:
    profile = load_profile(PROFILES / "te-diffuse.yaml").profile
    assert "PMC8776974" in profile.notes and "No trial of microneedling" in profile.notes
    assert all(z.depth_um <= 1000 for z in profile.zones)


@settings(max_examples=8, deadline=None)
@given(
    x=st.floats(-50, 50), y=st.floats(250, 270), r=st.floats(3.0, 12.0),
    margin=st.floats(0.0, 6.0),
    tips=st.lists(st.tuples(st.floats(0.5, 1.0), st.floats(0, 2 * math.pi),
                            st.integers(-1, 1), st.integers(-1, 1), st.integers(1, 30)),
                  min_size=20, max_size=80),
)
def test_no_stroke_the_host_allows_lands_past_patch_and_margin(
    x: float, y: float, r: float, margin: float,
    tips: list[tuple[float, float, int, int, int]],
) -> None:
    """Whatever the patch and wherever the hand goes: a stroke the host lets the pen
    give (its tip over a cell `spot` allows), landing where the tip was seen or one
    cell on (the STOP in flight), never puts dose outside the patch and its margin."""
    zone_map = default_zone_map()
    text = SHORT.read_text().replace("zone: frontal", "zone: occipital").replace(
        "target_fraction: 0.04",
        f"target_fraction: 0.5\n    patch_margin_mm: {margin:.2f}\n    patches:\n"
        f"      - {{centre_mm: [{x:.2f}, {y:.2f}], radius_mm: {r:.2f}}}")
    from devicectl.profile import load_profile_text

    plan = make_plan(load_profile_text(text, "p.yaml", zone_map=zone_map), NOMINAL_DEVICE,
                     zone_map)
    cov = Coverage(zone_map.raster(0.5), plan.zones, plan.footprint_dmm, tracked=True,
                   needle_count=plan.needle_count)
    for rho, angle, sx, sy, n in tips:  # tips from the middle out to past the margin
        far = rho * (r + margin + 3)
        cell = cov.cell_at(x + far * math.cos(angle), y + far * math.sin(angle))
        if cov.spot(OCCIPITAL, cell) in (Spot.NEEDS, Spot.TREATABLE):
            cov.add_strokes(OCCIPITAL, n, cell + sy * cov._nx + sx)
    labels = cov.raster.labels.reshape(-1)
    treated = (labels == OCCIPITAL) | (labels == OCCIPITAL | MARGIN_BIT)
    assert int(cov.hits[~treated].sum()) == 0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 2 * math.pi), st.integers(1, 3)),
             min_size=10, max_size=60),
)
def test_a_patch_and_its_margin_are_held_at_the_maximum_as_the_grid_says(
    tips: list[tuple[float, float, int]],
) -> None:
    """Spot's quick path (a tip whose grown footprint lies in the patch and its margin)
    takes AT_MAX from Reach's blocked tips: every tip it takes must be one that Reach
    blocks, and along any hand path across the patch and its margin, with a pass so
    thin (3 strokes to the target, 4 to the maximum) that cells reach it, spot says
    AT_MAX exactly where a cell under the grown footprint is at its maximum on the grid."""
    from dataclasses import replace

    from devicectl.footprint import grown

    zone_map = default_zone_map()
    plan = make_plan(load_profile(TWO_PATCHES, zone_map=zone_map), NOMINAL_DEVICE, zone_map)
    zones = tuple(replace(z, pass_punctures_per_cm2=z.pass_punctures_per_cm2 / 36)
                  for z in plan.zones)
    cov = Coverage(zone_map.raster(0.5), zones, plan.footprint_dmm, tracked=True,
                   needle_count=plan.needle_count)
    quick = np.frombuffer(cov._core_zone, dtype=np.uint8) != 0
    assert quick.any() and bool(cov.reach.tip_allowed[quick].all())
    ny, nx = cov.raster.labels.shape
    gy, gx = grown(*footprint_offsets(cov.footprint_mm, cov.cell_mm))

    def at_max_on_grid(cell: int) -> bool:
        iy, ix = divmod(cell, nx)
        ys, xs = iy + gy, ix + gx
        ok = (ys >= 0) & (ys < ny) & (xs >= 0) & (xs < nx)
        under = ys[ok] * nx + xs[ok]
        return bool((cov.hits[under] >= cov._max[under]).any())

    for rho, angle, n in tips:  # around the circle's centre, out to past its margin
        far = rho * 16.0
        cell = cov.cell_at(-45 + far * math.cos(angle), 258 + far * math.sin(angle))
        before = cov.spot(OCCIPITAL, cell)
        # every verdict as the grid gives it afresh: below the target means a cell of
        # the patch itself below it, never the margin alone (it is treated, not needed)
        assert before is _spot_from_grid(cov, OCCIPITAL, cell)
        if before in (Spot.NEEDS, Spot.TREATABLE, Spot.AT_MAX):
            assert (before is Spot.AT_MAX) == at_max_on_grid(cell)
        if before in (Spot.NEEDS, Spot.TREATABLE):
            cov.add_strokes(OCCIPITAL, n, cell)
            after = cov.spot(OCCIPITAL, cell)
            assert after is _spot_from_grid(cov, OCCIPITAL, cell)
            if after in (Spot.NEEDS, Spot.TREATABLE, Spot.AT_MAX):
                assert (after is Spot.AT_MAX) == at_max_on_grid(cell)


def test_over_a_patch_and_its_margin_only_the_patchs_cells_are_needed() -> None:
    """A saved grid (a continued session restores one) may hold a patch's cells at their
    target and its margin's below: a tip whose footprint covers both is TREATABLE, on
    spot's quick path as on the grid afresh (the margin is treated, never needed), and
    NEEDS again where a cell of the patch itself is below."""
    cov, saved = _coverage(), _coverage()
    labels = cov._labels
    own, margin = labels == OCCIPITAL, labels == (OCCIPITAL | MARGIN_BIT)
    target = cov.limits[OCCIPITAL].target_hits
    saved.hits[own] = target
    cov.restore(saved.to_bytes())
    quick = np.flatnonzero(np.frombuffer(cov._core_zone, dtype=np.uint8) == OCCIPITAL)
    footprints = {int(c): cov.footprint_cells(int(c)) for c in quick}
    mixed = [c for c, fp in footprints.items() if margin[fp].any() and own[fp].any()]
    assert len(mixed) > 10
    for cell in mixed:
        assert cov.spot(OCCIPITAL, cell) is _spot_from_grid(cov, OCCIPITAL, cell) is Spot.TREATABLE
    cell = mixed[len(mixed) // 2]
    saved.hits[footprints[cell][own[footprints[cell]]][0]] = target - 1
    cov.restore(saved.to_bytes())
    assert cov.spot(OCCIPITAL, cell) is _spot_from_grid(cov, OCCIPITAL, cell) is Spot.NEEDS
