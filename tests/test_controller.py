"""The controller's rules, driven with hand-made frames through the real codec."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from devicectl import protocol as p
from devicectl.controller import (
    SILENCE_LOST_US,
    STEADY_FRAMES,
    WATCHDOG_MS,
    Command,
    Controller,
    EventKind,
    Output,
    StartFacts,
    State,
)
from devicectl.dose import pass_punctures_per_cm2
from devicectl.errors import RefusedError
from devicectl.plan import Plan, ZonePlan
from devicectl.safety import BATTERY_LOW_MV, DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM
from devicectl.zones import Zone, ZoneMap


def _square(zone_id: int, name: str, x0: float, y0: float, w: float, h: float) -> Zone:
    outline = ((x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h))
    return Zone(zone_id, name, name, outline, w * h)


MAP = ZoneMap((_square(1, "frontal", 0, 0, 20, 10), _square(2, "vertex", 0, 12, 20, 10)))
NONCE = 0x12345678
DEVICE = p.DeviceInfo(NONCE, 1, 0x0102, 42, 2500, 500, 1500, 12, 3, 0xC0FFEE, 0, 30)


def zone_plan(zone_id: int, name: str, depth_um: int = 1000, **kw: Any) -> ZonePlan:
    z = ZonePlan(zone_id, name, depth_um, 1000, 1, 2, 0.9, 200.0, 0, 10.0,
                 pass_punctures_per_cm2=pass_punctures_per_cm2(12, 1000, 30))
    return replace(z, **kw)


def plan_of(*zones: ZonePlan) -> Plan:
    zones = zones or (zone_plan(1, "frontal"), zone_plan(2, "vertex", 1200))
    return Plan("test", "1", "hash", 28, zones, (), 30, 12, needle_counts=(12, 12))


def tel(**kw: int) -> p.Telemetry:
    base = p.Telemetry(0, p.PenState.READY, 0, 1000, 0, 0, 0, 100, 50, 1, 1, 4000)
    return replace(base, **kw)


class Pen:
    """The pen's side of the wire, by hand: frames out, the host's frames parsed."""

    def __init__(self) -> None:
        self.seq = 0
        self.decoder = p.Decoder()

    def frame(self, *messages: p.Message) -> bytes:
        out = b""
        for m in messages:
            out += p.encode(m, self.seq)
            self.seq = (self.seq + 1) & 0xFF
        return out

    def parse(self, out: Output) -> list[p.Frame]:
        return self.decoder.feed(out.data)

    def acks(self, frames: Iterable[p.Frame], status: int = 0) -> bytes:
        return self.frame(
            *(p.Ack(f.seq, f.message.TYPE, status) for f in frames if f.ack_req)  # type: ignore[union-attr]
        )


def types(frames: Iterable[p.Frame]) -> list[str]:
    return [f.message.TYPE.name for f in frames]  # type: ignore[union-attr]


def kinds(out: Output) -> list[EventKind]:
    return [e.kind for e in out.events]


def new_controller(plan: Plan | None = None, facts: StartFacts | None = None) -> Controller:
    chosen = plan or plan_of()
    return Controller(
        lambda dev: chosen,
        MAP,
        facts or StartFacts("patient-1", frozenset()),
        nonce=NONCE,
        now_us=0,
    )


def ready(
    plan: Plan | None = None, device: p.DeviceInfo = DEVICE, facts: StartFacts | None = None
) -> tuple[Controller, Pen, int]:
    """A controller through HELLO, DEVICE_INFO, CONFIGURE and SET_TARGET: READY at t=1 ms."""
    ctl, pen = new_controller(plan, facts), Pen()
    pen.parse(ctl.connect(0))
    frames = pen.parse(ctl.receive_data(pen.frame(device), 500))
    assert ctl.state is State.CONFIGURING, ctl.go_no_go
    ctl.receive_data(pen.acks(frames), 1000)
    assert ctl.state is State.READY
    return ctl, pen, 1000


def stamping(stamps: int = 0, **kw: Any) -> tuple[Controller, Pen, int]:
    """STAMPING at t=1.5 ms; `stamps`: the pen's counter in its first report."""
    ctl, pen, now = ready(**kw)
    ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50, stamp_count=stamps)), now)
    frames = pen.parse(ctl.command(Command.START, now))
    assert types(frames) == ["START"]
    ctl.receive_data(pen.acks(frames), now + 500)
    assert ctl.state is State.STAMPING
    return ctl, pen, now + 500


