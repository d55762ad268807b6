"""The host's own account of what it commanded, and every report of the pen held against it.

Spec 1.1, "The host checks the pen": the target in force (H1) and its rate
(H2) are the ones the pen ACKed, never what the pen says they are; a stop
the host sent must show in the telemetry (H3); strokes measured in the
tolerance band are counted, and a depth sensor that reads far below the
command is suspected. The limits and the sentences are safety.py's; this
module keeps the state they are checked against. Sans-I/O: `now` is given.
"""

from __future__ import annotations

from typing import Final

from devicectl.protocol import PenState, SetTarget, Telemetry
from devicectl.safety import (
    ACK_TIMEOUT_US,
    COUNTER_WINDOW_US,
    MAX_RESENDS,
    NOT_STOPPED_RESEND_US,
    OK,
    OVERSPEED_FRAMES,
    SENSOR_SUSPECT_STROKES,
    SILENCE_LOST_US,
    STOP_SETTLE_US,
    TARGET_SETTLE_PERIODS,
    TOLERANCE_EVENT_PERIOD_US,
    Verdict,
    counter_overspeed,
    counter_underrun,
    in_tolerance_band,
    is_counter_overspeed,
    is_counter_underrun,
    is_overspeed,
    is_shallow_stroke,
    not_stopped,
    overspeed,
    target_mismatch,
)

_STAMPING: Final = int(PenState.STAMPING)
#: A STOP never ACKed, after a lag of the pen's frames, is held to H3 once its resends
#: are over (by then the pen has had every copy of it, or the link is lost).
_UNACKED_STOP_US: Final = STOP_SETTLE_US + (MAX_RESENDS + 1) * ACK_TIMEOUT_US
#: The pen's frames lag when one TELEMETRY follows the last by more than this many
#: telemetry periods: a burst after a gap may hold frames the pen sent before the stop.
_LAG_PERIODS: Final = 3


