"""The inner loop, sans-I/O: what the pen says and the time in, frames and events out.

Theory of operation: `receive_data` decodes the pen's bytes and handles each
frame; on every TELEMETRY the safety verdict (safety.telemetry_verdict) comes
first, and an ESTOP goes into the same Output before any other work. `tick`
runs the timers (HELLO retry, heartbeat, ACK resends, telemetry gap, silence).
`command` takes the technician's commands; a refused one is an event, never an
exception. States and their transitions live in transitions.py; the link rules
in linkstate.py; every SET_TARGET is built by safety.checked_set_target.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from devicectl import protocol as p
from devicectl.controller_auth import KeySource, LinkAuth
from devicectl.controller_status import status_snapshot
from devicectl.coverage import Coverage, Raster
from devicectl.errors import DevicectlError, RefusedError, SafetyError
from devicectl.linkstate import LinkLost, LinkState
from devicectl.plan import Plan, ZonePlan
from devicectl.safety import (
    BATTERY_LOW_MV,
    OK,
    TELEMETRY_GAP_PERIODS,
    Action,
    Verdict,
    ZoneInterval,
    cartridge_problem,
    checked_set_target,
    fault_verdict,
    firmware_problem,
    interval_override_problem,
    interval_problems,
    needle_count_problem,
    telemetry_verdict,
)
from devicectl.stamping import TipTracker
from devicectl.transitions import (
    LIVE,
    RECORDS_FAILED_REASON,
    TERMINAL,
    Command,
    ControlEvent,
    EventKind,
    Output,
    State,
    check_transition,
    command_refusal,
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
TELEMETRY_HZ: Final = 500
WATCHDOG_MS: Final = 100
#: No telemetry at all for this long while the pen should be talking: the link is gone.
#: Past 2.5 watchdog periods the pen's watchdog has surely latched, so the session
#: cannot carry on by itself: it waits for the technician to reconnect.
SILENCE_LOST_US: Final = WATCHDOG_MS * 2_500
#: After a telemetry gap, this many on-time frames in a row before stamping resumes.
STEADY_FRAMES: Final = 25
COVERAGE_CELL_MM: Final = 0.5
WAITING: Final = "waiting for the tip over a spot of the zone that needs treatment"
_U32: Final = 0xFFFF_FFFF
_ESTOP_FLAG: Final = 1 << p.FaultBit.ESTOP
_KNOWN_PEN_STATES: Final = frozenset(int(s) for s in p.PenState)


class ZoneMapLike(Protocol):
    """What the controller needs of zones.ZoneMap: its raster."""

    def raster(self, cell_mm: float, /) -> Raster: ...


@dataclass(frozen=True)
class StartFacts:
    """What the records say about this patient, handed in by the session."""

    patient_ref: str
    #: cartridges seen in earlier sessions
    used_cartridge_ids: frozenset[int]
    #: zone name -> days since the last treatment deeper than INTERVAL_DEPTH_UM
    days_since_deep_treatment: Mapping[str, float] = field(default_factory=dict)
    interval_override_reason: str | None = None
    #: a resumed session's own cartridge: it may go on although it has stamped
    resumed_cartridge_id: int | None = None
    #: zone name -> days since the last treatment at any depth
    days_since_treatment: Mapping[str, float] = field(default_factory=dict)
    #: who decided the interval override (required with it)
    interval_override_clinician: str | None = None


class Controller:
    """One session's inner loop. Not thread-safe: one thread owns it."""

    def __init__(
        self,
        plan_for: Callable[[p.DeviceInfo], Plan],
        zone_map: ZoneMapLike,
        facts: StartFacts,
        *,
        nonce: int,
        now_us: int,
        coverage_state: bytes | None = None,
        start_zone_index: int = 0,
        cell_mm: float = COVERAGE_CELL_MM,
        keys: KeySource | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._plan_for = plan_for
        self._raster = zone_map.raster(cell_mm)
        self._facts = facts
        self._nonce = nonce & _U32
        self._coverage_state = coverage_state
        self.state = State.CONNECTING
        self.plan: Plan | None = None
        self.device: p.DeviceInfo | None = None
        self.go_no_go: tuple[str, ...] = ()
        self.coverage: Coverage | None = None
        self.zone_index = start_zone_index
        self.stop_reason: str | None = None
        self.fault: str | None = None
        self._created_us = now_us
        self._decoder = p.Decoder()
        self._backlog: collections.deque[p.Frame] = collections.deque()
        self._urgent = False  # an ESTOP was just queued: return before more work
        self._link = LinkState()
        #: The clinic's keys: a pen with AUTH proves its key before CONFIGURE (spec 1.1).
        self._auth = LinkAuth(keys, entropy)
        self._out = bytearray()
        self._events: list[ControlEvent] = []
        self._connected = False
        self._connect_us = now_us
        self._hello_us = now_us
        self._tel: p.Telemetry | None = None
        self._tel_us: int | None = None
        self._gap_us = TELEMETRY_GAP_PERIODS * 1_000_000 // TELEMETRY_HZ
        self._known_flags = 0
        self.fault_latched = False
        self._tip = TipTracker()
        self._pen_stamping = False  # the host has sent START and no STOP since
        self._hold: str | None = None  # why stamping is held inside STAMPING
        self._steady_needed = 0  # on-time TELEMETRY frames still needed after a gap
        self._cartridge_problem: str | None = None
        self._session_cartridge: int | None = facts.resumed_cartridge_id
        self._first_start_us: int | None = None
        #: zone id -> when it was first started, and when it was done (µs)
        self._zone_started: dict[int, int] = {}
        self._zone_done_us: dict[int, int] = {}
        #: why the records cannot be written (Command.RECORDS_FAILED), or None
        self.records_failure: str | None = None

    # --- public entry points ------------------------------------------------

    def connect(self, now_us: int) -> Output:
        """Start CONNECTING: the first HELLO."""
        self._connected = True
        self._connect_us = now_us
        self._send_hello(now_us)
        return self._flush()

    def receive_data(self, data: bytes, now_us: int) -> Output:
        """Frames from the pen, in order. An ESTOP ends the call there, so its bytes
        go on the wire before the rest of a batch is worked on; the rest waits in
        the backlog for the next call (the session ticks right after)."""
        frames = self._decoder.feed(data)
        self._backlog.extend(self._auth.filter(frames) if self._auth.session else frames)
        self._work_backlog(now_us)
        return self._flush()

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

    def tick(self, now_us: int) -> Output:
        if not self._connected:
            return self._flush()
        if self._backlog and self._work_backlog(now_us):
            return self._flush()  # an ESTOP: out first, timers on the next call
        state = self.state
        if state is State.CONNECTING:
            if now_us - self._connect_us >= HELLO_GIVE_UP_US:
                self._link_lost(now_us, "the pen did not answer HELLO within 2 s")
                return self._flush()
            if now_us - self._hello_us >= HELLO_RETRY_US:
                self._send_hello(now_us)
        try:
            for pending, frame in self._link.resends_due(now_us):
                self._out += frame
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
                "after 3 resends",
            )
            return self._flush()
        if state is State.STAMPING and self._pen_stamping and self._tel_us is not None:
            gap_us = now_us - self._tel_us
            if gap_us > self._gap_us:
                self._telemetry_gap_hold(now_us, gap_us)
        if (
            state in LIVE
            and self._tel_us is not None
            and now_us - self._tel_us > SILENCE_LOST_US
        ):
            self._link_lost(
                now_us, f"no telemetry from the pen for {SILENCE_LOST_US // 1000} ms"
            )
            return self._flush()
        # Heartbeats go on after the session ends (the pen stays quiet, READY,
        # until the session closes the link); only a lost link ends them.
        if self.state is not State.LINK_LOST and self._link.heartbeat_due(now_us):
            self._send(p.Heartbeat(host_ms=(now_us // 1000) & _U32), now_us)
        return self._flush()

    def command(self, cmd: Command, now_us: int) -> Output:
        self._command(cmd, now_us)
        return self._flush()

    def coverage_snapshot(self) -> Callable[[], bytes]:
        """`coverage_state` in two halves: the copy now, the archive when called."""
        if self.coverage is None:
            return lambda: b""
        return self.coverage.snapshot()

    def coverage_state(self) -> bytes:
        """The coverage counts for resume after a crash (empty before the plan)."""
        return self.coverage.to_bytes() if self.coverage is not None else b""

    @property
    def zone(self) -> ZonePlan | None:
        if self.plan is None or not 0 <= self.zone_index < len(self.plan.zones):
            return None
        return self.plan.zones[self.zone_index]

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
        """Time from a zone's first START to its end (or to now), pauses included."""
        start = self._zone_started.get(zone_id)
        if start is None:
            return 0.0
        return (self._zone_done_us.get(zone_id, now_us) - start) / 1e6

    @property
    def first_start_us(self) -> int | None:
        return self._first_start_us

    # --- plumbing -----------------------------------------------------------

    def _flush(self) -> Output:
        out = Output(bytes(self._out), tuple(self._events))
        self._out.clear()
        self._events.clear()
        return out

    def _event(
        self,
        now_us: int,
        kind: EventKind,
        text: str,
        *,
        safety: bool = False,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        zone = self.zone
        self._events.append(
            ControlEvent(
                now_us,
                kind,
                text,
                zone.zone_id if zone is not None else None,
                data if data is not None else {},
                safety,
            )
        )

    def _send(self, message: p.Message, now_us: int) -> None:
        self._out += self._link.send(message, now_us)
        if message.TYPE in p.ACK_REQ_TYPES:  # commands, not HELLO/HEARTBEAT: for the record
            self._event(
                now_us,
                EventKind.SENT,
                f"{message.TYPE.name} sent",
                data=p.message_to_dict(message),
                safety=message.TYPE is p.MsgType.ESTOP,
            )

    def _goto(self, new: State, now_us: int, why: str) -> None:
        old = self.state
        if new is old:
            return
        check_transition(old, new)
        self.state = new
        self._event(
            now_us,
            EventKind.STATE,
            f"{old.name} -> {new.name}: {why}",
            data={"from": old.name, "to": new.name},
            safety=new in (State.FAULT, State.LINK_LOST),
        )

    def _send_hello(self, now_us: int) -> None:
        self._hello_us = now_us
        self._send(p.Hello(host_proto=p.PROTO_VERSION, nonce=self._nonce), now_us)

    # --- safety reactions ---------------------------------------------------

    def _estop(self, verdict: Verdict, now_us: int) -> None:
        """ESTOP first, explanations after: the pen must be safe before anything else."""
        self._send(p.Estop(reason=verdict.estop_reason), now_us)
        self._urgent = True  # the caller returns now: the ESTOP leaves before other work
        self._known_flags |= _ESTOP_FLAG  # our own ESTOP's flag is not a new fault
        self._pen_stamping = False
        self._latch_fault(verdict.reason, now_us, estop=True)

    def _latch_fault(
        self, text: str, now_us: int, *, estop: bool, fault_flags: int | None = None
    ) -> None:
        self.fault_latched = True
        self.fault = text
        self._event(
            now_us,
            EventKind.ESTOP if estop else EventKind.PEN_FAULT,
            f"emergency stop sent: {text}" if estop else text,
            data={} if fault_flags is None else {"fault_flags": fault_flags},
            safety=True,
        )
        if self.state not in TERMINAL and self.state not in (State.CONNECTING, State.CONFIGURING):
            self._goto(State.FAULT, now_us, text)

    def _safety_stop(self, now_us: int, reason: str) -> None:
        """Stop stamping and pause: the technician decides when to go on."""
        if self._pen_stamping:
            self._send(p.Stop(), now_us)
            self._pen_stamping = False
        self._hold = None
        self.stop_reason = reason
        self._event(now_us, EventKind.SAFETY_STOP, f"stamping stopped: {reason}", safety=True)
        self._goto(State.PAUSED, now_us, reason)

    def _telemetry_gap_hold(self, now_us: int, gap_us: int) -> None:
        """No depth readings for 3 periods: stop now, and go on only once they flow
        steadily again (STEADY_FRAMES in a row). A longer silence is a lost link."""
        self._send(p.Stop(), now_us)
        self._pen_stamping = False
        self._steady_needed = STEADY_FRAMES
        reason = f"telemetry stopped for {gap_us / 1000:.0f} ms while stamping"
        self._hold = reason
        self.stop_reason = reason
        self._event(
            now_us,
            EventKind.SAFETY_STOP,
            f"stamping stopped: {reason}; it resumes once telemetry is steady again",
            safety=True,
        )

    def _link_lost(self, now_us: int, reason: str) -> None:
        if self._pen_stamping:
            # Best effort into a link that may be half alive; the pen's watchdog
            # stops it anyway when nothing arrives.
            self._out += self._link.send_untracked(p.Stop(), now_us)
            self._pen_stamping = False
        self._link.forget()
        self._unsecure()
        self._hold = None
        self.stop_reason = reason
        self._event(now_us, EventKind.LINK_LOST, f"link to the pen lost: {reason}", safety=True)
        if self.state not in TERMINAL:
            self._goto(State.LINK_LOST, now_us, reason)

    def _stamping_refusal(self) -> str | None:
        """Why the pen may not stamp now, whoever asks (technician or coverage)."""
        if self.records_failure is not None:
            return self.records_failure
        if self.fault_latched:
            return f"a fault is latched ({self.fault}); clear it first"
        if self.go_no_go:
            return "the go/no-go check failed: " + "; ".join(self.go_no_go)
        if self._cartridge_problem is not None:
            return self._cartridge_problem
        tel = self._tel
        if tel is not None:
            if tel.fault_flags:
                return "the pen reports " + ", ".join(p.fault_names(tel.fault_flags))
            if tel.state not in _KNOWN_PEN_STATES:
                return f"the pen reports an unknown state ({tel.state})"
            if tel.battery_mv < BATTERY_LOW_MV:
                return f"the pen's battery is low ({tel.battery_mv} mV)"
        return None

    # --- frames from the pen ------------------------------------------------

    def _on_telemetry(self, t: p.Telemetry, now_us: int) -> None:
        verdict = telemetry_verdict(
            t.state, t.fault_flags, t.depth_cmd_um, t.depth_meas_um, t.battery_mv,
            self._known_flags,
        )
        if verdict is not OK:
            if verdict.action is Action.ESTOP:
                self._estop(verdict, now_us)
            elif self.state is State.STAMPING:
                self._safety_stop(now_us, verdict.reason)
        self._known_flags = t.fault_flags | (self._known_flags & _ESTOP_FLAG)
        if self._steady_needed and self._tel_us is not None:
            on_time = now_us - self._tel_us <= self._gap_us
            self._steady_needed = self._steady_needed - 1 if on_time else STEADY_FRAMES
        self._tel = t
        self._tel_us = now_us
        zone = self.zone
        device = self.device
        jump = self._tip.observe(
            t, now_us, self.coverage, zone.zone_id if zone else None,
            contact_sensor=device is not None and bool(device.capabilities & p.Capability.CONTACT),
        )
        if jump:
            self._event(
                now_us,
                EventKind.WARNING,
                f"the pen's stroke counter jumped by {jump}; not counted as strokes",
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
        device = self.device
        hold, needs = self._tip.hold(
            cov,
            zone,
            now_us,
            contact_sensor=device is not None and bool(device.capabilities & p.Capability.CONTACT),
            current_hold=self._hold,
        )
        if hold is not None:
            if self._hold != hold:
                if self._pen_stamping:
                    self._send(p.Stop(), now_us)
                    self._pen_stamping = False
                self._hold = hold
                self.stop_reason = hold
                self._event(now_us, EventKind.COVERAGE_HOLD, f"stamping held: {hold}")
        elif not self._pen_stamping and needs and self._stamping_refusal() is None:
            self._send(p.Start(), now_us)
            self._pen_stamping = True
            self._hold = None
            self.stop_reason = None
            self._event(
                now_us,
                EventKind.RESUMED_STAMPING,
                "stamping resumed: the tip is over a spot that needs treatment",
            )
        elif not self._pen_stamping and self._hold is None:
            self._hold = WAITING
            self.stop_reason = WAITING

    def _zone_done(self, now_us: int) -> None:
        zone = self.zone
        assert zone is not None and self.plan is not None
        if self._pen_stamping:
            self._send(p.Stop(), now_us)
            self._pen_stamping = False
        self._hold = None
        self.stop_reason = None
        cov = self.coverage
        self._zone_done_us[zone.zone_id] = now_us
        self._event(
            now_us,
            EventKind.ZONE_DONE,
            f"zone {zone.name} reached its target",
            data={"fraction": cov.fraction(zone.zone_id) if cov else None},
        )
        if self.zone_index + 1 >= len(self.plan.zones):
            self._goto(State.COMPLETE, now_us, "every zone of the plan is done")
        else:
            self._goto(State.ZONE_DONE, now_us, f"zone {zone.name} done")

    def _on_ack(self, ack: p.Ack, now_us: int) -> None:
        message = self._link.ack(ack.acked_seq, ack.acked_type)
        if message is None:
            return
        if ack.status != p.Nack.OK:
            self._on_nack(message, ack.status, now_us)
            return
        if isinstance(message, p.ClearFault) and self.state is State.FAULT:
            self.fault_latched = False
            self.fault = None
            self._known_flags = 0
            self._event(
                now_us, EventKind.FAULT_CLEARED, "the pen accepted CLEAR_FAULT", safety=True
            )
            self._configure(now_us, "fault cleared: setting the zone's target again")
        elif isinstance(message, p.AuthConfirm) and self.state is State.CONNECTING:
            self._event(now_us, EventKind.DEVICE, "the pen proved its key: the link is signed",
                        data={"authenticated": True})
            assert self.device is not None
            self._identified(self.device, now_us)
        elif self.state is State.CONFIGURING and not self._configuring():
            if self.fault_latched:
                self._goto(State.FAULT, now_us, self.fault or "a fault is latched")
            else:
                self._goto(State.READY, now_us, "the pen holds the zone's target")

    def _on_nack(self, message: p.Message, status: int, now_us: int) -> None:
        try:
            name = p.Nack(status).name
        except ValueError:
            name = f"code {status}"
        text = f"the pen refused {message.TYPE.name} ({name})"
        self._event(now_us, EventKind.NACK, text, data={"type": message.TYPE.name, "nack": name})
        if isinstance(message, p.AuthConfirm):
            self._refuse(now_us, f"the pen refused our proof of the session key ({name})")
        elif isinstance(message, p.Start):
            self._pen_stamping = False
            if self.state is State.STAMPING:
                self._safety_stop(now_us, text)
        elif isinstance(message, p.Configure | p.SetTarget) and self.state is State.CONFIGURING:
            if self.fault_latched or status == p.Nack.FAULT_ACTIVE:
                self.fault_latched = True
                self.fault = self.fault or text
                self._goto(State.FAULT, now_us, text)
            else:
                self.go_no_go = (*self.go_no_go, text)
                self._goto(State.REFUSED, now_us, text)

    def _on_device_info(self, info: p.DeviceInfo, now_us: int) -> None:
        if info.nonce != self._nonce:
            self._event(now_us, EventKind.WARNING, "a DEVICE_INFO with another nonce was ignored")
            return
        self.device = info
        self._cartridge_problem = cartridge_problem(
            info.cartridge_id,
            info.cartridge_stamps,
            self._facts.used_cartridge_ids,
            self._session_cartridge,
        )
        self._event(
            now_us,
            EventKind.DEVICE,
            f"pen {info.serial_number} connected, cartridge {info.cartridge_id}",
            data=p.message_to_dict(info),
        )
        if self.state is not State.CONNECTING:
            return
        decision = self._auth.decide(info)
        if isinstance(decision, str):
            self._refuse(now_us, decision)
        elif decision is not None:
            self._link.secure = None  # decide() ended any earlier session; this goes unsigned
            self._out += self._link.send(decision, now_us)  # AUTH_PROOF answers it
        else:
            self._identified(info, now_us)

    def _identified(self, info: p.DeviceInfo, now_us: int) -> None:
        """The pen is who it says (authenticated when it offers AUTH): go on."""
        if self.plan is None:
            self._first_connection(info, now_us)
        else:
            self._configure(now_us, "reconnected: setting the zone's target again")

    def _on_auth_proof(self, proof: p.AuthProof, now_us: int) -> None:
        if self.state is not State.CONNECTING:
            return
        answer = self._auth.proof(proof)
        if isinstance(answer, str):
            self._refuse(now_us, answer)
        elif answer is not None:
            self._send(answer, now_us)
            self._link.secure = self._auth.session  # every frame from now on is signed

    def _unsecure(self) -> None:
        self._auth.reset()
        self._link.secure = None

    def _refuse(self, now_us: int, reason: str) -> None:
        self.go_no_go = (*self.go_no_go, reason)
        self._event(now_us, EventKind.GO_NO_GO, f"no go: {reason}", safety=True)
        if self.state not in TERMINAL:
            self._goto(State.REFUSED, now_us, reason)

    def _first_connection(self, info: p.DeviceInfo, now_us: int) -> None:
        try:
            plan = self._plan_for(info)
        except RefusedError as exc:
            self.go_no_go = (str(exc),)
            self._event(now_us, EventKind.GO_NO_GO, f"no go: {exc}", safety=True)
            self._goto(State.REFUSED, now_us, str(exc))
            return
        self.plan = plan
        self._event(
            now_us,
            EventKind.PLAN,
            f"plan {plan.profile_name} {plan.profile_version} with {len(plan.zones)} zones",
        )
        reasons: list[str] = []
        firmware = firmware_problem(info.fw_version)
        if firmware is not None:
            reasons.append(firmware)
        if self._cartridge_problem is not None:
            reasons.append(self._cartridge_problem)
        needles = needle_count_problem(info.needle_count, plan.needle_counts)
        if needles is not None:
            reasons.append(needles)
        for z in plan.zones:
            try:  # a plan deeper than the cap is refused whole, before anything is sent
                checked_set_target(z.depth_um, z.rate_dhz, z.zone_id)
            except SafetyError as exc:
                reasons.append(f"zone {z.name}: {exc}")
        late = interval_problems(
            [ZoneInterval(z.name, z.depth_um, plan.min_interval_days) for z in plan.zones],
            self._facts.days_since_treatment,
            self._facts.days_since_deep_treatment,
        )
        override = (self._facts.interval_override_reason or "").strip()
        clinician = (self._facts.interval_override_clinician or "").strip()
        refused_override = interval_override_problem(override, clinician) if override else None
        if late and override and refused_override is None:
            self._event(
                now_us,
                EventKind.OVERRIDE,
                f"interval overridden by {clinician} ({override}): " + "; ".join(late),
                data={"reason": override, "clinician": clinician, "problems": late},
                safety=True,
            )
        else:
            reasons.extend(late)
            if late and refused_override is not None:
                reasons.append(refused_override)
        if not 0 <= self.zone_index < len(plan.zones):
            reasons.append(f"zone index {self.zone_index} is not in the plan")
        tracked = bool(info.capabilities & p.Capability.POSITION)
        self.coverage = Coverage(
            self._raster, plan.zones, plan.footprint_dmm, tracked=tracked,
            needle_count=plan.needle_count,
        )
        reasons.extend(self.coverage.problems)
        if self._coverage_state:
            try:
                self.coverage.restore(self._coverage_state)
            except DevicectlError as exc:
                reasons.append(str(exc))
        self.go_no_go = tuple(reasons)
        if reasons:
            self._event(now_us, EventKind.GO_NO_GO, "no go: " + "; ".join(reasons), safety=True)
            self._goto(State.REFUSED, now_us, "; ".join(reasons))
            return
        self._event(
            now_us, EventKind.GO_NO_GO, "go: cartridge, needles, dose and intervals checked"
        )
        self._configure(now_us, "go: configuring the pen")

    def _configure(self, now_us: int, why: str) -> None:
        zone = self.zone
        assert zone is not None
        self._send(p.Configure(telemetry_hz=TELEMETRY_HZ, watchdog_ms=WATCHDOG_MS), now_us)
        self._send_target(zone, now_us)
        self._goto(State.CONFIGURING, now_us, why)

    def _configuring(self) -> bool:
        """CONFIGURE or SET_TARGET still waits for its ACK."""
        pending = self._link.pending_types()
        return p.MsgType.CONFIGURE in pending or p.MsgType.SET_TARGET in pending

    def _send_target(self, zone: ZonePlan, now_us: int) -> None:
        try:
            target = checked_set_target(zone.depth_um, zone.rate_dhz, zone.zone_id)
        except SafetyError as exc:
            self.go_no_go = (*self.go_no_go, str(exc))
            self._event(now_us, EventKind.GO_NO_GO, f"no go: {exc}", safety=True)
            raise
        self._send(target, now_us)

    def _on_fault(self, fault: p.Fault, now_us: int) -> None:
        verdict = fault_verdict(fault.fault_flags, self._known_flags)
        self._known_flags |= fault.fault_flags
        names = ", ".join(p.fault_names(fault.fault_flags)) or "no flag"
        if verdict.action is Action.ESTOP:
            self._estop(verdict, now_us)
        elif not self.fault_latched:
            self._pen_stamping = False
            self._latch_fault(
                f"the pen reports a fault: {names}", now_us, estop=False,
                fault_flags=fault.fault_flags,
            )

    def _on_pen_event(self, ev: p.Event, now_us: int) -> None:
        try:
            kind = p.PenEvent(ev.event)
        except ValueError:
            self._event(now_us, EventKind.PEN_EVENT, f"unknown pen event {ev.event}")
            return
        self._event(
            now_us,
            EventKind.PEN_EVENT,
            f"pen: {kind.name.lower().replace('_', ' ')}",
            data={"event": kind.name},
        )
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
        if self._pen_stamping:
            self._send(p.Stop(), now_us)
            self._pen_stamping = False
        self._hold = None
        self.stop_reason = RECORDS_FAILED_REASON
        self._event(now_us, EventKind.SAFETY_STOP, f"stamping stopped: {RECORDS_FAILED_REASON}",
                    safety=True)
        if self.state is State.STAMPING:
            self._goto(State.PAUSED, now_us, RECORDS_FAILED_REASON)

    # --- technician commands -----------------------------------------------

    def _command(self, cmd: Command, now_us: int) -> None:
        refusal = command_refusal(cmd, self.state)
        if refusal is None:
            refusal = self._do_command(cmd, now_us)
        if refusal is not None:
            self._event(now_us, EventKind.COMMAND_REFUSED, refusal, data={"command": cmd.name})

    def _do_command(self, cmd: Command, now_us: int) -> str | None:
        if cmd is Command.START or cmd is Command.RESUME:
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
            kind = EventKind.RESUMED if cmd is Command.RESUME else EventKind.STATE
            if kind is EventKind.RESUMED:
                self._event(now_us, kind, "the technician resumed stamping")
            self._goto(State.STAMPING, now_us, f"the technician pressed {cmd.name}")
            self._hold = WAITING
            self._tip.recheck()
            self.stop_reason = None
            self._enforce(now_us)
            return None
        if cmd is Command.PAUSE:
            if self._pen_stamping:
                self._send(p.Stop(), now_us)
                self._pen_stamping = False
            self._hold = None
            self.stop_reason = "paused by the technician"
            self._event(now_us, EventKind.PAUSED, "the technician paused stamping")
            self._goto(State.PAUSED, now_us, "paused by the technician")
            return None
        if cmd is Command.NEXT_ZONE:
            assert self.plan is not None
            if self._pen_stamping:
                self._send(p.Stop(), now_us)
                self._pen_stamping = False
            self.zone_index += 1
            self.stop_reason = None
            if self.zone_index >= len(self.plan.zones):
                self.zone_index = len(self.plan.zones) - 1
                self._goto(State.COMPLETE, now_us, "no zone left in the plan")
                return None
            zone = self.zone
            assert zone is not None
            self._send_target(zone, now_us)
            self._tip.recheck()
            self._goto(State.CONFIGURING, now_us, f"next zone: {zone.name}")
            return None
        if cmd is Command.ABORT:
            if self.state in LIVE:
                self._send(p.Stop(), now_us)
            self._pen_stamping = False
            self._hold = None
            self.stop_reason = "aborted by the technician"
            self._goto(State.ABORTED, now_us, "aborted by the technician")
            return None
        if cmd is Command.CLEAR_FAULT:
            self._send(p.ClearFault(), now_us)  # recorded as SENT, like every command
            return None
        if cmd is Command.RECORDS_FAILED:
            self._records_failed(now_us)
            return None
        # RECONNECT: a new link, authenticated anew
        self._unsecure()
        self._connect_us = now_us
        self._tip.restart_counting()
        self._tel_us = None
        self._goto(State.CONNECTING, now_us, "the technician asked to reconnect")
        self._send_hello(now_us)
        return None
