"""The cartridge's needle count: the profile states it, the pen's DEVICE_INFO must match."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from devicectl.errors import ProfileError
from devicectl.profile import load_profile_text
from devicectl.safety_gonogo import needle_count_problem

sys.path.insert(0, str(Path(__file__).parent))
from test_controller import DEVICE, new_controller, plan_of, zone_plan
from test_controller import Pen as PenSide

from devicectl.controller import State


def test_needle_count_within_the_profiles_range_passes() -> None:
    assert needle_count_problem(12, (12, 12)) is None
    assert needle_count_problem(16, (12, 16)) is None


def test_needle_count_outside_the_range_is_named_with_both_counts() -> None:
    why = needle_count_problem(36, (12, 12))
    assert why is not None and "36 needles" in why and "for 12" in why
    why = needle_count_problem(9, (12, 16))
    assert why is not None and "12 to 16" in why


def test_a_36_needle_cartridge_on_a_12_needle_profile_is_no_go() -> None:
    plan = replace(plan_of(zone_plan(1, "frontal")), needle_counts=(12, 12))
    ctl, pen = new_controller(plan), PenSide()
    pen.parse(ctl.connect(0))
    out = ctl.receive_data(pen.frame(replace(DEVICE, needle_count=36)), 500)
    assert ctl.state is State.REFUSED
    assert any("36 needles" in reason for reason in ctl.go_no_go)
    assert "SET_TARGET" not in [f.message.TYPE.name for f in pen.parse(out)]


PROFILE = """\
name: t
version: 1
condition: androgenetic_alopecia
approved_by: Dr. T
approved_on: 2024-05-01
min_interval_days: 28
needle_count: {needles}
zones:
  - zone: vertex
    depth_mm: 1.5
    rate_hz: 100
    target_passes: 3
    max_passes: 4
    target_fraction: 0.9{extra}
"""


def test_profile_states_a_count_or_a_range() -> None:
    assert load_profile_text(PROFILE.format(needles=12, extra=""), "t.yaml").profile.needle_counts \
        == (12, 12)
    loaded = load_profile_text(PROFILE.format(needles="[12, 16]", extra=""), "t.yaml")
    assert loaded.profile.needle_counts == (12, 16)


@pytest.mark.parametrize(
    ("needles", "why"),
    [
        ("[16, 12]", "t.yaml:7:15: needle_count: [16, 12]: the lowest count comes first"),
        ("0", "t.yaml:7:15: needle_count: 0 is not a needle count; allowed: 1 to 255"),
        ("[12, 14, 16]", "t.yaml:7:15: needle_count: [12, 14, 16] must be a count, or [lowest"),
    ],
)
def test_bad_needle_counts_are_located(needles: str, why: str) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile_text(PROFILE.format(needles=needles, extra=""), "t.yaml")
    assert why in str(info.value)


def test_a_profile_without_a_needle_count_is_refused() -> None:
    text = PROFILE.format(needles=12, extra="").replace("needle_count: 12\n", "")
    with pytest.raises(ProfileError, match="needle_count: required, but missing"):
        load_profile_text(text, "t.yaml")


def test_max_punctures_per_cm2_is_optional_and_positive() -> None:
    loaded = load_profile_text(
        PROFILE.format(needles=12, extra="\n    max_punctures_per_cm2: 850"), "t.yaml")
    assert loaded.profile.zones[0].max_punctures_per_cm2 == 850
    with pytest.raises(ProfileError, match="max_punctures_per_cm2: 0 is out of range"):
        load_profile_text(PROFILE.format(needles=12, extra="\n    max_punctures_per_cm2: 0"),
                          "t.yaml")
