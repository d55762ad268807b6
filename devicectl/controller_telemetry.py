"""The controller's reading of the pen's telemetry and faults, sans-I/O.

On every TELEMETRY the safety verdicts come first (safety.py's over-depth and
fault flags, then the host's checks of the pen, H1-H3, in controller_checks.py),
and an ESTOP goes into the same Output before any other work; then the tip's
strokes (stamping.py) and, while STAMPING, the coverage rules: hold, resume, or
finish the zone. A telemetry gap while stamping holds until readings flow
steadily again. controller.py's Controller is this class plus its entry points.
"""

from __future__ import annotations

from typing import Final

from devicectl import protocol as p
from devicectl.controller_connect import ControllerConnect
from devicectl.safety import (
    OK,
    STEADY_FRAMES,
    Action,
    fault_verdict,
    sensor_suspect_text,
    telemetry_verdict,
    tolerance_text,
)
from devicectl.transitions import EventKind, State, Trigger

WAITING: Final = "waiting for the tip over a spot of the zone that needs treatment"
_U32: Final = 0xFFFF_FFFF
_ESTOP_FLAG: Final = 1 << p.FaultBit.ESTOP
_OVERDEPTH_FLAG: Final = 1 << p.FaultBit.OVERDEPTH
_PEN_STATES: Final = frozenset(int(s) for s in p.PenState)
#: a plain int: `int & IntFlag` runs enum's Python-level __and__, twice a frame
_CONTACT: Final = int(p.Capability.CONTACT)