# --- connecting --------------------------------------------------------------


def test_connect_sends_hello_with_the_nonce() -> None:
    ctl, pen = new_controller(), Pen()
    (frame,) = pen.parse(ctl.connect(0))
    assert frame.message == p.Hello(1, NONCE)


def test_hello_is_repeated_every_100_ms() -> None:
    ctl, pen = new_controller(), Pen()
    ctl.connect(0)
    assert "HELLO" not in types(pen.parse(ctl.tick(99_000)))
    assert "HELLO" in types(pen.parse(ctl.tick(100_000)))


def test_no_answer_to_hello_for_2_s_is_link_lost() -> None:
    ctl = new_controller()
    ctl.connect(0)
    for t in range(0, 2_000_001, 10_000):
        ctl.tick(t)
    assert ctl.state is State.LINK_LOST


def test_device_info_with_another_nonce_is_ignored() -> None:
    ctl, pen = new_controller(), Pen()
    ctl.connect(0)
    ctl.receive_data(pen.frame(replace(DEVICE, nonce=NONCE + 1)), 10)
    assert ctl.state is State.CONNECTING


def test_device_info_leads_to_configure_and_set_target_then_ready() -> None:
    ctl, pen = new_controller(), Pen()
    ctl.connect(0)
    frames = pen.parse(ctl.receive_data(pen.frame(DEVICE), 10))
    assert types(frames) == ["CONFIGURE", "SET_TARGET"]
    assert frames[1].message == p.SetTarget(1000, 1000, 1)
    ctl.receive_data(pen.acks(frames[:1]), 20)
    assert ctl.state is State.CONFIGURING
    ctl.receive_data(pen.acks(frames[1:]), 30)
    assert ctl.state is State.READY


def test_plan_refused_by_the_pen_is_refused_state() -> None:
    def refuse(dev: p.DeviceInfo) -> Plan:
        raise RefusedError("the pen cannot reach 1.2 mm")

    ctl = Controller(refuse, MAP, StartFacts("x", frozenset()), nonce=NONCE, now_us=0)
    pen = Pen()
    ctl.connect(0)
    out = ctl.receive_data(pen.frame(DEVICE), 10)
    assert ctl.state is State.REFUSED and ctl.go_no_go
    assert pen.parse(out) == []


@pytest.mark.parametrize(
    ("device", "facts"),
    [
        (replace(DEVICE, cartridge_id=0), StartFacts("x", frozenset())),
        (replace(DEVICE, cartridge_stamps=10), StartFacts("x", frozenset())),
        (DEVICE, StartFacts("x", frozenset({DEVICE.cartridge_id}))),
        (DEVICE, StartFacts("x", frozenset(), {"vertex": 3.0})),
    ],
    ids=["no-cartridge", "stamped-cartridge", "used-cartridge", "interval"],
)
def test_go_no_go_failure_is_refused_before_anything_is_sent(
    device: p.DeviceInfo, facts: StartFacts
) -> None:
    ctl, pen = new_controller(facts=facts), Pen()
    ctl.connect(0)
    out = ctl.receive_data(pen.frame(device), 10)
    assert ctl.state is State.REFUSED and ctl.go_no_go
    assert "SET_TARGET" not in types(pen.parse(out))
    assert ctl.status(10)["go_no_go"] == list(ctl.go_no_go)


def test_interval_override_with_a_reason_is_recorded_and_goes() -> None:
    facts = StartFacts("x", frozenset(), {"vertex": 3.0}, "clinician approved, trial",
                       interval_override_clinician="DR-7")
    ctl, pen = new_controller(facts=facts), Pen()
    ctl.connect(0)
    out = ctl.receive_data(pen.frame(DEVICE), 10)
    assert ctl.state is State.CONFIGURING
    (override,) = [e for e in out.events if e.kind is EventKind.OVERRIDE]
    assert "clinician approved" in override.text and override.safety
    assert override.data["clinician"] == "DR-7"


