"""Every fault scenario, shown on the wire: a scripted host drives a VirtualPen through bytes."""

from __future__ import annotations

import itertools
import random

import pytest

from devicectl.protocol import (
    POSITION_UNKNOWN,
    ClearFault,
    Configure,
    DeviceInfo,
    Estop,
    Event,
    Fault,
    FaultBit,
    Nack,
    PenEvent,
    PenState,
    SetTarget,
    Start,
    Telemetry,
)
from devicectl.safety import OVERDEPTH_LIMIT_UM
from firmware_sim.faults import ByteImpairment, load_scenarios
from firmware_sim.probe import Probe
from firmware_sim.virtual import VirtualPen

TESTED: set[str] = set()


def session(scenario: str, *, depth_um: int = 1200, seconds: float = 3.0) -> Probe:
    """HELLO, CONFIGURE, SET_TARGET, START, then `seconds` of a host feeding the watchdog."""
    TESTED.add(scenario)
    p = Probe(VirtualPen(seed=3, scenario=scenario))
    p.hello()
    p.send(Configure(500, 100))
    p.send(SetTarget(depth_um, 1000, 2))
    p.send(Start())
    p.run_for(int(seconds * 1e6))
    return p


def fault_codes(p: Probe) -> list[int]:
    return [f.code for f in p.of(Fault)]


def test_line_noise_corrupts_frames_the_host_must_discard_yet_telemetry_flows() -> None:
    p = session("line-noise")
    assert p.decoder.bad_frames > 5
    assert len(p.of(Telemetry)) > 1300


@pytest.mark.parametrize("name", ["drop-bytes", "duplicate-bytes"])
def test_lost_or_doubled_bytes_break_some_frames_only(name: str) -> None:
    p = session(name)
    assert p.decoder.bad_frames > 0
    assert len(p.of(Telemetry)) > 1300


def test_disconnect_silences_the_pen_and_after_it_the_pen_is_in_watchdog_fault() -> None:
    p = session("disconnect")
    times = [t for t, f in p.frames if isinstance(f.message, Telemetry)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 490_000
    last = p.last(Telemetry)
    assert last.state == PenState.FAULT and last.fault_flags & (1 << FaultBit.WATCHDOG)


def test_watchdog_scenario_latches_watchdog_and_the_host_sees_fault() -> None:
    p = session("watchdog")
    assert fault_codes(p) == [FaultBit.WATCHDOG]


def test_overshoot_is_caught_by_the_pen_as_overdepth() -> None:
    p = session("overshoot")
    f = p.last(Fault)
    assert f.code == FaultBit.OVERDEPTH and f.detail > 1200 + 100


def test_overshoot_with_firmware_limit_broken_goes_past_1550_until_the_host_estops() -> None:
    p = session("overshoot-no-limit", depth_um=1500)
    deep = [t for t in p.of(Telemetry) if t.depth_meas_um > OVERDEPTH_LIMIT_UM]
    assert deep and all(t.state == PenState.STAMPING for t in deep)
    assert not p.of(Fault)
    p.send(Estop(1))  # only the host can stop it
    p.run_for(20_000)
    assert p.last(Fault).code == FaultBit.ESTOP and p.last(Telemetry).depth_meas_um == 0


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        ("stuck-sensor", FaultBit.SENSOR),
        ("stall", FaultBit.STALL),
        ("brown-out", FaultBit.LOW_BATTERY),
        ("overheat", FaultBit.OVERTEMP),
    ],
)
def test_body_fault_scenarios_latch_their_fault(name: str, bit: FaultBit) -> None:
    p = session(name)
    assert fault_codes(p) == [bit]
    assert p.last(Telemetry).state == PenState.FAULT


def test_brown_out_clear_fault_is_nacked_while_the_battery_is_low() -> None:
    p = session("brown-out")
    seq = p.send(ClearFault())
    p.run_for(2000)
    assert p.ack_for(seq).status == Nack.FAULT_ACTIVE


def test_cartridge_pulled_mid_stroke_sends_event_and_latches_cartridge() -> None:
    p = session("cartridge-pulled")
    assert PenEvent.CARTRIDGE_REMOVED in [e.event for e in p.of(Event)]
    assert fault_codes(p) == [FaultBit.CARTRIDGE]


def test_contact_lost_drops_contact_for_two_seconds_with_events() -> None:
    p = session("contact-lost", seconds=5.0)
    events = [(e.event, e.t_us) for e in p.of(Event) if e.event in (4, 5)]
    lost = [t for ev, t in events if ev == PenEvent.CONTACT_LOST]
    made = [t for ev, t in events if ev == PenEvent.CONTACT_MADE and lost and t > lost[0]]
    assert lost and made and made[0] - lost[0] >= 1_900_000


def test_buttons_scenario_presses_pause_then_resume_two_seconds_later() -> None:
    p = session("buttons", seconds=4.0)
    presses = [(e.event, e.t_us) for e in p.of(Event) if e.event in (1, 2)]
    assert [ev for ev, _ in presses] == [PenEvent.BUTTON_PAUSE, PenEvent.BUTTON_RESUME]
    assert presses[1][1] - presses[0][1] == pytest.approx(2_000_000, abs=2000)


def test_used_cartridge_is_reported_in_device_info() -> None:
    p = session("used-cartridge", seconds=0.1)
    info = p.last(DeviceInfo)
    assert info.cartridge_id != 0 and info.cartridge_stamps == 4200


def test_no_cartridge_reports_id_zero_and_start_is_nacked_cartridge() -> None:
    p = session("no-cartridge", seconds=0.1)
    assert p.last(DeviceInfo).cartridge_id == 0
    assert p.ack_for(3).status == Nack.CARTRIDGE


def test_no_position_pen_lacks_the_capability_and_reports_unknown_position() -> None:
    p = session("no-position", seconds=1.0)
    assert not p.last(DeviceInfo).capabilities & 1
    assert {(t.x_dmm, t.y_dmm) for t in p.of(Telemetry)} == {(POSITION_UNKNOWN, POSITION_UNKNOWN)}


def test_every_scenario_has_a_test_on_the_wire() -> None:
    # runs last in this file (pytest keeps file order): the tests above fill TESTED
    assert set(load_scenarios()) <= TESTED


def test_impairment_is_deterministic_for_a_seed_and_near_its_rates() -> None:
    data = bytes(range(256)) * 400
    a = ByteImpairment(random.Random(1), ber=1e-3, drop_p=1e-2, dup_p=1e-2)
    b = ByteImpairment(random.Random(1), ber=1e-3, drop_p=1e-2, dup_p=1e-2)
    out_a = b"".join(a.apply(data[i : i + 100]) for i in range(0, len(data), 100))
    out_b = b.apply(data)
    assert out_a == out_b
    assert 600 < a.flipped < 1050 and 800 < a.dropped < 1250 and 800 < a.duplicated < 1250