class PenChecks:
    """What the host commanded (target, rate, stop) and the verdicts of each TELEMETRY."""

    __slots__ = (
        "_lag_since_stop",
        "_last_arrival_us",
        "_last_stamps",
        "_never_started",
        "_overspeed_frames",
        "_pending",
        "_previous_depth_um",
        "_previous_until",
        "_rate_anchor",
        "_rate_window_dhz",
        "_rate_window_slowest_dhz",
        "_rebase",
        "_settled_us",
        "_shallow_strokes",
        "_stamps_at_send",
        "_stop_acked",
        "_stop_armed_us",
        "_stop_sent_us",
        "_tolerance_us",
        "_verdict_sent_us",
        "_window_count",
        "_window_stamping",
        "_window_strokes",
        "not_stopped_seen",
        "period_us",
        "stamps_at_stop",
        "stop_seen",
        "target",
        "tolerance_strokes",
    )

    def __init__(self, period_us: int) -> None:
        self.period_us = period_us
        #: the SET_TARGET the pen ACKed OK last: the target in force
        self.target: SetTarget | None = None
        self._pending: SetTarget | None = None
        #: a deeper target replaced by a shallower one, and the stroke count up to
        #: which a stroke may still have been made at it (spec 1.1, clarification 3)
        self._previous_depth_um = 0
        self._previous_until: int | None = None
        self._settled_us: int | None = None  # H1 holds from then on
        self._overspeed_frames = 0
        #: H2 from the counter: the window's first frame (pen clock, host time), the
        #: strokes in it (every step forward of the counter) and its last count, the
        #: fastest and slowest rates the host allowed in it, and whether the pen said
        #: STAMPING in every frame of it with no STOP or START sent meanwhile
        self._rate_anchor: tuple[int, int] | None = None
        self._window_strokes = 0
        self._window_count = 0
        self._rate_window_dhz = 0
        self._rate_window_slowest_dhz = 0
        self._window_stamping = False
        self._stop_sent_us: int | None = None  # the host wants the pen stopped since
        self._never_started = False  # connected, and no START sent since
        #: the pen's frames lagged (a gap, then a burst) since the stop was sent
        self._lag_since_stop = False
        self._last_arrival_us: int | None = None
        self._stop_armed_us: int | None = None  # H3 holds from then on
        self.stamps_at_stop: int | None = None
        #: each copy of the stop sent (first and resends): when, and the counter then
        self._stamps_at_send: dict[int, int | None] = {}
        #: the first TELEMETRY after the stop's ACK counts from its own stamp_count
        self._rebase = False
        self._stop_acked = False  # the pen ACKed a copy of the stop now in force
        #: a TELEMETRY from the H3 time on showed the pen stopped / still going
        self.stop_seen = False
        self.not_stopped_seen = False
        #: when each session-ending ESTOP reason was last sent (spec H3's resends)
        self._verdict_sent_us: dict[int, int] = {}
        self._last_stamps: int | None = None
        self.tolerance_strokes = 0
        self._tolerance_us: int | None = None
        self._shallow_strokes = 0

    # --- what the host commanded --------------------------------------------

    def target_sent(self, target: SetTarget) -> None:
        """A SET_TARGET left: H1 waits for its ACK (the pen may apply it any time now)."""
        self._pending = target
        self._settled_us = None
        self._rate_anchor = None  # a window measures one rate: the next begins now

    def target_answered(self, target: SetTarget, ok: bool, now_us: int) -> None:
        """The pen ACKed (or NACKed: nothing changed) a SET_TARGET."""
        if self._pending == target:
            self._pending = None
        if ok:
            old = self.target
            if old is not None and old.depth_um > target.depth_um and self._last_stamps is not None:
                # The stroke under way when the pen took it was made at the old target.
                self._previous_depth_um = old.depth_um
                self._previous_until = (self._last_stamps + 1) & 0xFFFF_FFFF
            self.target = target
            self._rate_anchor = None
        if self._pending is None and self.target is not None:
            self._settled_us = now_us + TARGET_SETTLE_PERIODS * self.period_us

    def target_unknown(self) -> None:
        """A reconnect: the pen may have restarted; H1 waits for the next ACK.

        A stop the pen never acknowledged may never have reached it (the cable went):
        the strokes it made until its watchdog stopped it are no defiance, so H3
        counts from its first report on the new link (a pen still STAMPING then is
        caught all the same). A stop it did acknowledge still holds it."""
        self._settled_us = None
        self._overspeed_frames = 0
        self._rate_anchor = None
        if self._stop_sent_us is not None and not self._stop_acked:
            self.stamps_at_stop = None
            self._rebase = True
        elif self._stop_acked:
            # no frame came between the ACK and the cable going: the count when the
            # stop was sent is the base, not the first report on the new link
            self._rebase = False

    @property
    def commanded_depth_um(self) -> int:
        """The deepest target the pen may be working to: in force or on its way (0: none)."""
        depth = self.target.depth_um if self.target is not None else 0
        if self._pending is not None and self._pending.depth_um > depth:
            return self._pending.depth_um
        return depth

    def stroke_target_um(self, stamp_count: int) -> int:
        """The target the stroke reported with `stamp_count` was made at, at most: the
        commanded depth, or a deeper one just replaced while that stroke was under way
        (a shallower target applies in full from the next stroke). Only that stroke and
        the one before it: a count past it, or behind them (a counter set back, a
        reboot), is held to the new target from then on."""
        depth = self.commanded_depth_um
        until = self._previous_until
        if until is not None:
            if (until - stamp_count) & 0xFFFF_FFFF > 1:
                self._previous_until = None  # another stroke than that one: the new target holds
            elif self._previous_depth_um > depth:
                return self._previous_depth_um
        return depth

    @property
    def commanded_rate_dhz(self) -> int:
        rate = self.target.rate_dhz if self.target is not None else 0
        if self._pending is not None and self._pending.rate_dhz > rate:
            return self._pending.rate_dhz
        return rate

    def started(self) -> None:
        """START sent: the host wants stamping; no stop to verify."""
        self._window_stamping = False
        self._never_started = False
        self._stop_sent_us = self._stop_armed_us = None
        self.stamps_at_stop = None
        self.stop_seen = self.not_stopped_seen = False
        self._stamps_at_send.clear()
        self._rebase = False
        self.stop_seen = False
        self._verdict_sent_us = {}

    def connected(self, now_us: int) -> None:
        """A session's first HELLO: until the host sends START, its account is "stopped",
        held to H3 from STOP_SETTLE_US on like a stop sent now. A pen that reports
        STAMPING, or strokes beyond the slack from its first report, before any START
        stamps on its own: the host never told it to."""
        self.stop_sent(now_us)
        self.stamps_at_stop = None
        self._rebase = True  # counted from the pen's first report
        self._stop_acked = True  # nothing was lost on the wire
        self._never_started = True

    def stop_sent(self, now_us: int) -> None:
        """STOP or ESTOP sent: from STOP_SETTLE_US on, the pen must show it stopped."""
        self._window_stamping = False
        if self._stop_sent_us is None:
            self._stop_sent_us = now_us
            # spec H3 holds from STOP_SETTLE_US after this send, ACKed or not (`check`),
            # while the pen's frames come on time; after a lag, from the ACKed copy's
            # send, or once the resends are over
            self._stop_armed_us = now_us + _UNACKED_STOP_US
            self._lag_since_stop = False
            self.stamps_at_stop = self._last_stamps
            self.stop_seen = self.not_stopped_seen = False
            self._stop_acked = False
        if len(self._stamps_at_send) < 2 * (MAX_RESENDS + 1):  # bounded, whatever happens
            self._stamps_at_send[now_us] = self._last_stamps

    def stop_resent(self, now_us: int) -> None:
        """A copy of the stop went out again (the last was not ACKed: maybe lost)."""
        self.stop_sent(now_us)

    def stop_acked(self, sent_us: int) -> None:
        """The pen ACKed the copy of the stop sent at `sent_us`: it has had it since
        then, so H3 holds from STOP_SETTLE_US after (if not already from the first
        send's), counting strokes from then."""
        armed = self._stop_armed_us
        if armed is None:
            return
        self._stop_acked = True
        if sent_us + STOP_SETTLE_US < armed:
            self._stop_armed_us = sent_us + STOP_SETTLE_US
        if sent_us in self._stamps_at_send:
            self.stamps_at_stop = self._stamps_at_send[sent_us]
        # Frames arrive in the order the pen sent them: the TELEMETRY after this ACK
        # shows the counter as the pen stood when it took the STOP. Counting from
        # there, not from a reading a telemetry gap made stale, is what tells a pen
        # that goes on stamping from one whose last strokes we had not yet seen.
        self._rebase = True

    @property
    def stopping(self) -> bool:
        """The host has sent a STOP or ESTOP and no START since."""
        return self._stop_sent_us is not None

    # --- the pen's reports --------------------------------------------------

    def check(self, t: Telemetry, now_us: int) -> Verdict:
        """H3, H1, H2 on one TELEMETRY; the first that fails, else OK. Each rule sees
        every frame (its counters and the stop's evidence), whatever another says."""
        stopped = OK
        if self._rebase:
            self._rebase = False
            base = self.stamps_at_stop
            if base is None or (t.stamp_count - base) & 0xFFFF_FFFF < 0x8000_0000:
                self.stamps_at_stop = t.stamp_count
        base, before = self.stamps_at_stop, self._last_stamps
        if base is not None and before is not None and (
            (t.stamp_count - before) & 0xFFFF_FFFF >= 0x8000_0000
        ):
            # The counter stepped back (a reboot, or a pen hiding its strokes): those
            # made since the stop stay made, and H3 counts on from where it stands now.
            made = (before - base) & 0xFFFF_FFFF
            made = made if made < 0x8000_0000 else 0
            self.stamps_at_stop = (t.stamp_count - made) & 0xFFFF_FFFF
        last, self._last_arrival_us = self._last_arrival_us, now_us
        armed = self._stop_armed_us
        sent = self._stop_sent_us
        if armed is not None and sent is not None:
            if last is not None and now_us - last > _LAG_PERIODS * self.period_us:
                self._lag_since_stop = True
            if not self._lag_since_stop:
                # Spec H3: from 20 ms after the host sends the stop. The pen's frames come
                # on time, so this one was sent after then: a copy lost on the wire leaves
                # a pen stamping, and this is when to say so. After a lag, a burst may
                # hold frames the pen sent before it had the stop: the ACK tells (above).
                armed = min(armed, sent + STOP_SETTLE_US)
        if armed is not None and now_us >= armed:
            stopped = not_stopped(t.state, t.stamp_count, self.stamps_at_stop,
                                  acked=self._stop_acked, started=not self._never_started)
            self.stop_seen = stopped is OK
            self.not_stopped_seen = not self.stop_seen
        target_verdict = OK
        settled = self._settled_us
        target = self.target
        if settled is not None and target is not None and now_us >= settled:
            target_verdict = target_mismatch(
                t.depth_cmd_um, t.zone_id, target.depth_um, target.zone_id
            )
        rate_verdict = OK
        if t.state == _STAMPING and is_overspeed(t.rate_meas_dhz, self.commanded_rate_dhz):
            self._overspeed_frames += 1
            if self._overspeed_frames >= OVERSPEED_FRAMES:
                rate_verdict = overspeed(t.rate_meas_dhz, self.commanded_rate_dhz)
        else:
            self._overspeed_frames = 0
        counted = self._counted_rate(t, now_us)
        if stopped is not OK:
            return stopped
        if target_verdict is not OK:
            return target_verdict
        return rate_verdict if rate_verdict is not OK else counted

    def _counted_rate(self, t: Telemetry, now_us: int) -> Verdict:
        """H2 from the counter, beyond the spec's letter: the strokes `stamp_count` shows
        over a window of the pen's own clock, whatever state and rate the pen reports,
        against the fastest rate the host allowed in it; and, when the pen said STAMPING
        throughout (no STOP or START sent meanwhile), against the slowest: a counter
        under half of it misses strokes. The strokes are the counter's steps forward, so
        one that steps back (a reboot) adds none and starts nothing again. A pen clock
        that stands still or runs back cannot keep a window from ending: for the fastest
        rate, a window is at least the host's time less the longest an honest pen's
        frame may lag (SILENCE_LOST_US), never shorter than by the pen's clock, so never
        more accusing."""
        target, pending = self.target, self._pending
        fastest = self.commanded_rate_dhz
        slowest = target.rate_dhz if target is not None else 0
        if pending is not None and pending.rate_dhz < slowest:
            slowest = pending.rate_dhz
        anchor = self._rate_anchor
        if anchor is None:
            self._rate_anchor = (t.t_us, now_us)
            self._window_strokes = 0
            self._window_count = t.stamp_count
            self._rate_window_dhz = fastest
            self._rate_window_slowest_dhz = slowest
            self._window_stamping = t.state == _STAMPING
            return OK
        self._rate_window_dhz = max(self._rate_window_dhz, fastest)
        self._rate_window_slowest_dhz = min(self._rate_window_slowest_dhz, slowest)
        self._window_stamping = self._window_stamping and t.state == _STAMPING
        step = (t.stamp_count - self._window_count) & 0xFFFF_FFFF
        self._window_count = t.stamp_count
        if step < 0x8000_0000:
            self._window_strokes += step
        strokes = self._window_strokes
        window_us = (t.t_us - anchor[0]) & 0xFFFF_FFFF
        if window_us >= 0x8000_0000:
            window_us = 0  # the pen's clock ran back: no time by it
        longest_us = max(window_us, now_us - anchor[1] - SILENCE_LOST_US)
        if longest_us < COUNTER_WINDOW_US:
            return OK
        allowed, least = self._rate_window_dhz, self._rate_window_slowest_dhz
        stamping = self._window_stamping
        self._rate_anchor = None
        self._counted_rate(t, now_us)  # the next window begins with this frame
        if is_counter_overspeed(strokes, longest_us, allowed):
            return counter_overspeed(strokes, longest_us, allowed)
        if stamping and window_us and is_counter_underrun(strokes, window_us, least):
            return counter_underrun(strokes, window_us, least)
        return OK

    def estop_due(self, verdict: Verdict, now_us: int, already: bool) -> bool:
        """Whether a session-ending verdict sends its ESTOP now: at once the first time
        for its reason, then again every NOT_STOPPED_RESEND_US while the pen goes on.
        Per reason: a pen that ignores the ESTOP MISMATCH gets its NOT_STOPPED from 20 ms
        after it (H3), not a resend period after it."""
        reason = verdict.estop_reason
        if not already:
            self._verdict_sent_us = {}
        last = self._verdict_sent_us.get(reason)
        if last is None or now_us - last >= NOT_STOPPED_RESEND_US:
            self._verdict_sent_us[reason] = now_us
            return True
        return False

    def strokes(self, t: Telemetry, stamping: bool, now_us: int) -> tuple[int | None, bool]:
        """Per new stroke: (the tolerance count to report now, or None; sensor suspect).

        `depth_meas_um` is the most recent stroke's peak: a frame that shows new
        strokes shows one of them, so one frame counts at most one stroke.
        """
        last = self._last_stamps
        self._last_stamps = t.stamp_count
        if last is None or t.stamp_count == last:
            return None, False
        report: int | None = None
        if in_tolerance_band(t.depth_meas_um):
            self.tolerance_strokes += 1
            since = self._tolerance_us
            if since is None or now_us - since >= TOLERANCE_EVENT_PERIOD_US:
                self._tolerance_us = now_us
                report = self.tolerance_strokes
        suspect = False
        if stamping and t.state == _STAMPING and t.contact and is_shallow_stroke(
            t.depth_meas_um, self.commanded_depth_um
        ):
            self._shallow_strokes += 1
            suspect = self._shallow_strokes >= SENSOR_SUSPECT_STROKES
            if suspect:
                self._shallow_strokes = 0
        else:
            self._shallow_strokes = 0
        return report, suspect

    def restart_counting(self) -> None:
        """After a reconnect the pen's counter starts afresh."""
        self._last_stamps = None
        self._rate_anchor = None