@pytest.mark.parametrize(
    ("reason", "clinician", "why"),
    [("clinician approved, trial", None, "--clinician"), (".", "DR-7", "at least 10")],
    ids=["no-clinician", "reason-too-short"],
)
def test_interval_override_without_clinician_or_real_reason_is_refused(
    reason: str, clinician: str | None, why: str
) -> None:
    facts = StartFacts("x", frozenset(), {"vertex": 3.0}, reason,
                       interval_override_clinician=clinician)
    ctl, pen = new_controller(facts=facts), Pen()
    ctl.connect(0)
    out = ctl.receive_data(pen.frame(DEVICE), 10)
    assert ctl.state is State.REFUSED
    assert any(why in r for r in ctl.go_no_go)
    assert "SET_TARGET" not in types(pen.parse(out))


def test_a_shallow_zone_inside_the_profiles_interval_is_refused() -> None:
    # frontal is planned at 1.0 mm: the 28-day floor does not bind it, the profile's 28 days do.
    facts = StartFacts("x", frozenset(), days_since_treatment={"frontal": 5.0})
    ctl, pen = new_controller(facts=facts), Pen()
    ctl.connect(0)
    ctl.receive_data(pen.frame(DEVICE), 10)
    assert ctl.state is State.REFUSED
    assert any("frontal" in r and "28 days" in r for r in ctl.go_no_go)


# --- link rules -----------------------------------------------------------------


def test_heartbeat_after_20_ms_of_silence() -> None:
    ctl, pen, now = ready()
    assert types(pen.parse(ctl.tick(now + 19_000))) == []
    assert types(pen.parse(ctl.tick(now + 20_000))) == ["HEARTBEAT"]


def test_unacked_frame_is_resent_after_30_ms_then_link_lost_after_3() -> None:
    ctl, pen, now = stamping()
    first = pen.parse(ctl.command(Command.PAUSE, now))
    assert types(first) == ["STOP"]
    seqs = [first[0].seq]
    for k in range(1, 4):
        frames = [f for f in pen.parse(ctl.tick(now + k * 30_000)) if f.ack_req]
        assert [f.message for f in frames] == [first[0].message]
        seqs.append(frames[0].seq)
    assert len(set(seqs)) == 4  # new seq each time
    ctl.tick(now + 4 * 30_000)
    assert ctl.state is State.LINK_LOST


def test_telemetry_silence_past_the_pens_watchdog_is_link_lost() -> None:
    # Silent for 2.5 watchdog periods: the pen has stopped itself; no carrying on alone.
    ctl, pen, now = ready()
    ctl.receive_data(pen.frame(tel(state=p.PenState.READY)), now)
    ctl.tick(now + SILENCE_LOST_US)
    assert ctl.state is State.READY
    ctl.tick(now + SILENCE_LOST_US + 1_000)
    assert ctl.state is State.LINK_LOST
    assert SILENCE_LOST_US <= 3 * WATCHDOG_MS * 1000


def test_nack_of_start_pauses_with_the_reason() -> None:
    ctl, pen, now = ready()
    ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now)
    frames = pen.parse(ctl.command(Command.START, now))
    out = ctl.receive_data(pen.acks(frames, p.Nack.FAULT_ACTIVE), now + 100)
    assert EventKind.NACK in kinds(out)
    assert ctl.state is State.PAUSED and "FAULT_ACTIVE" in (ctl.stop_reason or "")


# --- safety on telemetry ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        tel(
            state=p.PenState.STAMPING,
            depth_cmd_um=DEPTH_CAP_UM,
            depth_meas_um=OVERDEPTH_LIMIT_UM + 1,
        ),
        tel(state=p.PenState.STAMPING, depth_cmd_um=1000, depth_meas_um=1101),
        tel(fault_flags=1 << p.FaultBit.STALL),
    ],
    ids=["over-1550", "over-command-plus-100", "new-fault-flag"],
)
def test_dangerous_telemetry_is_estop_first_in_the_same_call_then_fault(bad: p.Telemetry) -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(bad), now + 1000)
    frames = pen.parse(out)
    assert types(frames)[0] == "ESTOP"
    assert ctl.state is State.FAULT and ctl.fault_latched
    assert any(e.kind is EventKind.ESTOP and e.safety for e in out.events)


def test_pen_fault_message_is_estop_and_fault() -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(p.Fault(1 << p.FaultBit.OVERTEMP, 7, 75)), now + 10)
    assert types(pen.parse(out)) == ["ESTOP"]
    assert ctl.state is State.FAULT


