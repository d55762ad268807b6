"""The zone map's maximum depth per region, as data with its source: a profile
deeper than its region allows is refused at validation and by the plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from devicectl.cli import main
from devicectl.errors import ProfileError, RefusedError
from devicectl.plan import NOMINAL_DEVICE
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.safety import DEPTH_CAP_UM
from devicectl.safety_gonogo import region_depth_problems
from devicectl.zones import DEFAULT_ZONES_PATH, ZoneMap, load_zone_map

SHORT = Path(__file__).parent / "data" / "short-frontal.yaml"


def temporal_profile(tmp_path: Path, depth: str) -> Path:
    text = SHORT.read_text().replace("zone: frontal", "zone: left_temporal")
    text = text.replace("depth_mm: 0.5", f"depth_mm: {depth}")
    path = tmp_path / "temples.yaml"
    path.write_text(text)
    return path


def test_every_region_of_the_shipped_map_has_a_limit_and_its_source() -> None:
    zone_map = load_zone_map()
    for zone in zone_map.zones:
        assert zone.max_depth_um is not None and 0 < zone.max_depth_um <= DEPTH_CAP_UM
        assert zone.max_depth_source
    temples = [z for z in zone_map.zones if "temporal" in z.name]
    assert temples and all(z.max_depth_um == 1000 for z in temples)
    assert all("PMC9205051" in z.max_depth_source for z in temples)


def test_a_temple_at_1_5_mm_is_refused_where_it_is_written(tmp_path: Path) -> None:
    path = temporal_profile(tmp_path, "1.5")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    (problem,) = caught.value.problems
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "depth_mm" in x)
    assert problem.startswith(f"{path}:{line}:")
    assert "zones[0].depth_mm: zone left_temporal at 1.50 mm is deeper than its region " \
        "allows (1.00 mm" in problem


def test_a_temple_at_its_limit_is_accepted_and_validate_says_why_not_above(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_profile(temporal_profile(tmp_path, "1.0")).profile.zones[0].depth_um == 1000
    assert main(["profile", "validate", str(temporal_profile(tmp_path, "1.05"))]) == 1
    assert "deeper than its region allows" in capsys.readouterr().err


def test_the_plan_never_trusts_the_profile_check() -> None:
    loaded = load_profile(SHORT)  # frontal at 0.5 mm
    zone_map = load_zone_map()
    stricter = ZoneMap(zones=tuple(
        dataclasses.replace(z, max_depth_um=400) if z.name == "frontal" else z
        for z in zone_map.zones), scalp_outline_mm=zone_map.scalp_outline_mm)
    with pytest.raises(RefusedError, match="deeper than its region allows"):
        make_plan(loaded, NOMINAL_DEVICE, stricter)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (("    max_depth_mm: 1.0\n", "    max_depth_mm: 1.6\n"), "at most the cap"),
        (("    max_depth_source: \"PMC9205051", "    other: \"PMC9205051"), "unknown field"),
    ],
)
def test_a_region_limit_must_be_within_the_cap_and_sourced(
    tmp_path: Path, edit: tuple[str, str], why: str
) -> None:
    text = DEFAULT_ZONES_PATH.read_text()
    assert edit[0] in text
    path = tmp_path / "zones.yaml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ProfileError) as caught:
        load_zone_map(path)
    assert any(why in p for p in caught.value.problems)


def test_the_rule_itself() -> None:
    assert region_depth_problems([("vertex", 1500, None), ("frontal", 1000, 1000)]) == []
    assert region_depth_problems([("left_temporal", 1050, 1000)])
