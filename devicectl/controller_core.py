"""The controller's state and plumbing: frames out, events out, the table's moves, and the stops.

`ControllerCore` holds one session's state and the few ways it may change:
every frame leaves through `_send` (which keeps the host's account of what it
commanded, controller_checks.PenChecks), every state change through `_goto`
(the transition table decides), every stop through `_stop_pen`, every
emergency stop through `_estop`. controller_connect.py and controller.py build
on it; nothing else touches these fields.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from devicectl import protocol as p
from devicectl.controller_auth import KeySource, LinkAuth
from devicectl.controller_checks import PenChecks
from devicectl.coverage import Coverage, Raster
from devicectl.frozen import by_fields
from devicectl.linkstate import LinkState
from devicectl.plan import Plan, ZonePlan
from devicectl.safety import (
    NOT_STOPPED_RESEND_US,
    TELEMETRY_GAP_PERIODS,
    TELEMETRY_HZ,
    EstopReason,
    Verdict,
    pen_condition_problem,
    second_overdepth,
    stop_follows_estop,
)
from devicectl.stamping import TipTracker
from devicectl.transitions import (
    ControlEvent,
    EventKind,
    Output,
    State,
    Trigger,
    next_state,
)

COVERAGE_CELL_MM: Final = 0.5
_U32: Final = 0xFFFF_FFFF
_ESTOP_FLAG: Final = 1 << p.FaultBit.ESTOP
_OVERDEPTH_REASONS: Final = frozenset({EstopReason.OVERDEPTH, EstopReason.OVERSHOOT})
#: What a call that produced nothing returns: one shared Output (it is frozen).
NOTHING: Final = Output(b"", ())
#: A coverage built for a plan (controller_connect._coverage_for): what it was built
#: from (zones, footprint, needles, tracking), the coverage, why the session's saved
#: state was not restored into it (None: restored, or none saved).
Prepared = tuple[tuple[object, ...], Coverage, str | None]

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

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


class ControllerCore:
    """One session's state, and the plumbing every rule goes through."""

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
        telemetry_hz: int = TELEMETRY_HZ,
        zone_seconds_before: Mapping[int, float] | None = None,
    ) -> None:
        self._plan_for = plan_for
        #: the rate CONFIGURE asks for (the product's TELEMETRY_HZ; benches ask 1 kHz)
        self.telemetry_hz = telemetry_hz
        self._raster = zone_map.raster(cell_mm)
        self._facts = facts
        self._nonce = nonce & _U32
        self._coverage_state = coverage_state
        #: the coverage built before the pen answered (controller_connect.prepare):
        #: (what it was built from, the coverage, why its state was not restored)
        self._prepared: Prepared | None = None
        self.state = State.CONNECTING
        self.plan: Plan | None = None
        self.device: p.DeviceInfo | None = None
        self.go_no_go: tuple[str, ...] = ()
        self.coverage: Coverage | None = None
        self.zone_index = start_zone_index
        self.stop_reason: str | None = None
        self.fault: str | None = None
        #: why the pen is faulty (spec H1-H5): the session ends in FAULT, no CLEAR_FAULT
        self.fault_final: str | None = None
        self.fault_latched = False
        self._decoder = p.Decoder()
        self._backlog: collections.deque[p.Frame] = collections.deque()
        self._urgent = False  # an ESTOP was just queued: return before more work
        #: the ESTOPs sent in the fault now latched: the last one's time (H3's cadence)
        #: and every reason sent (one event each)
        self._estop_last_us = 0
        self._estop_reasons: set[int] = set()
        self._link = LinkState()
        #: The clinic's keys: a pen with AUTH proves its key before CONFIGURE (spec 1.1).
        self._auth = LinkAuth(keys, entropy)
        self._out = bytearray()
        self._events: list[ControlEvent] = []
        self._connected = False
        self._link_gone = False
        self._finishing = False  # the session is ending: report when the pen is seen stopped
        self._stop_reported = False
        self._connect_us = now_us
        self._hello_us = now_us
        #: this connection's HELLO was answered (a DEVICE_INFO with our nonce): no more
        #: HELLO, and a late answer to an earlier one starts nothing (spec: HELLO "until")
        self._answered = False
        self._tel: p.Telemetry | None = None
        self._tel_us: int | None = None
        self._gap_us = TELEMETRY_GAP_PERIODS * 1_000_000 // telemetry_hz
        self._known_flags = 0
        self._checks = PenChecks(1_000_000 // telemetry_hz)
        self._overdepths = 0
        self._overdepth_in_fault = False  # this fault episode's over-depth is counted
        self._tip = TipTracker()
        self._pen_stamping = False  # the host has sent START and no STOP since
        self._hold: str | None = None  # why stamping is held inside STAMPING
        self._steady_needed = 0  # on-time TELEMETRY frames still needed after a gap
        self._cartridge_problem: str | None = None
        #: why the pen may not stamp yet for the records (the session's cartridge claim
        #: not granted): set and cleared by the session that owns the controller
        self.claim_pending: str | None = None
        self._session_serial: int | None = None
        self._first_cartridge: int | None = None
        self._session_cartridge: int | None = facts.resumed_cartridge_id
        self._first_start_us: int | None = None
        #: zone id -> when it was first started, and when it was done (µs)
        self._zone_started: dict[int, int] = {}
        self._zone_done_us: dict[int, int] = {}
        #: a resumed session's time on each zone before this run (its strokes are in the
        #: restored coverage: its time goes on from there too)
        self._zone_seconds_before: dict[int, float] = dict(zone_seconds_before or {})
        #: why the records cannot be written (Command.RECORDS_FAILED), or None
        self.records_failure: str | None = None

    @property
    def zone(self) -> ZonePlan | None:
        if self.plan is None or not 0 <= self.zone_index < len(self.plan.zones):
            return None
        return self.plan.zones[self.zone_index]

    def _flush(self) -> Output:
        if not self._out and not self._events:
            return NOTHING  # most steps: no bytes, no events (an Output costs ~0.3 µs)
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
                now_us, kind, text, zone.zone_id if zone is not None else None,
                data if data is not None else {}, safety,
            )
        )

    def _send(self, message: p.Message, now_us: int, *, tracked: bool = True) -> None:
        """Every frame leaves here, and the host's account of what it commanded with it."""
        if tracked:
            self._out += self._link.send(message, now_us)
        else:  # a last-ditch frame into a link that may be half alive
            self._out += self._link.send_untracked(message, now_us)
        kind = type(message)
        if kind is p.Start:
            self._pen_stamping = True
            self._checks.started()
        elif kind is p.Stop or kind is p.Estop:
            self._pen_stamping = False
            self._checks.stop_sent(now_us)
        elif kind is p.SetTarget:
            assert isinstance(message, p.SetTarget)
            self._checks.target_sent(message)
        if message.TYPE in p.ACK_REQ_TYPES:  # commands, not HELLO/HEARTBEAT: for the record
            self._event(
                now_us, EventKind.SENT, f"{message.TYPE.name} sent",
                data=p.message_to_dict(message), safety=message.TYPE is p.MsgType.ESTOP,
            )

    def _goto(self, trigger: Trigger, now_us: int, why: str) -> None:
        """The transition table decides the next state; this records the move."""
        old = self.state
        new = next_state(old, trigger)
        if new is old:
            return
        self.state = new
        self._event(
            now_us, EventKind.STATE, f"{old.name} -> {new.name}: {why}",
            data={"from": old.name, "to": new.name},
            safety=new in (State.FAULT, State.LINK_LOST),
        )

    def _send_hello(self, now_us: int) -> None:
        self._hello_us = now_us
        self._send(p.Hello(host_proto=p.PROTO_VERSION, nonce=self._nonce), now_us)

    # --- stopping the pen ---------------------------------------------------
    def _stop_pen(
        self, now_us: int, reason: str | None, *, hold: bool = False, force: bool = False
    ) -> None:
        """The one place that stops stamping: STOP (when the pen may be stamping, or
        `force`), why (`stop_reason`), and whether it is a hold inside STAMPING."""
        if self._pen_stamping or force:
            self._send(p.Stop(), now_us, tracked=not self._link_gone)
        self._hold = reason if hold else None
        self.stop_reason = reason

    def _start_pen(self, now_us: int) -> None:
        """The one place that starts stamping: START, and no reason to stop any more."""
        self._send(p.Start(), now_us)
        self._hold = None
        self.stop_reason = None

    def _estop(self, verdict: Verdict, now_us: int, *, per_frame: bool = False) -> None:
        """ESTOP first, explanations after: the pen must be safe before anything else.

        `per_frame`: an over-depth verdict on telemetry, which repeats with every
        frame while the pen goes on misbehaving after the ESTOP (still over depth):
        it gets the ESTOP again at spec H3's cadence, every NOT_STOPPED_RESEND_US,
        and the record one event per fault and reason, not one per frame (a pen that
        ignored ESTOP once gave 2,000 in 4 s). New fault flags always ESTOP at once."""
        if not self.fault_latched:
            self._estop_reasons.clear()  # a new fault
        elif (
            per_frame
            and verdict.estop_reason in self._estop_reasons & _OVERDEPTH_REASONS
            and not (verdict.ends_session and self.fault_final is None)
        ):
            if now_us - self._estop_last_us < NOT_STOPPED_RESEND_US:
                return  # sent within the resend period: the pen has it, or ignores it
            self._send_estop(verdict.estop_reason, now_us)
            return
        self._send_estop(verdict.estop_reason, now_us)  # urgent: it leaves before other work
        self._estop_reasons.add(verdict.estop_reason)
        self._known_flags |= _ESTOP_FLAG  # our own ESTOP's flag is not a new fault
        self._pen_stamping = False
        if self.fault_final is None:
            self._latch_fault(verdict.reason, now_us, estop=True, final=verdict.ends_session)
        if verdict.estop_reason in _OVERDEPTH_REASONS:
            self._overdepth(now_us)

    def _send_estop(self, reason: int, now_us: int) -> None:
        """The ESTOP, and a STOP behind it when the pen went on after a stop (safety.py)."""
        self._send(p.Estop(reason=reason), now_us)
        if stop_follows_estop(reason, self.fault_latched):
            self._send(p.Stop(), now_us, tracked=False)  # untracked: no resend, no link loss
        self._estop_last_us = now_us
        self._urgent = True

    def _latch_fault(
        self, text: str, now_us: int, *, estop: bool, fault_flags: int | None = None,
        final: bool = False,
    ) -> None:
        self._link.cancel(p.Start)  # an unACKed START is never resent into a fault
        if not estop and not self.fault_latched:
            self._estop_reasons.clear()  # a new fault: no ESTOP sent in it yet
        self.fault_latched = True
        self.fault = text
        if final:
            self.fault_final = text
        self._event(
            now_us,
            EventKind.ESTOP if estop else EventKind.PEN_FAULT,
            f"emergency stop sent: {text}" if estop else text,
            data={"final": final} if fault_flags is None else {"fault_flags": fault_flags},
            safety=True,
        )
        self._goto(Trigger.FAULT, now_us, text)

    def _overdepth(self, now_us: int) -> None:
        """Spec H5: the second over-depth of a session (the host's verdict or the pen's
        OVERDEPTH fault; one per fault) ends it, and the cartridge is failed."""
        if self._overdepth_in_fault:
            return
        self._overdepth_in_fault = True
        self._overdepths += 1
        if self._overdepths < 2 or self.fault_final is not None:
            return
        cartridge = self.device.cartridge_id if self.device is not None else 0
        text = second_overdepth(cartridge)
        self.fault_final = text
        self.fault = text
        self._event(now_us, EventKind.CARTRIDGE_FAILED, text, safety=True,
                    data={"cartridge_id": cartridge, "overdepths": self._overdepths})

    def _link_lost(self, now_us: int, reason: str) -> None:
        # Best effort into a link that may be half alive; the pen's watchdog
        # stops it anyway when nothing arrives.
        self._link_gone = True
        self._stop_pen(now_us, reason)
        self._link.forget()
        self._unsecure()
        self._tel_us = None
        self._event(now_us, EventKind.LINK_LOST, f"link to the pen lost: {reason}", safety=True)
        if self.fault_final is None:  # a faulty pen's session ends in FAULT, whatever follows
            self._goto(Trigger.LINK_LOST, now_us, reason)

    def _unsecure(self) -> None:
        """A new link is authenticated anew (a reconnect, a lost link)."""
        self._auth.reset()
        self._link.secure = None

    def _stamping_refusal(self) -> str | None:
        """Why the pen may not stamp now, whoever asks (technician or coverage)."""
        if self.records_failure is not None:
            return self.records_failure
        if self.fault_latched:
            if self.fault_final is not None:
                return f"the session ends in FAULT ({self.fault_final})"
            return f"a fault is latched ({self.fault}); clear it first"
        if self.go_no_go:
            return "the go/no-go check failed: " + "; ".join(self.go_no_go)
        if self._cartridge_problem is not None:
            return self._cartridge_problem
        if self.claim_pending is not None:
            return self.claim_pending
        tel = self._tel
        if tel is not None:
            return pen_condition_problem(tel.state, tel.fault_flags, tel.battery_mv)
        return None

    def _safety_stop(self, now_us: int, reason: str,
                     kind: EventKind = EventKind.SAFETY_STOP) -> None:
        """Stop stamping and pause: the technician decides when to go on."""
        self._stop_pen(now_us, reason)
        self._event(now_us, kind, f"stamping stopped: {reason}", safety=True)
        self._goto(Trigger.STOPPED, now_us, reason)
