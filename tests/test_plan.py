"""The plan: a profile fitted to the connected pen, or refused with every reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from devicectl.errors import RefusedError
from devicectl.plan import NOMINAL_DEVICE, estimated_strokes
from devicectl.profile import LoadedProfile, load_profile
from devicectl.profile_plan import make_plan, nominal_plan
from devicectl.zones import ZoneMap, load_zone_map

AGA = Path(__file__).resolve().parent.parent / "profiles" / "aga-crown-midscalp.yaml"


@pytest.fixture(scope="module")
def zone_map() -> ZoneMap:
    return load_zone_map()


@pytest.fixture(scope="module")
def aga(zone_map: ZoneMap) -> LoadedProfile:
    return load_profile(AGA, zone_map=zone_map)


def test_plan_gives_each_zone_in_pen_units_in_profile_order(
    aga: LoadedProfile, zone_map: ZoneMap
) -> None:
    plan = make_plan(aga, NOMINAL_DEVICE, zone_map)
    assert [(z.name, z.zone_id, z.depth_um, z.rate_dhz) for z in plan.zones] == [
        ("vertex", 3, 1500, 1000),
        ("mid_scalp", 2, 1500, 1000),
    ]
    assert plan.profile_hash == aga.content_hash
    assert plan.warnings == aga.warnings
    assert plan.min_interval_days == 28
    assert (plan.footprint_dmm, plan.needle_count) == (50, 12)


def test_estimates_cover_target_passes_over_the_target_fraction(
    aga: LoadedProfile, zone_map: ZoneMap
) -> None:
    zone = make_plan(aga, NOMINAL_DEVICE, zone_map).zones[0]
    area = zone_map.by_name("vertex").area_mm2
    assert zone.area_mm2 == area
    assert zone.est_stamps == estimated_strokes(3, area * 0.9, 5.0, 100.0)
    assert zone.est_seconds == pytest.approx(zone.est_stamps / 100.0)
    assert 5 * 60 < zone.est_seconds < 20 * 60  # a plausible ten minutes on the crown


def test_rate_outside_the_pen_range_is_refused_with_the_reason(
    aga: LoadedProfile, zone_map: ZoneMap
) -> None:
    slow_pen = dataclasses.replace(NOMINAL_DEVICE, max_rate_dhz=800)
    with pytest.raises(RefusedError) as info:
        make_plan(aga, slow_pen, zone_map)
    assert str(info.value) == (
        "this pen cannot run profile 'AGA crown and mid-scalp, monthly': "
        "vertex: 100 Hz is outside this pen's rates (20 Hz to 80 Hz); "
        "mid_scalp: 100 Hz is outside this pen's rates (20 Hz to 80 Hz)"
    )


def test_depth_beyond_the_pen_is_refused(aga: LoadedProfile, zone_map: ZoneMap) -> None:
    short_pen = dataclasses.replace(NOMINAL_DEVICE, max_depth_um=1000)
    with pytest.raises(RefusedError, match=r"vertex: 1\.5 mm is deeper than this pen reaches"):
        make_plan(aga, short_pen, zone_map)


def test_a_pen_without_footprint_or_needles_is_refused(
    aga: LoadedProfile, zone_map: ZoneMap
) -> None:
    broken = dataclasses.replace(NOMINAL_DEVICE, footprint_dmm=0, needle_count=0)
    with pytest.raises(RefusedError) as info:
        make_plan(aga, broken, zone_map)
    assert "no needle footprint" in str(info.value)
    assert "no needles" in str(info.value)


def test_plan_from_a_bare_profile_matches_the_loaded_one(
    aga: LoadedProfile, zone_map: ZoneMap
) -> None:
    assert make_plan(aga.profile, NOMINAL_DEVICE, zone_map) == make_plan(
        aga, NOMINAL_DEVICE, zone_map
    )


def test_nominal_plan_needs_no_pen(aga: LoadedProfile, zone_map: ZoneMap) -> None:
    plan = nominal_plan(aga, zone_map)
    assert plan.est_seconds == sum(z.est_seconds for z in plan.zones)
    assert plan.max_depth_um == 1500