def test_known_fault_flag_is_not_estopped_again() -> None:
    ctl, pen, now = stamping()
    flags = 1 << p.FaultBit.STALL
    pen.parse(ctl.receive_data(pen.frame(tel(fault_flags=flags)), now + 10))
    again = pen.parse(ctl.receive_data(pen.frame(tel(fault_flags=flags | 1 << 5)), now + 20))
    assert "ESTOP" not in types(again)  # the ESTOP bit is the host's own doing


def test_start_is_refused_while_a_fault_is_latched() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel(fault_flags=1)), now + 10)
    out = ctl.command(Command.START, now + 20)
    assert kinds(out) == [EventKind.COMMAND_REFUSED] and pen.parse(out) == []


def test_clear_fault_needs_the_pens_acceptance_then_a_new_start() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel(fault_flags=1)), now + 10)
    frames = pen.parse(ctl.command(Command.CLEAR_FAULT, now + 20))
    assert types(frames) == ["CLEAR_FAULT"]
    ctl.receive_data(pen.acks(frames, p.Nack.FAULT_ACTIVE), now + 30)
    assert ctl.state is State.FAULT and ctl.fault_latched
    frames = pen.parse(ctl.command(Command.CLEAR_FAULT, now + 40))
    out = ctl.receive_data(pen.acks(frames), now + 50)
    frames = pen.parse(out)
    assert not ctl.fault_latched and ctl.state is State.CONFIGURING
    assert "START" not in types(frames)
    ctl.receive_data(pen.acks(frames), now + 60)
    assert ctl.state is State.READY  # never straight back to stamping


def test_low_battery_stops_stamping_with_the_reason() -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(tel(battery_mv=BATTERY_LOW_MV - 10)), now + 10)
    assert "STOP" in types(pen.parse(out))
    assert ctl.state is State.PAUSED and "battery" in (ctl.stop_reason or "")


def test_unknown_pen_state_stops_stamping() -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(tel(state=9)), now + 10)
    assert "STOP" in types(pen.parse(out)) and ctl.state is State.PAUSED


def test_estop_leaves_before_the_rest_of_a_batch_is_worked_on() -> None:
    ctl, pen, now = stamping()
    deep = tel(depth_cmd_um=1000, depth_meas_um=OVERDEPTH_LIMIT_UM + 10)
    batch = pen.frame(deep) + b"".join(pen.frame(tel(stamp_count=k)) for k in range(1, 40))
    out = ctl.receive_data(batch, now + 10)
    assert types(pen.parse(out)) == ["ESTOP"]  # nothing else on the wire first
    assert ctl.telemetry is not None and ctl.telemetry.stamp_count == 0  # the rest waits
    ctl.tick(now + 20)
    assert ctl.telemetry is not None and ctl.telemetry.stamp_count == 39  # then is handled


def test_telemetry_gap_over_3_periods_stops_stamping() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel()), now)
    assert "STOP" not in types(pen.parse(ctl.tick(now + 6_000)))
    out = ctl.tick(now + 6_500)
    assert "STOP" in types(pen.parse(out))
    assert "telemetry" in (ctl.stop_reason or "")
    assert EventKind.SAFETY_STOP in kinds(out)


def test_after_a_telemetry_gap_stamping_resumes_only_once_telemetry_is_steady() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel()), now)
    pen.parse(ctl.tick(now + 7_000))  # the gap: STOP
    t = now + 7_000
    sent: list[str] = []
    for k in range(STEADY_FRAMES):
        t += 2_000
        sent += types(pen.parse(ctl.receive_data(pen.frame(tel()), t)))
        if k == STEADY_FRAMES // 2:  # another gap midway starts the count again
            t += 8_000
    assert "START" not in sent
    for _ in range(STEADY_FRAMES):
        t += 2_000
        sent += types(pen.parse(ctl.receive_data(pen.frame(tel()), t)))
    assert sent.count("START") == 1 and ctl.state is State.STAMPING


def test_contact_lost_over_300_ms_stops_and_contact_back_restarts() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel(contact=0)), now)
    t = now
    sent: list[str] = []
    while t < now + 300_000:
        t += 2000
        sent += types(pen.parse(ctl.receive_data(pen.frame(tel(contact=0)), t)))
        sent += types(pen.parse(ctl.tick(t)))
    assert "STOP" not in sent
    t += 2000
    assert "STOP" in types(pen.parse(ctl.receive_data(pen.frame(tel(contact=0)), t)))
    assert ctl.stop_reason is not None and "contact" in ctl.stop_reason
    out = ctl.receive_data(pen.frame(tel(contact=1)), t + 2000)
    assert "START" in types(pen.parse(out))


