"""The inner loop, sans-I/O: what the pen says and the time in, frames and events out.

Theory of operation: `receive_data` decodes the pen's bytes and handles each
frame; on every TELEMETRY the safety verdicts come first (safety.py's
over-depth and fault flags, then the host's checks of the pen, H1-H3, in
controller_checks.py), and an ESTOP goes into the same Output before any other
work (controller_telemetry.py, which this class extends). `tick` runs the
timers (HELLO retry, heartbeat, ACK resends, telemetry gap, silence). `command`
takes the technician's commands; a refused one is an event, never an exception.
The next state always comes from the transition table (transitions.py); the
link rules are in linkstate.py; every SET_TARGET is built by
safety.checked_set_target; the go/no-go is safety_gonogo.go_no_go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, assert_never

from devicectl import protocol as p
from devicectl.controller_core import (
    COVERAGE_CELL_MM,
    StartFacts,
    ZoneMapLike,
)
from devicectl.controller_status import status_snapshot
from devicectl.controller_telemetry import WAITING, ControllerTelemetry
from devicectl.linkstate import LinkLost
from devicectl.safety import SILENCE_LOST_US, STEADY_FRAMES, TELEMETRY_HZ, WATCHDOG_MS
from devicectl.transitions import (
    LIVE,
    RECORDS_FAILED_REASON,
    Command,
    ControlEvent,
    EventKind,
    Output,
    State,
    Trigger,
    command_refusal,
    resolve_command,
)

__all__ = [
    "Command",
    "ControlEvent",
    "Controller",
    "EventKind",
    "Output",
    "StartFacts",
    "State",
    "ZoneMapLike",
]

HELLO_RETRY_US: Final = 100_000
HELLO_GIVE_UP_US: Final = 2_000_000
_U32: Final = 0xFFFF_FFFF
__all__ += ["COVERAGE_CELL_MM", "SILENCE_LOST_US", "STEADY_FRAMES", "TELEMETRY_HZ", "WATCHDOG_MS"]


class Controller(ControllerTelemetry):
    """One session's inner loop. Not thread-safe: one thread owns it."""

    # --- public entry points ------------------------------------------------

    def connect(self, now_us: int) -> Output:
        """Start CONNECTING: the first HELLO."""
        self._connected = True
        self._connect_us = now_us
        self._answered = False
        self._checks.connected(now_us)  # no stamping before our START (H3's account)
        self._send_hello(now_us)
        return self._flush()

    def receive_data(self, data: bytes, now_us: int) -> Output:
        """Frames from the pen, in order. An ESTOP ends the call there, so its bytes
        go on the wire before the rest of a batch is worked on; the rest waits in
        the backlog for the next call (the session ticks right after)."""
        frames = self._decoder.feed(data)
        auth = self._auth
        if auth.session is not None:
            frames = auth.filter(frames)
            if auth.confirmed and self._link.secure is None:
                self._link.secure = auth.session  # the pen signs: every frame now is signed
        self._backlog.extend(frames)
        self._work_backlog(now_us)
        return self._flush()

    def tick(self, now_us: int) -> Output:
        if not self._connected:
            return self._flush()
        if self._backlog and self._work_backlog(now_us):
            return self._flush()  # an ESTOP: out first, timers on the next call
        state = self.state
        if state is State.CONNECTING:
            if now_us - self._connect_us >= HELLO_GIVE_UP_US:
                what = ("complete the authenticated link's handshake" if self._answered
                        else "answer HELLO")
                self._link_lost(now_us,
                                f"the pen did not {what} within {HELLO_GIVE_UP_US / 1e6:g} s")
                return self._flush()
            if now_us - self._hello_us >= HELLO_RETRY_US and not self._answered:
                self._send_hello(now_us)
        if self._link.awaits(p.Start) and self._stamping_refusal() is not None:
            # A START not yet ACKed, and since then a reason not to stamp (a cartridge
            # seen used, a pen condition): it is not sent again.
            self._link.cancel(p.Start)
        try:
            for pending, frame in self._link.resends_due(now_us):
                self._out += frame
                if isinstance(pending.message, p.Stop | p.Estop):
                    self._checks.stop_resent(now_us)
                self._event(
                    now_us,
                    EventKind.RESEND,
                    f"{pending.message.TYPE.name} was not acknowledged; sent again "
                    f"(attempt {pending.resends + 1})",
                )
        except LinkLost as lost:
            self._link_lost(
                now_us,
                f"the pen did not acknowledge {lost.pending.message.TYPE.name} "
                f"after {lost.pending.resends} resends",
            )
            return self._flush()
        if state is State.STAMPING and self._pen_stamping and self._tel_us is not None:
            gap_us = now_us - self._tel_us
            if gap_us > self._gap_us:
                self._telemetry_gap_hold(now_us, gap_us)
        if state in LIVE and self._tel_us is not None and now_us - self._tel_us > SILENCE_LOST_US:
            self._link_lost(now_us, f"no telemetry from the pen for {SILENCE_LOST_US // 1000} ms")
            return self._flush()
        # Heartbeats go on after the session ends (the pen stays quiet, READY,
        # until the session closes the link); only a lost link ends them.
        if not self._link_gone and self._link.heartbeat_due(now_us):
            self._send(p.Heartbeat(host_ms=(now_us // 1000) & _U32), now_us)
        return self._flush()

    def command(self, cmd: Command, now_us: int) -> Output:
        self._command(cmd, now_us)
        return self._flush()

    def next_deadline_us(self, now_us: int) -> int | None:
        """When `tick` next has work of its own (the timers above), for a loop that
        waits till then: `now_us` while frames wait in the backlog; None before
        `connect`. Frames and commands that arrive earlier may move it."""
        if not self._connected:
            return None
        if self._backlog:
            return now_us
        link = self._link
        due = link.next_resend_us()
        state = self.state
        if state is State.CONNECTING:
            hello = self._connect_us + HELLO_GIVE_UP_US
            if not self._answered:
                hello = min(hello, self._hello_us + HELLO_RETRY_US)
            due = hello if due is None else min(due, hello)
        tel_us = self._tel_us
        if tel_us is not None and state in LIVE:
            quiet = tel_us + (
                self._gap_us if state is State.STAMPING and self._pen_stamping
                else SILENCE_LOST_US) + 1
            due = quiet if due is None else min(due, quiet)
        beat = None if self._link_gone else link.next_heartbeat_us()
        if beat is not None:
            due = beat if due is None else min(due, beat)
        return due

    def finish(self, now_us: int) -> Output:
        """The session's end: STOP (unless one is in force already) so that the
        telemetry can show the pen stopped (`pen_stopped`, and a PEN_STOPPED
        event) before the loop ends; a pen that goes on gets H3."""
        self._finishing = True
        if self.device is not None and not self._link_gone and not self._checks.stopping:
            self._stop_pen(now_us, self.stop_reason, force=True)
        else:  # a stop in force, maybe seen already: a TELEMETRY from now on shows it
            self._checks.stop_seen = False  # (and the PEN_STOPPED event records it)
        return self._flush()

    def finish_unverified(self, now_us: int, waited_us: int) -> Output:
        """The session gives up waiting for telemetry that shows the pen stopped."""
        if self._checks.not_stopped_seen:
            text = (f"the pen did not stop within {waited_us / 1e6:g} s of the session's "
                    "end, despite ESTOP: switch the pen off now")
        else:
            text = (f"no telemetry showed the pen stopped within {waited_us / 1000:.0f} ms "
                    "of the session's end; check that the pen is off")
        self._event(now_us, EventKind.STOP_UNVERIFIED, text, safety=True)
        return self._flush()

    @property
    def link_gone(self) -> bool:
        """The link was lost (also when a faulty pen's session stays in FAULT)."""
        return self._link_gone

    @property
    def tolerance_strokes(self) -> int:
        return self._checks.tolerance_strokes

    def coverage_snapshot(self) -> Callable[[], bytes]:
        """`coverage_state` in two halves: the copy now, the archive when called."""
        if self.coverage is None:
            return lambda: b""
        return self.coverage.snapshot()

    def coverage_state(self) -> bytes:
        """The coverage counts for resume after a crash (empty before the plan)."""
        return self.coverage.to_bytes() if self.coverage is not None else b""

    @property
    def position_mode(self) -> str:
        return "tracked" if self.coverage is not None and self.coverage.tracked else "estimated"

    def status(self, now_us: int) -> dict[str, Any]:
        """The snapshot for monitors, JSON-able (controller_status.py builds it)."""
        return status_snapshot(self, now_us)

    @property
    def telemetry(self) -> p.Telemetry | None:
        """The last TELEMETRY from the pen."""
        return self._tel

    @property
    def link_counters(self) -> dict[str, int]:
        return {
            "bad_frames": self._decoder.bad_frames,
            "auth_dropped": self._auth.dropped,
            "resends": self._link.resends_total,
            "unacked": self._link.unacked,
        }

    @property
    def awaiting_ack(self) -> bool:
        """Frames sent and not yet ACKed (the session waits for them before closing)."""
        return self._link.unacked > 0

    def zone_seconds(self, zone_id: int, now_us: int) -> float:
        """Time from a zone's first START to its end (or to now), pauses included; a
        resumed session's time on it before this run added."""
        before = self._zone_seconds_before.get(zone_id, 0.0)
        start = self._zone_started.get(zone_id)
        if start is None:
            return before
        return before + (self._zone_done_us.get(zone_id, now_us) - start) / 1e6

    @property
    def first_start_us(self) -> int | None:
        return self._first_start_us

    # --- plumbing -----------------------------------------------------------

    def _work_backlog(self, now_us: int) -> bool:
        """Handle queued frames; True when an ESTOP cut the work short."""
        backlog = self._backlog
        while backlog:
            m = backlog.popleft().message
            if type(m) is p.Telemetry:
                self._on_telemetry(m, now_us)
            elif isinstance(m, p.Ack):
                self._on_ack(m, now_us)
            elif isinstance(m, p.DeviceInfo):
                self._on_device_info(m, now_us)
            elif isinstance(m, p.Fault):
                self._on_fault(m, now_us)
            elif isinstance(m, p.Event):
                self._on_pen_event(m, now_us)
            elif isinstance(m, p.AuthProof):
                self._on_auth_proof(m, now_us)
            else:
                self._event(now_us, EventKind.WARNING, f"unexpected frame from the pen: {m!r}")
            if self._urgent:
                self._urgent = False
                return True
        return False

    # --- frames from the pen ------------------------------------------------

    def _on_pen_event(self, ev: p.Event, now_us: int) -> None:
        try:
            kind = p.PenEvent(ev.event)
        except ValueError:
            self._event(now_us, EventKind.PEN_EVENT, f"unknown pen event {ev.event}")
            return
        self._event(now_us, EventKind.PEN_EVENT, f"pen: {kind.name.lower().replace('_', ' ')}",
                    data={"event": kind.name})
        if kind is p.PenEvent.BUTTON_PAUSE:
            self._command(Command.PAUSE, now_us)
        elif kind is p.PenEvent.BUTTON_RESUME:
            self._command(Command.RESUME, now_us)
        elif kind is p.PenEvent.BUTTON_NEXT_ZONE:
            self._command(Command.NEXT_ZONE, now_us)
        elif kind is p.PenEvent.CARTRIDGE_REMOVED:
            self._cartridge_problem = "the cartridge was removed"
            if self.state is State.STAMPING:
                self._safety_stop(now_us, "the cartridge was removed")
        elif kind is p.PenEvent.CARTRIDGE_INSERTED and self._connected:
            self._send_hello(now_us)  # the DEVICE_INFO answer says which cartridge

    # --- records (issue 10 item 3): no treatment without a record ------------

    def _records_failed(self, now_us: int) -> None:
        """The record writer cannot commit: stop stamping now and refuse START and
        RESUME (`_stamping_refusal`) for the rest of the session."""
        if self.records_failure is not None:
            return
        self.records_failure = RECORDS_FAILED_REASON
        self._stop_pen(now_us, RECORDS_FAILED_REASON)
        self._event(now_us, EventKind.SAFETY_STOP, f"stamping stopped: {RECORDS_FAILED_REASON}",
                    safety=True)
        self._goto(Trigger.STOPPED, now_us, RECORDS_FAILED_REASON)

    # --- technician commands -----------------------------------------------

    def _command(self, cmd: Command, now_us: int) -> None:
        cmd = resolve_command(cmd, self.state)
        refusal = command_refusal(cmd, self.state)
        if refusal is None:
            refusal = self._do_command(cmd, now_us)
        if refusal is not None:
            self._event(now_us, EventKind.COMMAND_REFUSED, refusal, data={"command": cmd.name})

    def _do_command(self, cmd: Command, now_us: int) -> str | None:
        match cmd:
            case Command.START | Command.RESUME:
                return self._start(cmd, now_us)
            case Command.PAUSE:
                self._stop_pen(now_us, "paused by the technician")
                self._event(now_us, EventKind.PAUSED, "the technician paused stamping")
                self._goto(Trigger.STOPPED, now_us, "paused by the technician")
            case Command.NEXT_ZONE:
                self._next_zone(now_us)
            case Command.ABORT:
                if self.fault_final is not None:
                    return f"ABORT refused: the session already ends in FAULT ({self.fault_final})"
                self._stop_pen(now_us, "aborted by the technician", force=self.state in LIVE)
                self._goto(Trigger.ABORT, now_us, "aborted by the technician")
            case Command.CLEAR_FAULT:
                if self.fault_final is not None:
                    return (f"CLEAR_FAULT refused: {self.fault_final}; the session ends "
                            "in FAULT")
                self._send(p.ClearFault(), now_us)  # recorded as SENT, like every command
            case Command.RECORDS_FAILED:
                self._records_failed(now_us)
            case Command.RECONNECT:  # a new link, authenticated anew
                self._unsecure()
                self._connect_us = now_us
                self._answered = False
                self._link_gone = False
                self._tip.restart_counting()
                self._checks.restart_counting()
                self._checks.target_unknown()
                self._tel_us = None
                self._goto(Trigger.RECONNECT, now_us, "the technician asked to reconnect")
                self._send_hello(now_us)
            case _:
                assert_never(cmd)
        return None

    def _start(self, cmd: Command, now_us: int) -> str | None:
        refusal = self._stamping_refusal()
        if refusal is not None:
            return f"{cmd.name} refused: {refusal}"
        zone = self.zone
        assert zone is not None and self.device is not None
        if self._session_cartridge is None:
            self._session_cartridge = self.device.cartridge_id
            self._first_start_us = now_us
        if zone.zone_id not in self._zone_started:
            self._zone_started[zone.zone_id] = now_us
            self._event(now_us, EventKind.ZONE_STARTED, f"zone {zone.name} started")
        if cmd is Command.RESUME:
            self._event(now_us, EventKind.RESUMED, "the technician resumed stamping")
        self._goto(Trigger.START, now_us, f"the technician pressed {cmd.name}")
        self._stop_pen(now_us, WAITING, hold=True)  # until the tip is over a spot to treat
        self._tip.recheck()
        self._enforce(now_us)
        return None

    def _next_zone(self, now_us: int) -> None:
        assert self.plan is not None
        self._stop_pen(now_us, None)
        self.zone_index += 1
        if self.zone_index >= len(self.plan.zones):
            self.zone_index = len(self.plan.zones) - 1
            self._goto(Trigger.COMPLETE, now_us, "no zone left in the plan")
            return
        zone = self.zone
        assert zone is not None
        self._send_target(zone, now_us)
        self._tip.recheck()
        self._goto(Trigger.NEXT_ZONE, now_us, f"next zone: {zone.name}")
