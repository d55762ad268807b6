"""Connecting and configuring the pen: who it is (H4), the go/no-go, the target, and the ACKs.

A DEVICE_INFO answering our HELLO is checked for identity first (spec 1.1 H4:
protocol version; after a reconnect, the session's pen and cartridge), then
on the first connection the plan is made and the go/no-go (safety_gonogo.go_no_go)
decides; CONFIGURE and SET_TARGET follow, and their ACKs end CONFIGURING. The
ACK of every command the host sent lands here too (stops and targets feed the
host's account in controller_checks.py).
"""

from __future__ import annotations

from devicectl import protocol as p
from devicectl.controller_core import ControllerCore, Prepared
from devicectl.coverage import Coverage
from devicectl.errors import DevicectlError, RefusedError, SafetyError
from devicectl.plan import NOMINAL_DEVICE, Plan, ZonePlan
from devicectl.safety import (
    WATCHDOG_MS,
    Action,
    EstopReason,
    Verdict,
    cartridge_problem,
    checked_set_target,
    identity_problem,
)
from devicectl.safety_gonogo import go_no_go, needle_count_problem
from devicectl.transitions import EventKind, State, Trigger


class ControllerConnect(ControllerCore):
    """The connection's rules, on the controller's state."""

    def _on_device_info(self, info: p.DeviceInfo, now_us: int) -> None:
        if info.nonce != self._nonce:
            self._event(now_us, EventKind.WARNING, "a DEVICE_INFO with another nonce was ignored")
            return
        connecting = self.state is State.CONNECTING
        if connecting and self._answered:
            # A late answer to an earlier HELLO of this connection: the first answer
            # already began it (an AUTH_BEGIN sent); a second handshake would set the
            # pen's answers to the first against it.
            return
        self._answered = self._answered or connecting
        reconnect = self.plan is not None
        problem = identity_problem(
            info.proto, info.serial_number, info.cartridge_id,
            self._session_serial if reconnect or not connecting else None,
            self._session_cartridge_id() if reconnect and connecting else None,
        )
        if problem is not None and not connecting:
            # Not the pen this session configured: a faulty link or pen, stop it. The
            # session's pen stays the one it configured (the record is not rewritten
            # with the stranger's); the event says who answered.
            self._event(
                now_us, EventKind.DEVICE,
                f"pen {info.serial_number} answered with cartridge {info.cartridge_id}: "
                "not this session's pen", data=p.message_to_dict(info),
            )
            self._estop(Verdict(Action.ESTOP, problem, EstopReason.MISMATCH, True), now_us)
            return
        self.device = info
        self._cartridge_problem = cartridge_problem(
            info.cartridge_id, info.cartridge_stamps, self._facts.used_cartridge_ids,
            self._session_cartridge,
        )
        if self._cartridge_problem is None and self.plan is not None:
            # a cartridge put in mid-session (or found on a reconnect) is held to the
            # plan's needle count as the first one was by the go/no-go: else no stamping
            self._cartridge_problem = needle_count_problem(info.needle_count,
                                                           self.plan.needle_counts)
        self._event(
            now_us, EventKind.DEVICE,
            f"pen {info.serial_number} connected, cartridge {info.cartridge_id}",
            data=p.message_to_dict(info),
        )
        if not connecting:
            return
        if problem is not None:
            self._refuse(now_us, problem)
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
        self._session_serial = info.serial_number
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
            # Unsigned, and so is what follows until its ACK, the pen's first signed frame
            # (spec): a resend of it after a loss must reach a pen that has no session yet.
            self._send(answer, now_us)

    def _refuse(self, now_us: int, reason: str) -> None:
        """The go/no-go says no before anything is configured (identity, key)."""
        self.go_no_go = (*self.go_no_go, reason)
        self._event(now_us, EventKind.GO_NO_GO, f"no go: {reason}", safety=True)
        self._goto(Trigger.REFUSED, now_us, reason)

    def _session_cartridge_id(self) -> int | None:
        """The session's cartridge: the one it started stamping with, else the first seen."""
        if self._session_cartridge is not None:
            return self._session_cartridge
        return self._first_cartridge

    def _first_connection(self, info: p.DeviceInfo, now_us: int) -> None:
        self._first_cartridge = info.cartridge_id
        try:
            plan = self._plan_for(info)
        except RefusedError as exc:
            self.go_no_go = (str(exc),)
            self._event(now_us, EventKind.GO_NO_GO, f"no go: {exc}", safety=True)
            self._goto(Trigger.REFUSED, now_us, str(exc))
            return
        self.plan = plan
        self._event(
            now_us, EventKind.PLAN,
            f"plan '{plan.profile_name}' version {plan.profile_version}, "
            f"{len(plan.zones)} zone{'' if len(plan.zones) == 1 else 's'}",
        )
        other: list[str] = []
        if not 0 <= self.zone_index < len(plan.zones):
            other.append(f"zone index {self.zone_index} is not in the plan")
        _, self.coverage, restore_problem = self._coverage_for(plan, info)
        other.extend(self.coverage.problems)
        needles = needle_count_problem(info.needle_count, plan.needle_counts)
        if needles is not None:
            other.append(needles)
        if restore_problem is not None:
            other.append(restore_problem)
        facts = self._facts
        verdict = go_no_go(
            plan.zones,
            min_interval_days=plan.min_interval_days,
            fw_version=info.fw_version,
            cartridge_problem=self._cartridge_problem,
            days_since_treatment=facts.days_since_treatment,
            days_since_deep_treatment=facts.days_since_deep_treatment,
            interval_override_reason=facts.interval_override_reason,
            interval_override_clinician=facts.interval_override_clinician,
            other_problems=other,
            telemetry_hz=self.telemetry_hz,
        )
        if verdict.overridden:
            self._event(
                now_us, EventKind.OVERRIDE,
                f"interval overridden by {verdict.override_clinician} "
                f"({verdict.override_reason}): " + "; ".join(verdict.overridden),
                data={"reason": verdict.override_reason,
                      "clinician": verdict.override_clinician,
                      "problems": list(verdict.overridden)},
                safety=True,
            )
        self.go_no_go = verdict.reasons
        if verdict.reasons:
            text = "; ".join(verdict.reasons)
            self._event(now_us, EventKind.GO_NO_GO, "no go: " + text, safety=True)
            self._goto(Trigger.REFUSED, now_us, text)
            return
        self._event(now_us, EventKind.GO_NO_GO, "go: cartridge and intervals checked")
        self._configure(now_us, "go: configuring the pen")

    def prepare(self, device: p.DeviceInfo = NOMINAL_DEVICE) -> None:
        """Build the coverage of the plan on `device`, with a resumed session's state
        restored, before the pen is connected (the pen process calls this first).

        On the pen's DEVICE_INFO it is taken as it is when the pen's plan asks for the
        same grid (zones, footprint, needles, tracking: the usual pen), instead of being
        built then. Building it takes 30-60 ms and restoring 20-35 ms on a loaded 2-core
        machine, all of it between the pen's answer and CONFIGURE, inside the 100 ms
        the pen's watchdog gives the host after HELLO: under load the pen latched
        WATCHDOG at the start of a resumed session. Another pen gets its own, built
        on its answer, as before."""
        try:
            prepared = self._coverage_for(self._plan_for(device), device)
        except Exception:  # only a head start: on the pen's answer the
            return  # plan and the coverage are made again, refused or failed as before
        self._prepared = prepared

    def _coverage_for(self, plan: Plan, device: p.DeviceInfo) -> Prepared:
        """What the plan's coverage on this pen is built from, the coverage with the
        session's saved state, and why that state could not be restored (None:
        restored, or none saved): the prepared one when it was built from the same,
        else built now."""
        tracked = bool(device.capabilities & p.Capability.POSITION)
        key = (plan.zones, plan.footprint_dmm, plan.needle_count, tracked)
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == key:
            return prepared
        coverage = Coverage(
            self._raster, plan.zones, plan.footprint_dmm, tracked=tracked,
            needle_count=plan.needle_count,
        )
        if self._coverage_state:
            try:
                coverage.restore(self._coverage_state)
            except DevicectlError as exc:
                return key, coverage, str(exc)
        return key, coverage, None

    def _configure(self, now_us: int, why: str) -> None:
        zone = self.zone
        assert zone is not None
        self._send(p.Configure(telemetry_hz=self.telemetry_hz, watchdog_ms=WATCHDOG_MS), now_us)
        self._send_target(zone, now_us)
        self._goto(
            Trigger.FAULT_CLEARED if self.state is State.FAULT else Trigger.CONNECTED, now_us, why
        )

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

    def _on_ack(self, ack: p.Ack, now_us: int) -> None:
        if (ack.acked_type == p.MsgType.AUTH_BEGIN and ack.status == p.Nack.AUTH
                and self.state is State.CONNECTING and self._auth.begun is not None):
            self._auth_begin_refused(now_us)
            return
        message = self._link.ack(ack.acked_seq, ack.acked_type)
        if message is None:
            return
        ok = ack.status == p.Nack.OK
        if isinstance(message, p.SetTarget):
            self._checks.target_answered(message, ok, now_us)
        elif isinstance(message, p.Stop | p.Estop):
            self._checks.stop_acked(self._link.acked_sent_us)
        if not ok:
            self._on_nack(message, ack.status, now_us)
            return
        if isinstance(message, p.AuthConfirm) and self.state is State.CONNECTING:
            self._event(now_us, EventKind.DEVICE, "the pen proved its key: the link is signed",
                        data={"authenticated": True})
            assert self.device is not None
            self._identified(self.device, now_us)
        elif isinstance(message, p.ClearFault) and self.state is State.FAULT:
            self.fault_latched = False
            self.fault = None
            self._known_flags = 0
            self._overdepth_in_fault = False
            self._event(
                now_us, EventKind.FAULT_CLEARED, "the pen accepted CLEAR_FAULT", safety=True
            )
            self._configure(now_us, "fault cleared: setting the zone's target again")
        elif self.state is State.CONFIGURING and not self._configuring():
            if self.fault_latched:
                self._goto(Trigger.CONFIGURED_IN_FAULT, now_us, self.fault or "a fault is latched")
            else:
                self._goto(Trigger.CONFIGURED, now_us, "the pen holds the zone's target")

    def _auth_begin_refused(self, now_us: int) -> None:
        """NACK AUTH to our unsigned AUTH_BEGIN: the pen still holds a secure session.
        A reconnect signs the same AUTH_BEGIN with the session of the link before (a
        signed AUTH_BEGIN is accepted and ends it, spec); anything else is refused."""
        session = self._auth.begin_signed()
        begun = self._auth.begun
        if isinstance(session, str) or begun is None:
            self._refuse(now_us, str(session))
            return
        self._event(now_us, EventKind.WARNING, "the pen still holds the earlier link's secure "
                    "session: AUTH_BEGIN again, signed with it")
        self._link.secure = session
        self._out += self._link.send(begun, now_us)
        self._link.secure = None  # the pen's answers and our AUTH_CONFIRM go unsigned

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
                self._goto(Trigger.CONFIGURED_IN_FAULT, now_us, text)
            else:
                self.go_no_go = (*self.go_no_go, text)
                self._goto(Trigger.REFUSED, now_us, text)