def test_cartridge_removed_stops_stamping_and_blocks_start() -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(p.Event(p.PenEvent.CARTRIDGE_REMOVED, 0)), now + 10)
    assert "STOP" in types(pen.parse(out)) and ctl.state is State.PAUSED
    assert kinds(ctl.command(Command.RESUME, now + 20)) == [EventKind.COMMAND_REFUSED]


# --- coverage in the loop -----------------------------------------------------------


def test_tip_outside_the_zone_stops_stamping_and_back_inside_starts() -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=170)), now + 10)  # in vertex
    assert "STOP" in types(pen.parse(out)) and "outside" in (ctl.stop_reason or "")
    out = ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now + 20)
    # back in a jump of many cells, faster than the dose hold follows: not yet ...
    assert "START" not in types(pen.parse(out))
    out = ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now + 2020)
    assert "START" in types(pen.parse(out))  # ... once the tip is steady inside


def test_start_with_the_tip_off_the_zone_does_not_stamp() -> None:
    ctl, pen, now = ready()
    ctl.receive_data(pen.frame(tel(x_dmm=-500, y_dmm=50)), now)
    out = ctl.command(Command.START, now)
    assert ctl.state is State.STAMPING and pen.parse(out) == []


def test_spot_at_maximum_stops_stamping() -> None:
    ctl, pen, now = stamping()
    sent: list[str] = []
    assert ctl.coverage is not None
    most = ctl.coverage.limits[1].max_hits
    for k in range(1, most + 1):  # dwelling on one spot: stroke after stroke
        t = now + k * 2000
        frame = tel(state=p.PenState.STAMPING, stamp_count=k, x_dmm=100, y_dmm=50,
                    depth_meas_um=1000)
        sent += types(pen.parse(ctl.receive_data(pen.frame(frame), t)))
        if "STOP" in sent:
            break
    assert "STOP" in sent
    assert ctl.stop_reason is not None and "maximum" in ctl.stop_reason
    assert ctl.coverage.max_hits_in(1) == most  # held at the maximum, not one stroke past


def test_stroke_counter_wrap_counts_the_strokes_across_it() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel(stamp_count=0xFFFF_FFFE)), now + 10)
    ctl.receive_data(pen.frame(tel(stamp_count=1)), now + 20)
    assert ctl.coverage is not None and ctl.coverage.strokes(1) == 3


def test_next_zone_is_refused_until_the_zone_reached_its_target() -> None:
    ctl, pen, now = stamping()
    pen.parse(ctl.command(Command.PAUSE, now + 10))
    out = ctl.command(Command.NEXT_ZONE, now + 20)
    assert types(pen.parse(out)) == [] and EventKind.COMMAND_REFUSED in kinds(out)
    assert ctl.state is State.PAUSED and ctl.zone_index == 0


def test_zone_at_target_is_zone_done_and_stop_then_next_zone() -> None:
    plan = plan_of(zone_plan(1, "frontal", target_fraction=0.02), zone_plan(2, "vertex"))
    ctl, pen, now = stamping(plan=plan)
    assert ctl.coverage is not None
    dose = ctl.coverage.limits[1].target_hits  # strokes over a spot to reach its target
    out = ctl.receive_data(pen.frame(tel(stamp_count=dose, x_dmm=100, y_dmm=50)), now + 10)
    assert "STOP" in types(pen.parse(out)) and ctl.state is State.ZONE_DONE
    frames = pen.parse(ctl.command(Command.NEXT_ZONE, now + 20))
    assert [f.message for f in frames] == [p.SetTarget(1000, 1000, 2)]
    ctl.receive_data(pen.acks(frames), now + 30)
    assert ctl.state is State.READY and ctl.zone is not None and ctl.zone.zone_id == 2


def test_last_zone_done_is_complete() -> None:
    plan = plan_of(zone_plan(1, "frontal", target_fraction=0.02))
    ctl, pen, now = stamping(plan=plan)
    assert ctl.coverage is not None
    dose = ctl.coverage.limits[1].target_hits
    ctl.receive_data(pen.frame(tel(stamp_count=dose, x_dmm=100, y_dmm=50)), now + 10)
    assert ctl.state is State.COMPLETE


