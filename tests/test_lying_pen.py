"""A pen whose firmware lies, against the host's checks (red team, round 12).

The real simulator stamps; a misbehaviour (firmware_sim/misbehave.py) or a `Liar`
(test_controller_checks_sim.py) between it and the host makes it lie through the
real codec, and the real Controller answers. Each test names the rule it holds
the host to and the code that holds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_controller import tel
from test_controller_checks import _paused, estops
from test_controller_checks_sim import MAP, Liar, run
from test_virtual_session import plan_for

from devicectl import protocol as p
from devicectl.controller import State
from devicectl.controller_checks import PenChecks
from devicectl.plan import Plan
from devicectl.safety import COUNTER_WINDOW_US, OK, SILENCE_LOST_US, STOP_SETTLE_US, EstopReason
from firmware_sim.misbehave import MisbehavingPen, get_misbehaviour
from firmware_sim.virtual import VirtualPen

#: the plan's rate (test_virtual_session.plan_for: every zone at 100 Hz)
RATE_DHZ = 1000
PERIOD_US = 2_000
U32 = 0xFFFF_FFFF
#: a lie caught by the counter's windows: within three of them, and a few frames. Two
#: would do for a pen stamping all along; here the hand lifts (its strokes in the air
#: count on the dose map since round 12) and a dose hold of ~110 ms falls in the second
#: window, whose average it brings just under 125 % (docs/safety.md, "Known limits")
COUNTER_BOUND_US = 3 * COUNTER_WINDOW_US + 10 * PERIOD_US
#: the sessions run long enough for the third window to end
LIMIT_US = 4_000_000


def fast_pen() -> MisbehavingPen:
    """The simulator's `overspeed` pen: its motor at 140 % of the commanded rate."""
    return MisbehavingPen(VirtualPen(seed=5, zone_map=MAP), get_misbehaviour("overspeed"), seed=5)


def honest_looking_rate(t: p.Telemetry) -> p.Telemetry:
    """Says it stamps at the commanded rate, whatever its motor does."""
    return replace(t, rate_meas_dhz=min(t.rate_meas_dhz, RATE_DHZ))


def clock_stands_still(t: p.Telemetry) -> p.Telemetry:
    """As honest_looking_rate, and its clock (`t_us`) stands still."""
    return replace(honest_looking_rate(t), t_us=0)


def clock_runs_back(t: p.Telemetry) -> p.Telemetry:
    """As honest_looking_rate, and its clock runs backwards."""
    return replace(honest_looking_rate(t), t_us=(-t.t_us) & U32)


