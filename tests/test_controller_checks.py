"""The host checks the pen (spec 1.1, H1-H5), through bytes: hand-made frames on the real codec.

Each test drives the controller as a pen would, and reads what the host put
on the wire (the ESTOP and its reason byte), then the session's verdict.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from test_controller import DEVICE, Pen, new_controller, plan_of, ready, stamping, tel, zone_plan
from test_controller import types as frame_types

from devicectl import protocol as p
from devicectl.controller import Command, EventKind, State
from devicectl.safety import (
    NOT_STOPPED_RESEND_US,
    OVERDEPTH_LIMIT_UM,
    OVERSPEED_FRAMES,
    SENSOR_SUSPECT_STROKES,
    STOP_SETTLE_US,
    EstopReason,
)

PERIOD_US = 2_000  # the host configures 500 Hz


def estops(frames: list[p.Frame]) -> list[int]:
    return [f.message.reason for f in frames if isinstance(f.message, p.Estop)]


def clear_is_refused(ctl: object, pen: Pen, now: int) -> None:
    out = ctl.command(Command.CLEAR_FAULT, now)  # type: ignore[attr-defined]
    assert pen.parse(out) == [], "no CLEAR_FAULT may reach the pen"
    assert [e.kind for e in out.events] == [EventKind.COMMAND_REFUSED]


# --- H1: the target the pen reports is the one the host commanded -------------------


def test_h1_a_pen_reporting_another_depth_after_two_periods_is_estop_mismatch() -> None:
    ctl, pen, now = ready()  # SET_TARGET 1000 µm zone 1, ACKed at `now`
    early = pen.parse(ctl.receive_data(pen.frame(tel(depth_cmd_um=0)), now + 2 * PERIOD_US - 1))
    assert estops(early) == []  # the pen may not have applied it yet
    out = ctl.receive_data(pen.frame(tel(depth_cmd_um=1500)), now + 2 * PERIOD_US)
    frames = pen.parse(out)
    assert estops(frames)[:1] == [EstopReason.MISMATCH] and frame_types(frames)[0] == "ESTOP"
    assert ctl.state is State.FAULT and ctl.fault_final is not None
    assert "1500" in ctl.fault_final and "1000" in ctl.fault_final
    clear_is_refused(ctl, pen, now + 10_000)
    assert ctl.status(now)["clear_fault_offered"] is False


def test_h1_a_pen_reporting_another_zone_is_estop_mismatch() -> None:
    ctl, pen, now = ready()
    frames = pen.parse(ctl.receive_data(pen.frame(tel(zone_id=2)), now + 5 * PERIOD_US))
    assert estops(frames) == [EstopReason.MISMATCH]


def test_h1_the_reported_target_is_not_checked_while_a_new_one_is_on_its_way() -> None:
    plan = plan_of(zone_plan(1, "frontal", target_fraction=0.02), zone_plan(2, "vertex", 1200))
    ctl, pen, now = stamping(plan=plan)
    assert ctl.coverage is not None
    dose = ctl.coverage.limits[1].target_hits  # strokes over a spot to reach its target
    pen.parse(ctl.receive_data(pen.frame(tel(stamp_count=dose, x_dmm=100, y_dmm=50)), now + 10))
    assert ctl.state is State.ZONE_DONE
    frames = pen.parse(ctl.command(Command.NEXT_ZONE, now + 20))
    for t in range(now + 1000, now + 40_000, PERIOD_US):  # old target, then the new one
        report = tel(depth_cmd_um=1000, zone_id=1) if t < now + 20_000 else tel(
            depth_cmd_um=1200, zone_id=2)
        assert estops(pen.parse(ctl.receive_data(pen.frame(report), t))) == []
    ctl.receive_data(pen.acks(frames), now + 40_000)  # the SET_TARGET's ACK, late
    late = tel(depth_cmd_um=1000, zone_id=1)
    assert estops(pen.parse(ctl.receive_data(pen.frame(late), now + 40_000 + 2 * PERIOD_US))) \
        == [EstopReason.MISMATCH]


def test_overshoot_is_measured_against_what_the_host_commanded_not_the_pens_claim() -> None:
    # The pen: ACKed 600 µm, then claimed 1500 µm and measured 1550 µm.
    ctl, pen, now = stamping(plan=plan_of(zone_plan(1, "frontal", 600)))
    lie = tel(state=p.PenState.STAMPING, depth_cmd_um=1500, depth_meas_um=1550, stamp_count=1)
    frames = pen.parse(ctl.receive_data(pen.frame(lie), now + 1000))
    assert frame_types(frames)[0] == "ESTOP"
    assert estops(frames)[0] == EstopReason.OVERSHOOT
    assert ctl.state is State.FAULT and "600" in (ctl.fault or "")


# --- H2: never faster than commanded ------------------------------------------------


def test_h2_three_frames_in_a_row_over_125_percent_is_estop_overspeed() -> None:
    ctl, pen, now = stamping()  # 100.0 Hz commanded
    fast = tel(state=p.PenState.STAMPING, rate_meas_dhz=1251)
    ok = tel(state=p.PenState.STAMPING, rate_meas_dhz=1250)
    t = now
    for frame in (fast, fast, ok, fast, fast):  # never three in a row
        t += PERIOD_US
        assert estops(pen.parse(ctl.receive_data(pen.frame(frame), t))) == []
    t += PERIOD_US
    first_bad = t - 2 * PERIOD_US
    frames = pen.parse(ctl.receive_data(pen.frame(fast), t))
    assert estops(frames) == [EstopReason.OVERSPEED] and OVERSPEED_FRAMES == 3
    assert t - first_bad <= 2 * PERIOD_US + STOP_SETTLE_US
    assert ctl.state is State.FAULT and ctl.fault_final is not None


# --- H3: stopped means stopped ------------------------------------------------------


def _paused(ack_stop: bool = True) -> tuple[object, Pen, int]:
    # The pen's counter stands at 100 from its first report: no strokes on the dose map
    # (since round 12 strokes off the skin count there too), so no hold comes before
    # the technician's PAUSE.
    ctl, pen, now = stamping(stamps=100)
    ctl.receive_data(pen.frame(tel(state=p.PenState.STAMPING, stamp_count=100, contact=0)), now)
    frames = pen.parse(ctl.command(Command.PAUSE, now))
    assert frame_types(frames) == ["STOP"]
    if ack_stop:
        ctl.receive_data(pen.acks(frames), now + 500)
    return ctl, pen, now


def test_h3_a_pen_that_acks_stop_and_keeps_stamping_gets_estop_not_stopped_every_30_ms() -> None:
    ctl, pen, stop_us = _paused()
    going = tel(state=p.PenState.STAMPING, stamp_count=100)
    before = pen.parse(ctl.receive_data(pen.frame(going), stop_us + STOP_SETTLE_US - 1))
    assert estops(before) == []  # it has 20 ms to stop
    out = ctl.receive_data(pen.frame(going), stop_us + STOP_SETTLE_US)
    assert estops(pen.parse(out)) == [EstopReason.NOT_STOPPED]
    (estop_event,) = [e for e in out.events if e.kind is EventKind.ESTOP]
    assert "switch the pen off" in estop_event.text and estop_event.safety
    assert ctl.state is State.FAULT and ctl.fault_final is not None
    sent = []
    t = stop_us + STOP_SETTLE_US
    while t < stop_us + STOP_SETTLE_US + 10 * NOT_STOPPED_RESEND_US:
        t += PERIOD_US
        frames = pen.parse(ctl.receive_data(pen.frame(going), t))
        sent += [t for _ in estops(frames)]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) >= 9 and all(NOT_STOPPED_RESEND_US <= g <= NOT_STOPPED_RESEND_US
                                  + PERIOD_US for g in gaps)
    clear_is_refused(ctl, pen, t)
    # the pen stops at last: no more ESTOPs, and the stop is seen
    quiet = tel(state=p.PenState.FAULT, stamp_count=100)
    for _ in range(20):
        t += PERIOD_US
        assert estops(pen.parse(ctl.receive_data(pen.frame(quiet), t))) == []
    assert ctl.pen_stopped  # type: ignore[attr-defined]


def test_h3_strokes_counted_after_the_pen_took_the_stop_beyond_two_are_not_stopped() -> None:
    ctl, pen, stop_us = _paused()
    # the first frame after the STOP's ACK: where the pen's counter stood when it took it
    ctl.receive_data(pen.frame(tel(state=p.PenState.READY, stamp_count=100)), stop_us + 600)
    t = stop_us + STOP_SETTLE_US
    ok = tel(state=p.PenState.READY, stamp_count=102)  # two strokes in flight: allowed
    assert estops(pen.parse(ctl.receive_data(pen.frame(ok), t))) == []
    assert ctl.pen_stopped  # type: ignore[attr-defined]
    bad = tel(state=p.PenState.READY, stamp_count=103)  # says READY, yet stamps
    assert estops(pen.parse(ctl.receive_data(pen.frame(bad), t + PERIOD_US))) == [
        EstopReason.NOT_STOPPED
    ]


def test_h3_a_lost_stop_is_held_from_20_ms_after_its_first_send() -> None:
    """Spec H3: "from 20 ms after the host sends STOP". A STOP lost on the wire leaves
    the pen stamping: 20 ms after the send, before the resend at 30 ms, it is ESTOP
    NOT_STOPPED, and the words say the pen never acknowledged it (before round 11,
    H3 waited 140 ms for a STOP never ACKed: ~14 more strokes at 100 Hz)."""
    ctl, pen, stop_us = _paused(ack_stop=False)
    t = stop_us
    stamps = 100
    seen: list[int] = []
    text = ""
    while t < stop_us + 30_000 and not seen:
        t += PERIOD_US
        stamps += 1
        out = ctl.receive_data(pen.frame(tel(state=p.PenState.STAMPING, stamp_count=stamps)), t)
        if estops(pen.parse(out)):
            seen.append(t - stop_us)
            text = " ".join(e.text for e in out.events)
    assert seen and STOP_SETTLE_US <= seen[0] <= STOP_SETTLE_US + PERIOD_US, seen
    assert "not acknowledged" in text and ctl.state is State.FAULT


def test_h3_a_stop_that_shows_in_the_telemetry_is_verified_and_nothing_more_is_sent() -> None:
    ctl, pen, stop_us = _paused()
    out = ctl.receive_data(pen.frame(tel(state=p.PenState.READY, stamp_count=101)),
                           stop_us + STOP_SETTLE_US + PERIOD_US)
    assert pen.parse(out) == [] and ctl.pen_stopped  # type: ignore[attr-defined]
    assert ctl.state is State.PAUSED


# --- H4: who the pen is -------------------------------------------------------------


def test_h4_a_pen_of_another_protocol_version_is_refused_before_anything_is_configured() -> None:
    ctl, pen = new_controller(), Pen()
    ctl.connect(0)
    out = ctl.receive_data(pen.frame(replace(DEVICE, proto=2)), 10)
    assert pen.parse(out) == []  # no CONFIGURE, no SET_TARGET
    assert ctl.state is State.REFUSED and "version 2" in " ".join(ctl.go_no_go)


def _lost_and_reconnecting() -> tuple[object, Pen, int]:
    ctl, pen, now = stamping()
    t = now
    while ctl.state is not State.LINK_LOST:
        t += 10_000
        ctl.tick(t)
    assert frame_types(pen.parse(ctl.command(Command.RECONNECT, t))) == ["HELLO"]
    return ctl, pen, t


def _reconnected_after_a_lost_stop(ack_stop: bool) -> tuple[object, Pen, int]:
    """STOP sent at 100 strokes (ACKed or not), then the cable goes: LINK_LOST,
    RECONNECT, and the same pen answers."""
    ctl, pen, t = _paused(ack_stop=ack_stop)
    while ctl.state is not State.LINK_LOST:  # nothing more from the pen
        t += 10_000
        ctl.tick(t)
    assert frame_types(pen.parse(ctl.command(Command.RECONNECT, t))) == ["HELLO"]
    ctl.receive_data(pen.frame(DEVICE), t + 10)  # type: ignore[attr-defined]
    return ctl, pen, t + 10


def test_h3_strokes_after_a_stop_the_pen_never_acknowledged_are_not_held_against_it() -> None:
    # (50 ms on: H3 holds by then, even for a stop never acknowledged.)
    # The STOP never reached the pen (the cable went): it stamped on until its own
    # watchdog stopped it. That is no defiance: no NOT_STOPPED, the fault may be cleared.
    ctl, pen, t = _reconnected_after_a_lost_stop(ack_stop=False)
    watchdog = tel(state=p.PenState.FAULT, fault_flags=1 << p.FaultBit.WATCHDOG,
                   stamp_count=110)
    out = ctl.receive_data(pen.frame(watchdog), t + 50_000)  # type: ignore[attr-defined]
    assert EstopReason.NOT_STOPPED not in estops(pen.parse(out))
    assert ctl.fault_final is None  # type: ignore[attr-defined]
    # ... but a pen still stamping on the new link is caught all the same
    going = tel(state=p.PenState.STAMPING, fault_flags=1 << p.FaultBit.WATCHDOG,
                stamp_count=111)
    out = ctl.receive_data(pen.frame(going), t + 52_000)  # type: ignore[attr-defined]
    assert EstopReason.NOT_STOPPED in estops(pen.parse(out))


def test_h3_strokes_after_a_stop_the_pen_acknowledged_are_held_against_it_after_a_reconnect(
) -> None:
    ctl, pen, t = _reconnected_after_a_lost_stop(ack_stop=True)
    watchdog = tel(state=p.PenState.FAULT, fault_flags=1 << p.FaultBit.WATCHDOG,
                   stamp_count=110)
    out = ctl.receive_data(pen.frame(watchdog), t + PERIOD_US)  # type: ignore[attr-defined]
    assert EstopReason.NOT_STOPPED in estops(pen.parse(out))
    assert ctl.fault_final is not None  # type: ignore[attr-defined]


def test_h4_after_a_reconnect_another_pen_is_refused() -> None:
    ctl, pen, t = _lost_and_reconnecting()
    out = ctl.receive_data(pen.frame(replace(DEVICE, serial_number=43)), t + 10)
    assert pen.parse(out) == [] and ctl.state is State.REFUSED  # type: ignore[attr-defined]
    assert "pen 43" in " ".join(ctl.go_no_go)  # type: ignore[attr-defined]


def test_h4_after_a_reconnect_another_cartridge_is_refused() -> None:
    ctl, pen, t = _lost_and_reconnecting()
    out = ctl.receive_data(pen.frame(replace(DEVICE, cartridge_id=0xBEEF)), t + 10)
    assert pen.parse(out) == [] and ctl.state is State.REFUSED  # type: ignore[attr-defined]


def test_h4_another_pen_answering_mid_session_is_estop_mismatch() -> None:
    ctl, pen, now = stamping()
    out = ctl.receive_data(pen.frame(replace(DEVICE, serial_number=43)), now + 10)
    assert estops(pen.parse(out)) == [EstopReason.MISMATCH] and ctl.state is State.FAULT
    # the session's pen is still the one it configured (the records name it, not the
    # stranger, which the event names): it was replaced, and the record rewritten
    assert ctl.device is not None and ctl.device.serial_number == DEVICE.serial_number
    (said,) = [e for e in out.events if e.kind is EventKind.DEVICE]
    assert "pen 43" in said.text and "not this session's pen" in said.text


# --- H5: a second over-depth ends the session ---------------------------------------


def _over_depth(ctl: object, pen: Pen, t: int) -> list[p.Frame]:
    deep = tel(state=p.PenState.STAMPING, depth_meas_um=OVERDEPTH_LIMIT_UM + 5)
    return pen.parse(ctl.receive_data(pen.frame(deep), t))  # type: ignore[attr-defined]


def _clear_and_restart(ctl: object, pen: Pen, t: int) -> int:
    c = ctl  # type: ignore[assignment]
    frames = pen.parse(c.command(Command.CLEAR_FAULT, t))
    assert frame_types(frames) == ["CLEAR_FAULT"]
    frames = pen.parse(c.receive_data(pen.acks(frames), t + 100))
    c.receive_data(pen.acks(frames), t + 200)
    assert c.state is State.READY
    c.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), t + 300)
    frames = pen.parse(c.command(Command.START, t + 300))
    c.receive_data(pen.acks(frames), t + 400)
    return t + 400


def test_h5_a_second_over_depth_ends_the_session_and_fails_the_cartridge() -> None:
    ctl, pen, now = stamping()
    assert estops(_over_depth(ctl, pen, now + 1000)) == [EstopReason.OVERDEPTH]
    assert ctl.state is State.FAULT and ctl.fault_final is None  # the first may be cleared
    t = _clear_and_restart(ctl, pen, now + 2000)
    out = ctl.receive_data(pen.frame(tel(state=p.PenState.STAMPING,
                                         depth_meas_um=OVERDEPTH_LIMIT_UM + 5)), t + 1000)
    assert estops(pen.parse(out)) == [EstopReason.OVERDEPTH]
    (failed,) = [e for e in out.events if e.kind is EventKind.CARTRIDGE_FAILED]
    assert failed.safety and failed.data["cartridge_id"] == DEVICE.cartridge_id
    assert ctl.state is State.FAULT and ctl.fault_final is not None
    clear_is_refused(ctl, pen, t + 2000)
    assert ctl.status(t)["clear_fault_offered"] is False and ctl.status(t)["fault_final"]


def test_h5_the_pens_own_overdepth_fault_counts_as_the_second() -> None:
    ctl, pen, now = stamping()
    _over_depth(ctl, pen, now + 1000)
    t = _clear_and_restart(ctl, pen, now + 2000)
    fault = p.Fault(1 << p.FaultBit.OVERDEPTH, p.FaultBit.OVERDEPTH, 1612)
    out = ctl.receive_data(pen.frame(fault), t + 1000)
    assert estops(pen.parse(out)) == [EstopReason.PEN_FAULT]
    assert EventKind.CARTRIDGE_FAILED in [e.kind for e in out.events]
    clear_is_refused(ctl, pen, t + 2000)


def test_one_over_depth_seen_twice_in_one_fault_is_counted_once() -> None:
    ctl, pen, now = stamping()
    _over_depth(ctl, pen, now + 1000)  # the host's verdict ...
    fault = p.Fault(1 << p.FaultBit.OVERDEPTH, p.FaultBit.OVERDEPTH, 1612)
    out = ctl.receive_data(pen.frame(fault), now + 1100)  # ... and the pen's, same stroke
    assert EventKind.CARTRIDGE_FAILED not in [e.kind for e in out.events]
    assert ctl.fault_final is None


def test_a_pen_that_stays_over_depth_after_the_estop_gets_it_every_30_ms_and_one_event() -> None:
    """An ESTOP-ignoring pen reports over-depth in every frame: the ESTOP goes again at
    H3's cadence, not with each frame, and the record holds one ESTOP event a reason
    (OVERDEPTH, then NOT_STOPPED), not one per frame (2,000 in 4 s before)."""
    ctl, pen, now = stamping()
    sent: list[int] = []
    events = []
    for ms in range(121):  # 1 kHz telemetry for 120 ms, every frame over depth
        deep = tel(state=p.PenState.STAMPING, depth_meas_um=OVERDEPTH_LIMIT_UM + 5)
        out = ctl.receive_data(pen.frame(deep), now + 1000 + ms * 1000)
        if estops(pen.parse(out)):
            sent.append(ms)
        events += [e for e in out.events if e.kind is EventKind.ESTOP]
    # the OVERDEPTH ESTOP, then (spec H3: from 20 ms after an ESTOP is sent) NOT_STOPPED
    # at its own 30 ms cadence
    assert sent == [0, 20, 50, 80, 110]
    assert len(events) == 2 and ctl.state is State.FAULT


# --- tolerance band and the plausibility of the depth sensor ------------------------


def test_strokes_measured_1501_to_1550_are_counted_as_tolerance_events() -> None:
    ctl, pen, now = stamping(plan=plan_of(zone_plan(1, "frontal", 1500)))
    events = []
    for k, depth in enumerate((1500, 1501, 1550, 1501, 1499), start=1):
        out = ctl.receive_data(pen.frame(tel(state=p.PenState.STAMPING, depth_cmd_um=1500,
                                             depth_meas_um=depth, stamp_count=k)),
                               now + k * PERIOD_US)
        assert estops(pen.parse(out)) == []
        events += [e for e in out.events if e.kind is EventKind.TOLERANCE]
    # the same stroke reported again is not counted twice
    ctl.receive_data(pen.frame(tel(depth_cmd_um=1500, depth_meas_um=1550, stamp_count=5)),
                     now + 6 * PERIOD_US)
    assert ctl.status(now)["tolerance_strokes"] == 3
    assert events and events[0].data["count"] == 1 and "1501-1550" in events[0].text


def test_measured_depth_far_below_the_command_for_many_strokes_is_sensor_suspect() -> None:
    ctl, pen, now = stamping()  # 1000 µm commanded
    t = now
    kinds: list[EventKind] = []
    for k in range(1, SENSOR_SUSPECT_STROKES + 1):
        t += 10_000
        shallow = tel(state=p.PenState.STAMPING, depth_meas_um=500, stamp_count=k,
                      x_dmm=100, y_dmm=50)
        out = ctl.receive_data(pen.frame(shallow), t)
        kinds += [e.kind for e in out.events]
        if k < SENSOR_SUSPECT_STROKES:
            assert ctl.state is State.STAMPING, k
    assert EventKind.SENSOR_SUSPECT in kinds and "STOP" in frame_types(pen.parse(out))
    assert ctl.state is State.PAUSED and "sensor" in (ctl.stop_reason or "")


def test_shallow_strokes_out_of_contact_do_not_count_as_sensor_suspect() -> None:
    ctl, pen, now = stamping(device=replace(DEVICE, capabilities=p.Capability.POSITION))
    t = now
    # more strokes than SENSOR_SUSPECT_STROKES, fewer than the spot's maximum dose (48)
    for k in range(1, SENSOR_SUSPECT_STROKES + 10):
        t += 10_000
        ctl.receive_data(pen.frame(tel(state=p.PenState.STAMPING, depth_meas_um=500,
                                       stamp_count=k, contact=0, x_dmm=100, y_dmm=50)), t)
    assert ctl.state is State.STAMPING



def test_a_stroke_under_way_when_a_shallower_target_is_taken_is_held_to_the_old_one() -> None:
    # Spec 1.1, clarification 3: a stroke is compared with the target it was made
    # at; a shallower target applies in full from the next stroke.
    plan = plan_of(zone_plan(1, "frontal", 1400, target_fraction=0.02),
                   zone_plan(2, "vertex", 600))
    ctl, pen, now = stamping(plan=plan)
    assert ctl.coverage is not None
    dose = ctl.coverage.limits[1].target_hits  # strokes over a spot to reach its target
    at = tel(state=p.PenState.STAMPING, depth_cmd_um=1400, depth_meas_um=1400,
             stamp_count=dose, x_dmm=100, y_dmm=50)
    ctl.receive_data(pen.frame(at), now + 100)
    assert ctl.state is State.ZONE_DONE
    frames = pen.parse(ctl.command(Command.NEXT_ZONE, now + 200))
    ctl.receive_data(pen.acks(frames), now + 300)  # 600 µm in force from here
    late = replace(at, depth_cmd_um=600, zone_id=2, stamp_count=dose + 1)  # under way
    assert estops(pen.parse(ctl.receive_data(pen.frame(late), now + 400))) == []
    next_one = replace(late, stamp_count=dose + 2)  # made after: held to 600 µm
    assert estops(pen.parse(ctl.receive_data(pen.frame(next_one), now + 500))) == [
        EstopReason.OVERSHOOT
    ]


def test_a_pen_that_lies_about_its_target_is_still_seen_stopped_after_the_estop() -> None:
    # Every rule sees every frame: H1 failing again does not hide that the pen stopped.
    ctl, pen, now = ready()
    lie = tel(depth_cmd_um=1500)
    frames = pen.parse(ctl.receive_data(pen.frame(lie), now + 2 * PERIOD_US))
    assert estops(frames) == [EstopReason.MISMATCH]
    ctl.receive_data(pen.acks(frames), now + 2 * PERIOD_US + 500)
    t = now + 2 * PERIOD_US + STOP_SETTLE_US
    ctl.receive_data(pen.frame(replace(lie, state=p.PenState.FAULT)), t)
    assert ctl.pen_stopped


# --- a START the pen has not acknowledged is never resent into a reason to stop --------


def test_an_unacked_start_is_not_resent_after_the_pen_reports_a_fault() -> None:
    ctl, pen, now = ready()
    ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now)
    assert frame_types(pen.parse(ctl.command(Command.START, now))) == ["START"]
    # No ACK; a fault latches on the pen before the resend is due.
    fault = tel(state=p.PenState.FAULT, fault_flags=1 << p.FaultBit.OVERTEMP)
    pen.parse(ctl.receive_data(pen.frame(fault), now + 5_000))
    later = frame_types(pen.parse(ctl.tick(now + 40_000))) + frame_types(
        pen.parse(ctl.tick(now + 80_000)))
    assert "START" not in later


def test_an_unacked_start_is_not_resent_after_a_stop() -> None:
    ctl, pen, now = ready()
    ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now)
    assert frame_types(pen.parse(ctl.command(Command.START, now))) == ["START"]
    pen.parse(ctl.command(Command.PAUSE, now + 1_000))
    sent = []
    for t in range(now + 2_000, now + 150_000, 2_000):
        sent += frame_types(pen.parse(ctl.tick(t)))
    assert "START" not in sent


def test_an_unacked_start_is_resent_while_nothing_forbids_stamping() -> None:
    ctl, pen, now = ready()
    ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now)
    assert frame_types(pen.parse(ctl.command(Command.START, now))) == ["START"]
    assert "START" in frame_types(pen.parse(ctl.tick(now + 40_000)))  # the link rule holds


def test_an_unacked_start_is_not_resent_after_the_pen_names_a_used_cartridge() -> None:
    # The soak's case: START sent, then a DEVICE_INFO naming a cartridge the records
    # have seen; the START's ACK resend must not go out 30 ms later.
    from devicectl.controller import StartFacts

    ctl, pen, now = ready(facts=StartFacts("patient-1", frozenset({77})))
    ctl.receive_data(pen.frame(tel(x_dmm=100, y_dmm=50)), now)
    assert frame_types(pen.parse(ctl.command(Command.START, now))) == ["START"]
    pen.parse(ctl.receive_data(pen.frame(replace(DEVICE, cartridge_id=77)), now + 5_000))
    sent = []
    for t in range(now + 10_000, now + 150_000, 2_000):
        sent += frame_types(pen.parse(ctl.tick(t)))
    assert "START" not in sent


# --- no stamping before the host's START (the first HELLO holds the pen as a stop) ---


def _before_start(state: p.PenState, step_strokes: int, frames: int = 20
                  ) -> tuple[list[int], list[str], object]:
    ctl, pen, now = ready()
    t, stamps, sent, texts = now, 5000, [], []
    for _ in range(frames):  # TELEMETRY every 2 ms, on time
        t += PERIOD_US
        stamps += step_strokes
        out = ctl.receive_data(pen.frame(tel(state=state, stamp_count=stamps)), t)
        sent += [t for f in pen.parse(out)
                 if isinstance(f.message, p.Estop)
                 and f.message.reason == EstopReason.NOT_STOPPED]
        texts += [e.text for e in out.events]
    return sent, texts, ctl


def test_a_pen_that_reports_stamping_before_any_start_is_estopped_not_stopped() -> None:
    """Verify, never trust: the host never sent START, so a pen that reports STAMPING
    stamps on its own (a firmware fault, a stuck driver); until round 11 nothing was
    said, and its strokes counted as treatment. H3's account holds from the first HELLO."""
    sent, texts, ctl = _before_start(p.PenState.STAMPING, 1)
    assert sent and sent[0] <= STOP_SETTLE_US + 2 * PERIOD_US, sent
    assert any("not told it to start" in t for t in texts)
    assert ctl.state is State.FAULT  # type: ignore[attr-defined]


def test_strokes_counted_before_any_start_are_estopped_not_stopped() -> None:
    """A pen that says READY while its counter runs is stamping all the same."""
    sent, texts, _ = _before_start(p.PenState.READY, 2)
    assert sent and any("made" in t and "not told it to start" in t for t in texts)


def test_a_ready_pen_whose_counter_stands_where_an_earlier_session_left_it_is_not_accused() -> None:
    """The count is taken from the pen's first report (5000 here), not from zero."""
    sent, _, ctl = _before_start(p.PenState.READY, 0, frames=40)
    assert sent == [] and ctl.state is State.READY  # type: ignore[attr-defined]
