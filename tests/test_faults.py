"""Every fault scenario, shown on the wire: a scripted host drives a VirtualPen through bytes."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import pytest

from devicectl.errors import ProfileError
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
from firmware_sim.faults import ByteImpairment, Scenario, load_scenarios
from firmware_sim.probe import Probe
from firmware_sim.triggers import Trigger
from firmware_sim.virtual import VirtualPen


def session(scenario: str, *, depth_um: int = 1200, seconds: float = 3.0) -> Probe:
    """HELLO, CONFIGURE, SET_TARGET, START, then `seconds` of a host feeding the watchdog."""
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
    # Read from this file's source, so it holds alone, with -k, in any order.
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    named = {
        node.value
        for fn in tree.body
        if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")
        for node in ast.walk(fn)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert set(load_scenarios()) - named == set()


def test_a_stamping_scenario_fires_on_its_stroke_count_not_a_time() -> None:
    p = session("overshoot", seconds=3.0)  # strokes: 50, then the stop slips
    sc = load_scenarios()["overshoot"]
    assert sc.trigger == Trigger("stamping", strokes=50)
    fired = p.pen.faults.fired_at_us
    assert fired is not None
    strokes_then = max(t.stamp_count for tt, t in _timed(p, Telemetry) if tt <= fired)
    assert 49 <= strokes_then <= 51


def test_a_received_trigger_fires_on_the_nth_host_frame_of_its_type(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        "cut:\n  description: cut at the second SET_TARGET\n  on: received\n"
        "  message: SET_TARGET\n  count: 2\n  effect: disconnect\n"
        "  params: {duration_ms: 300, direction: to_pen}\n",
        encoding="utf-8",
    )
    sc = load_scenarios(f)["cut"]
    p = Probe(VirtualPen(seed=3, scenario=sc))
    p.hello()
    p.send(SetTarget(1000, 1000, 1))
    p.run_for(50_000)
    assert p.pen.faults.fired_at_us is None
    p.send(SetTarget(1100, 1000, 2))
    p.run_for(50_000)
    assert p.pen.faults.fired_at_us is not None
    p.run_for(200_000)
    assert fault_codes(p) == [FaultBit.WATCHDOG]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x:\n  description: d\n  on: lunch\n", "unknown trigger 'lunch'"),
        ("x:\n  description: d\n  on: received\n", "needs a message"),
        ("x:\n  description: d\n  after_ms: 500\n", "unknown key(s) after_ms"),
        ("x:\n  description: d\n  strokes: -1\n", "strokes from 0"),
    ],
)
def test_a_bad_trigger_is_named(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError, match="scenario 'x'") as err:
        load_scenarios(f)
    assert words in str(err.value)


def _timed(p: Probe, cls: type[Telemetry]) -> list[tuple[int, Telemetry]]:
    return [(t, f.message) for t, f in p.frames if isinstance(f.message, cls)]


def test_impairment_is_deterministic_for_a_seed_and_near_its_rates() -> None:
    data = bytes(range(256)) * 400
    a = ByteImpairment(random.Random(1), ber=1e-3, drop_p=1e-2, dup_p=1e-2)
    b = ByteImpairment(random.Random(1), ber=1e-3, drop_p=1e-2, dup_p=1e-2)
    out_a = b"".join(a.apply(data[i : i + 100]) for i in range(0, len(data), 100))
    out_b = b.apply(data)
    assert out_a == out_b
    assert 600 < a.flipped < 1050 and 800 < a.dropped < 1250 and 800 < a.duplicated < 1250


def _cut(trigger: Trigger) -> Scenario:
    cut = {"duration_ms": 300, "direction": "to_pen"}
    return Scenario("cut", "a cut", "disconnect", trigger, cut)


def test_a_ready_trigger_fires_when_the_pen_holds_a_target_and_not_before() -> None:
    p = Probe(VirtualPen(seed=3, scenario=_cut(Trigger("ready"))))
    p.hello()
    p.run_for(50_000)
    assert p.pen.faults.fired_at_us is None
    p.send(SetTarget(1000, 1000, 1))
    p.run_for(2000)
    assert p.pen.faults.fired_at_us is not None


def test_a_manual_trigger_fires_only_when_told() -> None:
    p = Probe(VirtualPen(seed=3, scenario=_cut(Trigger("manual"))))
    p.hello()
    p.send(SetTarget(1000, 1000, 1))
    p.send(Start())
    p.run_for(500_000)
    assert p.pen.faults.fired_at_us is None and not p.of(Fault)
    p.pen.faults.watch.fire()
    p.run_for(200_000)
    assert fault_codes(p) == [FaultBit.WATCHDOG]