def test_estimated_mode_without_position_capability() -> None:
    ctl, pen, now = stamping(device=replace(DEVICE, capabilities=p.Capability.CONTACT))
    assert ctl.status(now)["position_mode"] == "estimated"
    # 200 mm² / (3 mm × 10 mm/s) × 100 Hz ≈ 667 strokes a pass; target 1 pass
    out = ctl.receive_data(pen.frame(tel(stamp_count=700, x_dmm=32767, y_dmm=32767)), now + 10)
    assert ctl.state is State.ZONE_DONE and "STOP" in types(pen.parse(out))


def test_coverage_state_restores_into_a_new_controller() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel(stamp_count=1, x_dmm=100, y_dmm=50)), now + 10)
    saved = ctl.coverage_state()
    again = Controller(
        lambda dev: plan_of(),
        MAP,
        StartFacts("patient-1", frozenset()),
        nonce=NONCE,
        now_us=0,
        coverage_state=saved,
    )
    again.connect(0)
    again.receive_data(Pen().frame(DEVICE), 10)
    assert again.coverage is not None and ctl.coverage is not None
    assert again.coverage.strokes(1) == 1
    assert (again.coverage.hits_grid() == ctl.coverage.hits_grid()).all()


def _resuming(saved: bytes) -> Controller:
    return Controller(lambda dev: plan_of(), MAP, StartFacts("patient-1", frozenset()),
                      nonce=NONCE, now_us=0, coverage_state=saved)


def test_a_prepared_coverage_is_the_one_the_pen_gets_restored_before_it_answers() -> None:
    # The pen process builds and restores the coverage before HELLO, outside the 100 ms
    # the pen's watchdog gives the host before CONFIGURE (it was built on the answer).
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel(stamp_count=1, x_dmm=100, y_dmm=50)), now + 10)
    again = _resuming(ctl.coverage_state())
    again.prepare(DEVICE)
    assert again.coverage is None  # nothing is decided before the pen answers
    assert again._prepared is not None
    prepared = again._prepared[1]
    assert prepared.strokes(1) == 1  # restored already
    again.connect(0)
    frames = Pen().parse(again.receive_data(Pen().frame(DEVICE), 10))
    assert again.coverage is prepared and again.state is State.CONFIGURING
    assert types(frames) == ["CONFIGURE", "SET_TARGET"]
    assert ctl.coverage is not None
    assert (again.coverage.hits_grid() == ctl.coverage.hits_grid()).all()


def test_a_pen_unlike_the_prepared_one_gets_a_coverage_of_its_own() -> None:
    ctl, pen, now = stamping()
    ctl.receive_data(pen.frame(tel(stamp_count=1, x_dmm=100, y_dmm=50)), now + 10)
    again = _resuming(ctl.coverage_state())
    again.prepare(DEVICE)
    assert again._prepared is not None
    prepared = again._prepared[1]
    untracked = replace(DEVICE, capabilities=p.Capability.CONTACT)  # no position
    again.connect(0)
    again.receive_data(Pen().frame(untracked), 10)
    assert again.coverage is not None and again.coverage is not prepared
    assert not again.coverage.tracked and again.coverage.strokes(1) == 1


def test_prepare_is_only_a_head_start_and_never_fails_itself() -> None:
    # A plan that cannot be made on the nominal pen (refused, or an error) leaves
    # nothing prepared: the pen's answer decides, as without prepare.
    for problem in (RefusedError("no such pen"), ValueError("a bug")):
        def plan_for(dev: p.DeviceInfo, problem: Exception = problem) -> Plan:
            raise problem
        ctl = Controller(plan_for, MAP, StartFacts("p", frozenset()), nonce=NONCE, now_us=0)
        ctl.prepare(DEVICE)
        assert ctl._prepared is None and ctl.coverage is None
        assert ctl.state is State.CONNECTING


def test_a_prepared_coverage_whose_state_is_bad_is_refused_when_the_pen_answers() -> None:
    ctl = _resuming(b"garbage")
    ctl.prepare(DEVICE)  # does not raise: the go/no-go says it, at the pen's answer
    assert ctl.state is State.CONNECTING and ctl.go_no_go == ()
    ctl.connect(0)
    ctl.receive_data(Pen().frame(DEVICE), 10)
    assert ctl.state is State.REFUSED and "coverage" in " ".join(ctl.go_no_go)


# --- commands -----------------------------------------------------------------------