class StepsBack:
    """As honest_looking_rate, and its counter steps back by 100 every 250 frames (by
    more than it rose in them): the strokes between still show, one by one."""

    def __init__(self) -> None:
        self.frames = 0

    def __call__(self, t: p.Telemetry) -> p.Telemetry:
        self.frames += 1
        shown = t.stamp_count - 100 * (self.frames // 250)
        return replace(honest_looking_rate(t), stamp_count=shown & U32)


def says_ready(t: p.Telemetry) -> p.Telemetry:
    """Says READY (and no rate) while it stamps."""
    if t.state != p.PenState.STAMPING:
        return t
    return replace(t, state=p.PenState.READY, rate_meas_dhz=0, depth_meas_um=0)


def near_the_wrap(t: p.Telemetry) -> p.Telemetry:
    """Its counter and clock started just below 2**32: both wrap during the session."""
    return replace(honest_looking_rate(t), stamp_count=(t.stamp_count + U32 - 150) & U32,
                   t_us=(t.t_us + U32 - 1_500_000) & U32)


@pytest.mark.parametrize(("lie", "bound_us"), [
    (honest_looking_rate, COUNTER_BOUND_US),
    # the counter wraps in the window that catches it
    (near_the_wrap, COUNTER_BOUND_US),
    # a clock that does not advance cannot stretch a window past the host's own time
    (clock_stands_still, COUNTER_BOUND_US + SILENCE_LOST_US),
    (clock_runs_back, COUNTER_BOUND_US + SILENCE_LOST_US),
    # a counter that steps back now and then does not start the window again
    (StepsBack(), COUNTER_BOUND_US),
], ids=["honest_looking_rate", "near_the_wrap", "clock_stands_still", "clock_runs_back",
        "counter_steps_back"])
def test_a_pen_stamping_fast_behind_an_honest_looking_rate_is_estopped_overspeed(
    lie: Callable[[p.Telemetry], p.Telemetry], bound_us: int,
) -> None:
    """H2 (docs/pen-protocol.md, "H2 Rate"; controller_checks.py PenChecks.check) reads
    `rate_meas_dhz` only: a pen whose counter runs at 140 % of the commanded rate while
    it reports the commanded rate escapes it. Beyond the spec's letter, the host
    measures the rate from `stamp_count` itself (docs/safety.md, H2), across a wrap of
    the counter and of the pen's clock too, and a pen whose clock stands still or runs
    back, or whose counter steps back now and then, cannot keep a window from ending."""
    r = run(Liar(telemetry=lie), pen=fast_pen(), limit_us=LIMIT_US)  # type: ignore[arg-type]
    assert r.pen.fired_at_us is not None  # its motor does run fast
    assert r.liar.first_lie_us is not None
    (first, *_) = r.estops(EstopReason.OVERSPEED)
    assert first - r.liar.first_lie_us <= bound_us
    assert "whatever rate it reports" in (r.ctl.fault or "")
    assert r.ctl.state is State.FAULT and r.ctl.fault_final is not None


def test_a_pen_stamping_fast_while_it_says_ready_is_estopped_overspeed() -> None:
    """As above, for a pen that reports READY (no rate for H2 to read) while START is in
    force and its counter runs at 140 % of the commanded rate."""
    r = run(Liar(telemetry=says_ready), pen=fast_pen(), limit_us=LIMIT_US)  # type: ignore[arg-type]
    assert r.pen.fired_at_us is not None
    (first, *_) = r.estops(EstopReason.OVERSPEED)
    assert first - r.pen.fired_at_us <= COUNTER_BOUND_US
    assert r.ctl.state is State.FAULT and r.ctl.fault_final is not None


def test_an_honest_pen_whose_rate_is_lowered_mid_window_is_not_overspeed() -> None:
    """H2 by the counter holds a window to the fastest rate the host allowed in it
    (PenChecks._counted_rate): 600 ms at 150 Hz, then 600 ms at 50 Hz, is no overspeed
    of 50 Hz. (A window held to the rate in force at its end accused this pen.)"""
    checks = PenChecks(PERIOD_US)
    fast, slow = p.SetTarget(1000, 1500, 1), p.SetTarget(1000, 500, 1)
    checks.target_sent(fast)
    checks.target_answered(fast, True, 0)
    checks.started()
    for now in range(PERIOD_US, 1_200_001, PERIOD_US):
        if now == 600_000:
            checks.target_sent(slow)
            checks.target_answered(slow, True, now)
        stamps = (150 * min(now, 600_000) + 50 * max(0, now - 600_000)) // 1_000_000
        t = p.Telemetry(now, p.PenState.STAMPING, 0, 1000, 1000, 0, stamps, 100, 50, 1, 1, 4000)
        assert checks.check(t, now) is OK, (now, stamps)


def deep_then_shallow(dev: p.DeviceInfo) -> Plan:
    """plan_for's first two zones, the first at 1400 µm: the second (1200 µm) is shallower."""
    plan = plan_for(dev)
    first, second = plan.zones[:2]
    return replace(plan, zones=(replace(first, depth_um=1400, target_fraction=0.05), second))


def test_a_counter_set_back_after_a_shallower_target_is_held_to_the_shallower_target() -> None:
    """Spec 1.1 clarification 3 (docs/pen-protocol.md, "OVERDEPTH against the target"):
    only the stroke under way when the pen took a shallower target may be at the old
    one; docs/safety.md: a stroke measured more than 100 µm past the host's target is
    ESTOP OVERSHOOT. PenChecks.stroke_target_um (controller_checks.py) held every stroke
    whose count was not past the one under way to the old, deeper target: a pen whose
    counter went back (set back by 500 here; a reboot does it too) stamped 1350 µm at a
    commanded 1200 µm, unchecked, until its counter caught up."""

    def set_back(t: p.Telemetry) -> p.Telemetry:
        if t.depth_cmd_um != 1200:
            return t
        deep = 1350 if t.state == p.PenState.STAMPING else t.depth_meas_um
        return replace(t, stamp_count=(t.stamp_count - 500) & U32, depth_meas_um=deep)

    r = run(Liar(telemetry=set_back), plan=deep_then_shallow, limit_us=6_000_000)
    shallow = [t for t, m in r.sent if isinstance(m, p.SetTarget) and m.depth_um == 1200]
    assert shallow, "the session never reached its shallower zone"
    start = min(t for t, m in r.sent if isinstance(m, p.Start) and t > shallow[0])
    (first, *_) = r.estops(EstopReason.OVERSHOOT)
    assert first - start <= 100_000  # its first strokes there (10 ms apart), not 5 s later
    assert r.ctl.state is State.FAULT


class SlowCounter:
    """Counts only `share` of its strokes from the moment it starts lying (0: none),
    while it says STAMPING at the commanded rate: strokes the dose map never sees."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.base: int | None = None

    def __call__(self, t: p.Telemetry) -> p.Telemetry:
        if self.base is None:
            self.base = t.stamp_count
        shown = self.base + int((t.stamp_count - self.base) * self.share)
        return replace(t, stamp_count=shown & U32)


@pytest.mark.parametrize("share", [0.0, 0.4])
def test_a_pen_stamping_with_a_counter_that_misses_strokes_is_estopped_mismatch(
    share: float,
) -> None:
    """The dose map counts the strokes `stamp_count` shows (stamping.py TipTracker.observe);
    a pen that says STAMPING at the commanded rate while its counter shows none of its
    strokes, or 40 %, puts dose on the skin that no record holds, and no spot's maximum
    can stop it. An honest pen that stamps at under half its target rate for 50 ms
    latches STALL (docs/pen-protocol.md, fault bit 1): a pen STAMPING throughout a
    window of its clock whose counter shows under half the commanded rate is lying
    (controller_checks.py PenChecks._counted_rate), ESTOP MISMATCH."""
    r = run(Liar(telemetry=SlowCounter(share)))
    assert r.liar.first_lie_us is not None
    (first, *_) = r.estops(EstopReason.MISMATCH)
    assert first - r.liar.first_lie_us <= COUNTER_BOUND_US
    assert r.ctl.state is State.FAULT and r.ctl.fault_final is not None


# --- an honest pen is never accused by its counter (hypothesis) -----------------------

MOTOR_TAU_US = 20_000  # the simulator's motor (firmware_sim/physics.py)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    commands=st.lists(st.tuples(st.integers(1, 2_500), st.sampled_from(["START", "STOP", "RATE"]),
                                st.integers(200, 1660)), max_size=10),
    delays_us=st.lists(st.integers(0, 15_000), min_size=1, max_size=6),
    lost=st.lists(st.booleans(), min_size=1, max_size=7),
    stamps=st.one_of(st.just(0), st.integers(U32 - 400, U32), st.integers(0, U32)),
    clock_us=st.one_of(st.just(0), st.integers(U32 - 4_000_000, U32), st.integers(0, U32)),
)
def test_an_honest_pen_is_never_accused_by_its_counter(
    commands: list[tuple[int, str, int]], delays_us: list[int], lost: list[bool],
    stamps: int, clock_us: int,
) -> None:
    """PenChecks' windows of the counter (H2 beyond the letter, and the counter that
    misses strokes) never accuse a pen that stamps at the rate it was given, its motor
    taking 20 ms to reach it: whatever the host sends when, however late each command
    and ACK arrives (up to 15 ms), however many frames are lost or held back, across a
    wrap of its counter and its clock, and across rate changes (which the host sends
    behind a STOP, as Controller._next_zone does)."""
    checks = PenChecks(PERIOD_US)
    target = p.SetTarget(1000, 1000, 1)
    checks.connected(0)
    checks.target_sent(target)
    checks.target_answered(target, True, 0)
    at_pen: list[tuple[int, str, p.SetTarget | None, int]] = []  # (when, what, target, sent)
    k = 0

    def delay() -> int:
        nonlocal k
        k += 1
        return delays_us[k % len(delays_us)]

    schedule = []
    now = 0
    for gap_ms, what, rate in commands:
        now += gap_ms * 1000
        if what == "RATE":
            schedule.append((now, "STOP", rate))
        schedule.append((now, what, rate))
    end = now + 3_000_000
    stamping, rate_dhz, motor_dhz, phase = False, target.rate_dhz, 0.0, 0.0
    pen_target = target
    arrival = to_pen = 0
    #: the pen's frames and ACKs, in the order it sent them: (arrival, frame or ACK)
    to_host: list[tuple[int, p.Telemetry | tuple[str, p.SetTarget | None, int]]] = []
    for now in range(0, end, 500):
        while schedule and schedule[0][0] <= now:
            _, what, rate = schedule.pop(0)
            sent_target = None
            if what == "START":
                checks.started()
            elif what == "STOP":
                checks.stop_sent(now)
            else:
                sent_target = p.SetTarget(1000, rate, 1)
                checks.target_sent(sent_target)
            to_pen = max(to_pen, now + delay())  # in the order sent
            at_pen.append((to_pen, what, sent_target, now))
        for item in [a for a in at_pen if a[0] <= now]:
            at_pen.remove(item)
            _, what, sent_target, sent = item
            if what == "START":
                stamping = True
            elif what == "STOP":
                stamping = False
                motor_dhz = 0.0
            else:
                assert sent_target is not None
                pen_target = sent_target
            arrival = max(arrival, now + delay())
            to_host.append((arrival, (what, sent_target, sent)))
        rate_dhz = pen_target.rate_dhz
        if stamping:
            motor_dhz += (rate_dhz - motor_dhz) * (1 - math.exp(-500 / MOTOR_TAU_US))
            phase += motor_dhz * 500 / 10_000_000
            stamps = (stamps + int(phase)) & U32
            phase -= int(phase)
        if now % PERIOD_US == 0:
            arrival = max(arrival, now + delay())
            state = p.PenState.STAMPING if stamping else p.PenState.READY
            to_host.append((arrival, p.Telemetry(
                (clock_us + now) & U32, state, 0, 1000, 1000 if stamping else 0,
                round(motor_dhz), stamps, 100, 50, 1, 1, 4000)))
        while to_host and to_host[0][0] <= now:
            when, t = to_host.pop(0)
            if isinstance(t, tuple):
                what, sent_target, sent = t
                if what == "STOP":
                    checks.stop_acked(sent)
                elif what == "RATE":
                    assert sent_target is not None
                    checks.target_answered(sent_target, True, when)
                continue
            k += 1
            if lost[k % len(lost)]:
                continue
            verdict = checks.check(t, when)
            assert verdict.estop_reason not in (EstopReason.OVERSPEED, EstopReason.MISMATCH), (
                now, verdict.reason)


class ContactFlicker:
    """Says "no contact" in all but one frame in 140 (280 ms apart): never 300 ms."""

    def __init__(self) -> None:
        self.frames = 0

    def __call__(self, t: p.Telemetry) -> p.Telemetry:
        self.frames += 1
        return replace(t, contact=1 if self.frames % 140 == 0 else 0)


def test_a_pen_whose_contact_flickers_off_does_not_keep_its_strokes_off_the_dose_map() -> None:
    """docs/safety.md ("Known limits"): "Strokes reported while the contact sensor reads
    no skin are counted as strokes but put no dose on the map (they stop within 300
    ms)". stamping.py TipTracker.observe puts no dose for a frame with contact 0, and
    TipTracker.hold stops only after 300 ms of contact lost in a row: a pen whose
    sensor (lying, or flickering) says "no contact" for 278 ms and "contact" for one
    frame stamps on without end, and (here, on the skin all along) 36 of its 272
    strokes reach the dose map, so no spot's maximum can hold it. Since round 12 the
    dose goes on the map whatever the pen says of contact (stamping.py)."""
    r = run(Liar(telemetry=ContactFlicker()))
    cov = r.ctl.coverage
    assert cov is not None and r.liar.first_lie_us is not None
    held = r.pen.firmware.state is not p.PenState.STAMPING
    assert held or cov.landed * 2 >= cov.strokes(1), (cov.landed, cov.strokes(1))


def test_a_pen_that_ignores_stop_says_ready_and_sets_its_counter_back_is_estopped_not_stopped(
) -> None:
    """H3 (docs/pen-protocol.md, "H3 Stopped means stopped"): a `stamp_count` more than 2
    above its value when the stop was sent means the pen did not stop. safety.not_stopped
    takes a counter below that value for a reboot, not strokes: a pen that ACKs STOP,
    says READY and sets its counter back by 1000 as it goes on stamping showed no
    strokes to H3 until it had made 1000 more (controller_checks.py PenChecks.check).
    The strokes it made since the stop are its counter's steps forward."""

    def hides(t: p.Telemetry) -> p.Telemetry:
        return replace(says_ready(t), stamp_count=(t.stamp_count - 1000) & U32)

    r = run(Liar(telemetry=hides, swallow=(p.Stop,)), pause=True)
    assert r.pause_us is not None and r.liar.swallowed  # the pen never saw its STOP
    assert r.pen.firmware.state is not p.PenState.READY
    (first, *_) = r.estops(EstopReason.NOT_STOPPED)
    assert first - r.pause_us <= 2 * PERIOD_US + STOP_SETTLE_US + 3 * 10_000  # 3 strokes
    assert r.ctl.state is State.FAULT and r.ctl.fault_final is not None


def test_a_pen_that_stops_and_restarts_is_not_accused_by_its_counter_from_zero() -> None:
    """H3's other side (safety.not_stopped: "a counter that went backwards (a reboot) is
    not strokes"): a pen that stopped within the slack (2 strokes) and restarts, its
    counter from 0, is not accused of the strokes before its restart, nor of the
    step back, in the second after it."""
    ctl, pen, stop_us = _paused()
    frames = [tel(state=p.PenState.STAMPING, stamp_count=101), tel(stamp_count=102)]
    frames += [tel(state=p.PenState.BOOT, stamp_count=0, depth_cmd_um=0)] * 5
    frames += [tel(state=p.PenState.IDLE, stamp_count=0, depth_cmd_um=0)] * 500
    out = []
    for k, frame in enumerate(frames):
        out += estops(pen.parse(ctl.receive_data(pen.frame(frame), stop_us + 2_000 * (k + 1))))
    assert EstopReason.NOT_STOPPED not in out, ctl.fault
