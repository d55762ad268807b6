"""The pen's body: actuator response, motor ramp, battery, heat, cartridge, pen files."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.errors import ProfileError
from devicectl.safety import OVERDEPTH_LIMIT_UM
from firmware_sim.firmware import PEN_DEPTH_LIMIT_UM
from firmware_sim.physics import PenParams, Physics, load_pen, randint


def strokes(ph: Physics, n: int, depth_um: int, rate_dhz: int = 1000) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        if ph.advance(1000, depth_um, rate_dhz, True):
            out.append(ph.depth_meas_um)
    return out


@given(depth_um=st.integers(200, PEN_DEPTH_LIMIT_UM), seed=st.integers(0, 2**16))
@settings(max_examples=100, deadline=None)
def test_steady_state_depth_is_within_150_um_of_the_command(depth_um: int, seed: int) -> None:
    meas = strokes(Physics(PenParams(), seed=seed), 40, depth_um)
    assert all(abs(m - depth_um) <= 150 for m in meas[15:])
    assert len(set(meas[15:])) > 1  # noisy: a measurement, not a copy


@given(seed=st.integers(0, 2**16))
@settings(max_examples=100, deadline=None)
def test_default_overshoot_from_rest_to_the_cap_stays_under_the_overdepth_limit(seed: int) -> None:
    meas = strokes(Physics(PenParams(), seed=seed), 30, PEN_DEPTH_LIMIT_UM)
    assert max(meas) <= OVERDEPTH_LIMIT_UM
    assert max(meas) > PEN_DEPTH_LIMIT_UM - 10  # it does overshoot a little


def test_depth_settles_over_a_few_strokes_not_at_once() -> None:
    meas = strokes(Physics(replace(PenParams(), sensor_noise_um=0)), 10, 1000)
    assert meas[0] < 900 and abs(meas[6] - 1000) <= 20


def test_larger_configured_overshoot_overshoots_more() -> None:
    peak = {
        pct: max(
            strokes(Physics(replace(PenParams(), overshoot_pct=pct, sensor_noise_um=0)), 15, 1000)
        )
        for pct in (0.0, 2.0, 10.0)
    }
    assert peak[0.0] <= 1000 < peak[2.0] < peak[10.0]


def test_motor_ramps_to_the_target_and_strokes_follow_the_rate() -> None:
    ph = Physics(PenParams())
    ph.advance(5000, 1000, 1200, True)
    assert 0 < ph.rate_meas_dhz < 1200
    for _ in range(995):
        ph.advance(1000, 1000, 1200, True)
    assert ph.rate_meas_dhz == 1200
    assert 110 <= ph.strokes <= 120  # 120 Hz for 1 s, less the ramp


def test_battery_discharges_with_strokes_and_heat_builds_up() -> None:
    ph = Physics(PenParams())
    mv, temp = ph.battery_mv, ph.temp_c
    for _ in range(60_000):
        ph.advance(1000, 1000, 1500, True)
    assert ph.battery_mv < mv and ph.temp_c > temp


def test_cartridge_counts_its_stamps_and_can_be_swapped_or_removed() -> None:
    ph = Physics(PenParams())
    strokes(ph, 10, 800)
    assert ph.cartridge_stamps == 10
    ph.remove_cartridge()
    assert not ph.cartridge_present
    ph.insert_cartridge(42, 0)
    assert ph.cartridge_id == 42 and ph.cartridge_stamps == 0


def test_a_pen_described_in_yaml_overrides_only_its_fields(tmp_path: Path) -> None:
    f = tmp_path / "pen.yaml"
    f.write_text("needle_count: 16\nmax_rate_dhz: 1400\n", encoding="utf-8")
    pen = load_pen(f)
    assert (pen.needle_count, pen.max_rate_dhz, pen.min_rate_dhz) == (16, 1400, 500)


def test_a_pen_file_with_an_unknown_or_mistyped_field_is_refused_by_name(tmp_path: Path) -> None:
    f = tmp_path / "pen.yaml"
    f.write_text("needles: 16\nmax_rate_dhz: fast\n", encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_pen(f)
    assert "needles" in str(err.value) and len(err.value.problems) == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(-5000, 5000), st.integers(0, 5000),
       st.integers(1, 20))
def test_randint_draws_what_random_randint_draws(seed: int, lo: int, span: int,
                                                 draws: int) -> None:
    """The pen's sensor noise comes from physics.randint: the very numbers, in the very
    order, random.Random.randint gives from the same seed (the simulation stays the
    same run for a seed), and an empty range is refused as randint refuses it."""
    mine, theirs = random.Random(seed), random.Random(seed)
    for _ in range(draws):
        assert randint(mine, lo, lo + span) == theirs.randint(lo, lo + span)
    with pytest.raises(ValueError):
        randint(mine, lo, lo - 1)
