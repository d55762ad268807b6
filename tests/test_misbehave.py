"""Each misbehaving pen, shown on the wire: a scripted host drives it through bytes."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from devicectl.protocol import (
    Configure,
    DeviceInfo,
    Estop,
    Fault,
    FaultBit,
    Hello,
    Nack,
    PenState,
    SetTarget,
    Start,
    Stop,
    Telemetry,
    Unknown,
)
from firmware_sim.misbehave import MisbehavingPen, load_misbehaviours
from firmware_sim.probe import Probe
from firmware_sim.triggers import Trigger
from firmware_sim.virtual import VirtualPen

TRIGGER_STROKES = 30


def stamping(name: str, *, trigger: Trigger | None = None, seconds: float = 0.6) -> Probe:
    """HELLO, CONFIGURE, SET_TARGET 1000 µm at 100 Hz, START, then `seconds` of heartbeats."""
    mb = load_misbehaviours()[name]
    if trigger is not None:
        mb = replace(mb, trigger=trigger)
    p = Probe(MisbehavingPen(VirtualPen(seed=3), mb, seed=3))  # type: ignore[arg-type]
    p.hello()
    p.send(Configure(500, 100))
    p.send(SetTarget(1000, 1000, 1))
    p.send(Start())
    p.run_for(int(seconds * 1e6))
    return p


def after_fire(p: Probe) -> list[Telemetry]:
    fired = p.pen.fired_at_us
    assert fired is not None, "the misbehaviour never started"
    return p.of(Telemetry, since_us=fired + 1000)


def test_the_trigger_is_a_stroke_count() -> None:
    p = stamping("lying-target")
    before = [t for t in p.of(Telemetry) if t.depth_cmd_um == 1000]
    assert before
    assert TRIGGER_STROKES - 1 <= max(t.stamp_count for t in before) <= TRIGGER_STROKES


def test_lying_target_stamps_at_1500_while_1000_was_commanded() -> None:
    p = stamping("lying-target")
    late = after_fire(p)[-100:]
    assert {t.depth_cmd_um for t in late} == {1500}
    assert max(t.depth_meas_um for t in late) > 1400
    assert p.pen.firmware.state is PenState.STAMPING  # its own check compares with its lie
    assert p.pen.first_bad_us is not None and p.pen.first_bad_us >= p.pen.fired_at_us


def test_ignores_stop_acks_it_and_stamps_on() -> None:
    p = stamping("ignores-stop")
    seq = p.send(Stop())
    p.run_for(100_000)
    assert p.ack_for(seq).status == Nack.OK and p.ack_for(seq).acked_type == Stop.TYPE
    assert p.last(Telemetry).state == PenState.STAMPING


def test_ignores_estop_acks_it_and_stamps_on() -> None:
    p = stamping("ignores-estop")
    seq = p.send(Estop(5))
    p.run_for(50_000)
    assert p.ack_for(seq).status == Nack.OK
    assert p.last(Telemetry).state == PenState.STAMPING and not p.of(Fault)
    p.feed_watchdog = False  # only its watchdog stops it
    p.run_for(150_000)
    assert p.last(Fault).code == FaultBit.WATCHDOG


def test_ignores_every_stop_acks_estop_and_stop_and_stamps_on() -> None:
    p = stamping("ignores-every-stop")
    seqs = [p.send(Estop(7)), p.send(Stop())]
    p.run_for(50_000)
    assert all(p.ack_for(seq).status == Nack.OK for seq in seqs)
    assert p.last(Telemetry).state == PenState.STAMPING and not p.of(Fault)


def test_overspeed_runs_the_motor_past_125_percent() -> None:
    p = stamping("overspeed")
    late = after_fire(p)[-50:]
    assert min(t.rate_meas_dhz for t in late) > 1250


def test_wrong_protocol_says_proto_2() -> None:
    p = stamping("wrong-protocol", seconds=0.01)
    assert p.last(DeviceInfo).proto == 2


def test_garbage_flood_breaks_no_frame_of_the_pen() -> None:
    p = stamping("garbage-flood")
    assert p.decoder.bad_frames > 100
    assert len(after_fire(p)) >= 0.9 * (p.now_us - p.pen.fired_at_us) / 2000


def test_nacks_everything_refuses_stop_but_obeys_estop() -> None:
    p = stamping("nacks-everything")
    seq = p.send(Stop())
    p.run_for(20_000)
    assert p.ack_for(seq).status == Nack.BAD_STATE
    assert p.last(Telemetry).state == PenState.STAMPING
    seq = p.send(Estop(5))
    p.run_for(20_000)
    assert p.ack_for(seq).status == Nack.BAD_STATE
    assert p.last(Telemetry).state == PenState.FAULT


def test_acks_unapplied_target_keeps_the_target_before() -> None:
    trig = Trigger("received", message="SET_TARGET", count=2)
    p = stamping("acks-unapplied-target", trigger=trig)
    seq = p.send(SetTarget(1200, 1000, 2))
    p.run_for(50_000)
    assert p.ack_for(seq).status == Nack.OK and p.ack_for(seq).acked_type == SetTarget.TYPE
    assert {t.depth_cmd_um for t in p.of(Telemetry)[-10:]} == {1000}


def test_silent_says_nothing_yet_obeys_stop() -> None:
    p = stamping("silent")
    fired = p.pen.fired_at_us
    assert not [t for t, _ in p.frames if t > fired]
    p.send(Stop())
    p.run_for(10_000)
    assert p.pen.firmware.state is PenState.READY


def test_reboots_comes_back_idle_with_the_counter_from_zero() -> None:
    p = stamping("reboots")
    before = [t for t in p.of(Telemetry) if t.state == PenState.STAMPING]
    late = after_fire(p)
    assert before[-1].stamp_count >= TRIGGER_STROKES - 1
    assert late and all(t.state == PenState.IDLE and t.stamp_count == 0 for t in late)
    assert {t.depth_cmd_um for t in late} == {0}


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [("another-serial", "serial_number", 100043), ("another-cartridge", "cartridge_id", 0x5EC0DE)],
)
def test_after_a_cut_another_pen_or_cartridge_answers(name: str, field: str, value: int) -> None:
    p = stamping(name, seconds=1.0)
    fired = p.pen.fired_at_us
    gap = [t for t, _ in p.frames if fired < t < fired + 390_000]
    assert not gap  # the cable is out
    assert p.pen.firmware.fault_flags & (1 << FaultBit.WATCHDOG)
    p.send(Hello(1, 77))
    p.run_for(2000)
    assert getattr(p.last(DeviceInfo), field) == value


def test_markup_frames_reach_the_host_as_unknown_types() -> None:
    p = stamping("markup-frames")
    bodies = [m.body for m in p.of(Unknown)]
    assert bodies == [b"[/]", b"[bold red]x[/]", b"\x1b[2J"]


def test_every_misbehaviour_has_a_test_on_the_wire() -> None:
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    named = {
        node.value
        for fn in tree.body
        if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")
        for node in ast.walk(fn)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert set(load_misbehaviours()) - named == set()


@pytest.mark.parametrize("name", ["ignores-stop", "garbage-flood", "lying-target"])
def test_until_its_trigger_a_misbehaving_pen_is_byte_for_byte_the_pen_inside(name: str) -> None:
    mb = replace(load_misbehaviours()[name], trigger=Trigger("manual"))
    runs = []
    for pen in (VirtualPen(seed=5), MisbehavingPen(VirtualPen(seed=5), mb, seed=5)):
        p = Probe(pen)  # type: ignore[arg-type]
        p.hello()
        p.send(Configure(500, 100))
        p.send(SetTarget(1000, 1000, 1))
        p.send(Start())
        p.run_for(300_000)
        p.send(Stop())
        p.run_for(50_000)
        runs.append([(t, f) for t, f in p.frames])
    assert runs[0] == runs[1]