class ControllerTelemetry(ControllerConnect):
    """Frames from the pen that carry its state: TELEMETRY and FAULT."""

    @property
    def pen_stopped(self) -> bool:
        """Telemetry from STOP_SETTLE_US after the last STOP or ESTOP shows the pen stopped."""
        return self._checks.stopping and self._checks.stop_seen

    @property
    def pen_not_stopped(self) -> bool:
        """The last telemetry checked under H3 showed the pen still going."""
        return self._checks.not_stopped_seen

    @property
    def _contact_sensor(self) -> bool:
        """The pen says whether the tip touches the skin (DEVICE_INFO's capabilities)."""
        device = self.device
        return device is not None and device.capabilities & _CONTACT != 0

    def _on_telemetry(self, t: p.Telemetry, now_us: int) -> None:
        checks = self._checks
        known = self._known_flags
        verdict = telemetry_verdict(
            t.state, t.fault_flags, checks.stroke_target_um(t.stamp_count), t.depth_meas_um,
            t.battery_mv,
            known,
        )
        pen_verdict = checks.check(t, now_us)  # always: its counters see every frame
        per_frame = not t.fault_flags & ~known
        depth_estop = verdict.action is Action.ESTOP
        # the pen's verdict, when the frame's own is no ESTOP, or when it ends the
        # session and nothing has yet (an over-depth ESTOP resent at H3's cadence must
        # not hide a pen that now also runs too fast)
        if (
            pen_verdict is not OK
            and (not depth_estop or (pen_verdict.ends_session and self.fault_final is None))
            and checks.estop_due(pen_verdict, now_us, already=self.fault_final is not None)
        ):
            if depth_estop:
                self._estop(verdict, now_us, per_frame=per_frame)
            verdict = pen_verdict
        if verdict is not OK:
            if verdict.action is Action.ESTOP:
                self._estop(verdict, now_us, per_frame=per_frame)
            elif self.state is State.STAMPING:
                self._safety_stop(now_us, verdict.reason)
        if t.fault_flags & ~known & _OVERDEPTH_FLAG:
            self._overdepth(now_us)
        self._known_flags = t.fault_flags | (self._known_flags & _ESTOP_FLAG)
        if self._steady_needed and self._tel_us is not None:
            on_time = now_us - self._tel_us <= self._gap_us
            self._steady_needed = self._steady_needed - 1 if on_time else STEADY_FRAMES
        self._tel = t
        self._tel_us = now_us
        zone = self.zone
        jump = self._tip.observe(t, now_us, self.coverage, zone.zone_id if zone else None)
        if jump:
            self._event(now_us, EventKind.WARNING,
                        f"the pen's stroke counter jumped by {jump}; not counted as strokes")
        tolerance, suspect = checks.strokes(
            t, self._pen_stamping and self.state is State.STAMPING, now_us
        )
        if tolerance is not None:
            self._event(now_us, EventKind.TOLERANCE, tolerance_text(tolerance),
                        data={"count": tolerance, "depth_meas_um": t.depth_meas_um})
        if suspect and self.state is State.STAMPING:
            self._safety_stop(now_us, sensor_suspect_text(checks.commanded_depth_um),
                              EventKind.SENSOR_SUSPECT)
        if self._finishing and not self._stop_reported and self.pen_stopped:
            self._stop_reported = True
            stamps = checks.stamps_at_stop
            strokes = (t.stamp_count - stamps) & _U32 if stamps is not None else 0
            state = p.PenState(t.state).name if t.state in _PEN_STATES else str(t.state)
            self._event(
                now_us, EventKind.PEN_STOPPED,
                f"the pen stopped: its telemetry shows it {state}, {strokes} strokes after "
                "the stop",
                data={"state": state, "strokes_after_stop": strokes},
            )
        if self.state is State.STAMPING:
            self._enforce(now_us)

    def _enforce(self, now_us: int) -> None:
        """Coverage and contact rules while STAMPING: hold, resume, or finish the zone."""
        cov = self.coverage
        zone = self.zone
        if cov is None or zone is None:
            return
        if self._tip.zone_done(cov, zone.zone_id):
            self._zone_done(now_us)
            return
        if self._steady_needed:
            return  # held after a telemetry gap until readings flow steadily again
        hold, needs = self._tip.hold(
            cov, zone, now_us, contact_sensor=self._contact_sensor, current_hold=self._hold,
        )
        if hold is not None:
            if self._hold != hold:
                self._stop_pen(now_us, hold, hold=True)
                self._event(now_us, EventKind.COVERAGE_HOLD, f"stamping held: {hold}")
        elif not self._pen_stamping and needs and self._stamping_refusal() is None:
            self._start_pen(now_us)
            self._event(now_us, EventKind.RESUMED_STAMPING,
                        "stamping resumed: the tip is over a spot that needs treatment")
        elif not self._pen_stamping and self._hold is None:
            self._stop_pen(now_us, WAITING, hold=True)

    def _zone_done(self, now_us: int) -> None:
        zone = self.zone
        assert zone is not None and self.plan is not None
        self._stop_pen(now_us, None)
        cov = self.coverage
        self._zone_done_us[zone.zone_id] = now_us
        self._event(
            now_us, EventKind.ZONE_DONE, f"zone {zone.name} reached its target",
            data={"fraction": cov.fraction(zone.zone_id) if cov else None},
        )
        if self.zone_index + 1 >= len(self.plan.zones):
            self._goto(Trigger.COMPLETE, now_us, "every zone of the plan is done")
        else:
            self._goto(Trigger.ZONE_DONE, now_us, f"zone {zone.name} done")

    def _on_fault(self, fault: p.Fault, now_us: int) -> None:
        known = self._known_flags
        verdict = fault_verdict(fault.fault_flags, known)
        self._known_flags |= fault.fault_flags
        names = ", ".join(p.fault_names(fault.fault_flags)) or "no flag"
        if verdict.action is Action.ESTOP:
            self._estop(verdict, now_us)
        elif not self.fault_latched:
            self._pen_stamping = False
            self._latch_fault(f"the pen reports a fault: {names}", now_us, estop=False,
                              fault_flags=fault.fault_flags)
        if fault.fault_flags & ~known & _OVERDEPTH_FLAG:
            self._overdepth(now_us)

    def _telemetry_gap_hold(self, now_us: int, gap_us: int) -> None:
        """No depth readings for 3 periods: stop now, and go on only once they flow
        steadily again (STEADY_FRAMES in a row). A longer silence is a lost link."""
        reason = f"telemetry stopped for {gap_us / 1000:.0f} ms while stamping"
        self._stop_pen(now_us, reason, hold=True, force=True)
        self._steady_needed = STEADY_FRAMES
        self._event(
            now_us, EventKind.SAFETY_STOP,
            f"stamping stopped: {reason}; it resumes once {STEADY_FRAMES} frames in a row "
            "are on time",
            safety=True,
        )


__all__ = ["WAITING", "ControllerTelemetry"]