def test_command_in_the_wrong_state_is_refused_with_a_sentence_not_an_exception() -> None:
    ctl = new_controller()
    out = ctl.command(Command.START, 0)
    (event,) = out.events
    assert event.kind is EventKind.COMMAND_REFUSED and "START" in event.text
    assert out.data == b""


def test_pause_and_resume() -> None:
    ctl, pen, now = stamping()
    assert types(pen.parse(ctl.command(Command.PAUSE, now + 10))) == ["STOP"]
    assert ctl.state is State.PAUSED
    assert types(pen.parse(ctl.command(Command.RESUME, now + 20))) == ["START"]
    assert ctl.state is State.STAMPING


def test_pause_button_on_the_pen_pauses() -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(p.Event(p.PenEvent.BUTTON_PAUSE, 0)), now + 10)
    assert "STOP" in types(pen.parse(out)) and ctl.state is State.PAUSED


def test_abort_stops_the_pen_and_ends() -> None:
    ctl, pen, now = stamping()
    frames = pen.parse(ctl.command(Command.ABORT, now + 10))
    assert "STOP" in types(frames) and ctl.state is State.ABORTED
    ctl.receive_data(pen.acks(frames), now + 20)
    # nothing but the watchdog's feed
    assert types(pen.parse(ctl.tick(now + 100_000))) == ["HEARTBEAT"]


def test_reconnect_after_link_lost_needs_a_new_start() -> None:
    ctl, pen, now = stamping()
    t = now
    while ctl.state is not State.LINK_LOST:
        t += 10_000
        ctl.tick(t)
    assert types(pen.parse(ctl.command(Command.RECONNECT, t))) == ["HELLO"]
    frames = pen.parse(ctl.receive_data(pen.frame(replace(DEVICE, cartridge_stamps=50)), t + 10))
    ctl.receive_data(pen.acks(frames), t + 20)
    assert ctl.state is State.READY  # the session's own cartridge may carry on


def test_status_has_the_monitor_keys() -> None:
    ctl, _pen, now = stamping()
    status = ctl.status(now)
    for key in (
        "state", "zone_index", "zone_count", "zone", "zones", "pen", "position_mode",
        "stop_reason", "fault", "go_no_go", "elapsed_s", "remaining_s_est", "link",
    ):
        assert key in status
    assert status["pen"]["x_mm"] == 10.0 and status["zones"][0]["active"]


def test_plan_deeper_than_the_cap_is_refused_and_nothing_is_sent() -> None:
    rogue = plan_of(zone_plan(1, "frontal"), zone_plan(2, "vertex", DEPTH_CAP_UM + 100))
    ctl, pen = new_controller(rogue), Pen()
    ctl.connect(0)
    out = ctl.receive_data(pen.frame(DEVICE), 10)
    assert ctl.state is State.REFUSED and "cap" in " ".join(ctl.go_no_go)
    assert pen.parse(out) == []


def test_coverage_state_of_another_map_is_refused_not_raised() -> None:
    ctl = Controller(
        lambda dev: plan_of(), MAP, StartFacts("p", frozenset()),
        nonce=NONCE, now_us=0, coverage_state=b"garbage",
    )
    ctl.connect(0)
    ctl.receive_data(Pen().frame(DEVICE), 10)
    assert ctl.state is State.REFUSED and "coverage" in " ".join(ctl.go_no_go)


def test_resume_on_a_ready_zone_is_its_start() -> None:
    # The pen's button and the views' one "go on" key say RESUME; on a ready zone
    # the controller takes it as START (the rule lives here, once).
    ctl, pen, now = ready()
    ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now)
    out = ctl.command(Command.RESUME, now)
    assert types(pen.parse(out)) == ["START"] and ctl.state is State.STAMPING


def test_the_transition_table_ends_the_session_and_leaves_fault_only_three_ways() -> None:
    from devicectl.transitions import TRANSITIONS, Trigger, next_state

    for end in (State.COMPLETE, State.ABORTED, State.REFUSED):
        assert all(next_state(end, t) is end for t in Trigger), end
    leaving_fault = {t for (s, t), new in TRANSITIONS.items() if s is State.FAULT and new is not s}
    assert leaving_fault == {Trigger.FAULT_CLEARED, Trigger.ABORT, Trigger.LINK_LOST}
    assert {s for (s, t), new in TRANSITIONS.items() if new is State.STAMPING} == {
        State.READY, State.PAUSED,
    }
