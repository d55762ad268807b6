"""The scalp zone map: shipped outlines, areas from outlines, rasters, lookups, refused maps."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.errors import ProfileError
from devicectl.zones import (
    DEFAULT_ZONES_PATH,
    KNOWN_ZONE_NAMES,
    ZoneMap,
    load_zone_map,
    point_in_polygon,
    points_in_polygon,
    polygon_area_mm2,
)

SHIPPED: dict[str, Any] = yaml.safe_load(DEFAULT_ZONES_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def zone_map() -> ZoneMap:
    return load_zone_map()


def write_map(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "zones.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ProfileError) as info:
        load_zone_map(path)
    return info.value.problems


def test_shipped_map_has_the_six_zones_in_wire_id_order(zone_map: ZoneMap) -> None:
    assert [z.name for z in zone_map.zones] == list(KNOWN_ZONE_NAMES)
    assert [z.id for z in zone_map.zones] == [1, 2, 3, 4, 5, 6]
    assert zone_map.by_name("vertex").label == "Vertex (crown)"


def test_shipped_map_totals_an_adult_scalp_of_about_775_cm2(zone_map: ZoneMap) -> None:
    assert 740_00 <= zone_map.area_mm2 <= 810_00


def test_each_zone_has_a_plausible_size(zone_map: ZoneMap) -> None:
    for zone in zone_map.zones:
        assert 40_00 <= zone.area_mm2 <= 250_00, zone.name
    assert zone_map.by_name("left_temporal").area_mm2 == zone_map.by_name("right_temporal").area_mm2


def test_area_is_computed_from_the_outline(zone_map: ZoneMap) -> None:
    for zone in zone_map.zones:
        assert zone.area_mm2 == polygon_area_mm2(zone.outline_mm)
    assert polygon_area_mm2([(0, 0), (10, 0), (10, 5), (0, 5)]) == 50.0


@pytest.mark.parametrize("cell_mm", [0.5, 1.0, 2.0])
def test_raster_cell_counts_match_zone_areas(zone_map: ZoneMap, cell_mm: float) -> None:
    raster = zone_map.raster(cell_mm)
    assert raster.labels.dtype == np.uint8
    counts = np.bincount(raster.labels.ravel(), minlength=7)
    for zone in zone_map.zones:
        assert counts[zone.id] * cell_mm**2 == pytest.approx(zone.area_mm2, rel=0.03)


def test_raster_is_cached_per_cell_size(zone_map: ZoneMap) -> None:
    assert zone_map.raster(1.0) is zone_map.raster(1.0)
    assert zone_map.raster(0.5) is not zone_map.raster(1.0)


def test_raster_rows_are_y_and_columns_are_x(zone_map: ZoneMap) -> None:
    raster = zone_map.raster(1.0)
    cell = raster.cell_of(-120.0, 100.0)  # patient's left temporal
    assert cell is not None
    row, col = cell
    assert raster.labels[row, col] == zone_map.by_name("left_temporal").id
    assert raster.y0_mm + row * raster.cell_mm <= 100.0 < raster.y0_mm + (row + 1) * raster.cell_mm


def test_cell_of_outside_the_grid_is_none(zone_map: ZoneMap) -> None:
    raster = zone_map.raster(1.0)
    assert raster.cell_of(-1000.0, 0.0) is None
    assert raster.cell_of(0.0, 10_000.0) is None
    assert raster.cell_of(float("nan"), 0.0) is None


def test_zone_at_knows_the_landmarks(zone_map: ZoneMap) -> None:
    def name(x: float, y: float) -> str | None:
        zone = zone_map.zone_at(x, y)
        return zone.name if zone else None

    assert name(0.0, 20.0) == "frontal"
    assert name(0.0, 100.0) == "mid_scalp"
    assert name(0.0, 170.0) == "vertex"
    assert name(120.0, 100.0) == "right_temporal"
    assert name(-120.0, 100.0) == "left_temporal"
    assert name(0.0, 280.0) == "occipital"
    assert name(0.0, -5.0) is None
    assert name(200.0, 100.0) is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_zone_at_agrees_with_the_raster_at_cell_centres(
    zone_map: ZoneMap, data: st.DataObject
) -> None:
    raster = zone_map.raster(1.0)
    ny, nx = raster.labels.shape
    row = data.draw(st.integers(0, ny - 1))
    col = data.draw(st.integers(0, nx - 1))
    x = raster.x0_mm + (col + 0.5) * raster.cell_mm
    y = raster.y0_mm + (row + 0.5) * raster.cell_mm
    zone = zone_map.zone_at(x, y)
    assert (zone.id if zone else 0) == raster.labels[row, col]


def test_by_name_of_an_unknown_zone_names_the_known_ones(zone_map: ZoneMap) -> None:
    with pytest.raises(ProfileError, match="unknown zone 'crown'; the map has frontal, mid_scalp"):
        zone_map.by_name("crown")
    with pytest.raises(ProfileError, match="unknown zone id 9"):
        zone_map.by_id(9)
    assert zone_map.by_id(3).name == "vertex"


def test_overlapping_zones_are_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["zones"][2]["outline_mm"] = [[-70, 125], [70, 125], [70, 215], [-70, 215]]
    problems = problems_of(write_map(tmp_path, data))
    assert any("zones[2].outline_mm: overlaps zone 'mid_scalp'" in p for p in problems)


def test_a_zone_inside_another_is_an_overlap(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["zones"][1]["outline_mm"] = [[-20, 160], [20, 160], [20, 190], [-20, 190]]
    problems = problems_of(write_map(tmp_path, data))
    assert any("overlaps zone" in p for p in problems)


def test_self_intersecting_outline_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["zones"][1]["outline_mm"] = [[-70, 55], [70, 135], [70, 55], [-70, 135]]
    problems = problems_of(write_map(tmp_path, data))
    assert any("zones[1].outline_mm: self-intersecting" in p for p in problems)


def test_unknown_zone_name_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["zones"][2]["name"] = "crown"
    problems = problems_of(write_map(tmp_path, data))
    assert any("zones[2].name: 'crown' is not a known zone; known: frontal" in p for p in problems)
    assert any("zone 'vertex' is missing" in p for p in problems)


def test_zone_outside_the_scalp_outline_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["scalp_outline_mm"] = [[x, y] for x, y in data["scalp_outline_mm"] if y <= 215]
    problems = problems_of(write_map(tmp_path, data))
    assert any("zones[5].outline_mm: reaches outside scalp_outline_mm" in p for p in problems)


def test_a_map_whose_zones_do_not_cover_the_scalp_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["zones"][1]["outline_mm"] = [[-70, 55], [70, 55], [70, 130], [-70, 130]]
    problems = problems_of(write_map(tmp_path, data))
    assert any("uncovered" in p for p in problems)


def test_ids_must_run_in_list_order(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["zones"][0]["id"] = 7
    problems = problems_of(write_map(tmp_path, data))
    assert any("zones[0].id: must be 1" in p for p in problems)


def test_zone_map_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text("zones:\n  - id: 1\n    name: frontal\n    name: vertex\n", encoding="utf-8")
    assert problems_of(path) == [
        f"{path}:4:5: zones[0].name: duplicate key (first at line 3); give each key once"
    ]


def test_a_missing_zone_map_file_is_a_clean_error(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "nope.yaml")
    assert problems[0].startswith(f"{tmp_path / 'nope.yaml'}: cannot read the zone map")


@settings(max_examples=100, deadline=None)
@given(
    outline=st.lists(
        st.tuples(st.integers(-20, 20).map(float), st.integers(-20, 20).map(float)),
        min_size=3, max_size=8,
    ),
    cell=st.sampled_from([0.5, 1.0, 1.5]),
)
def test_the_grid_test_by_row_and_column_equals_the_test_point_by_point(
    outline: list[tuple[float, float]], cell: float
) -> None:
    """The rasters pass a row of x and a column of y; every point must fall as it does alone."""
    xs = np.arange(-22.0, 22.0, cell) + cell / 2
    ys = np.arange(-21.0, 21.0, cell) + cell / 3
    poly = tuple(outline)
    by_broadcast = points_in_polygon(xs[None, :], ys[:, None], poly)
    gx, gy = np.meshgrid(xs, ys)
    assert by_broadcast.shape == gx.shape
    assert np.array_equal(by_broadcast, points_in_polygon(gx, gy, poly))
    for j in range(0, len(ys), 7):
        for i in range(0, len(xs), 5):
            assert by_broadcast[j, i] == point_in_polygon(float(xs[i]), float(ys[j]), poly)
