"""The pen's firmware as a sans-I/O state machine (spec: pen-protocol.md, Behaviour).

Host bytes go in through `receive_data(data, now_us)`, time goes in through
`tick(now_us)`; both return the pen's frames. Nothing here reads a clock.

Theory of operation: every command and every fault becomes a `Trigger`, and
`TRANSITIONS` (pen_states.py) alone says, for each (state, trigger), the next
state or the NACK code that refuses it. Handlers (here) only check arguments
and guards (the pen's own depth limit, cartridge, a fault cause that persists)
and then apply the table. The state, time and output are pen_core.py's
`FirmwareCore`, which `Firmware` extends: time moves in `_step_to`, which
advances the physics and runs the pen's own supervision (watchdog, over-depth,
stall, sensor, battery, temperature); any fault latches through `latch`, which
retracts the needle, stops the motor, enters FAULT and sends FAULT once per
fault bit. TELEMETRY goes out at telemetry_hz in every state once the first
HELLO arrived; the pen says nothing unasked before that. The wire itself
(framing, seq, the authenticated link's rules and signatures) is pen_link.py's;
the FW_* commands' checks, the slots and rollback are bootloader.py's; their
states are in the table.
"""

from __future__ import annotations

from typing import Final

from devicectl.protocol import (
    FLAG_ACK_REQ,
    AuthBegin,
    AuthConfirm,
    ClearFault,
    Configure,
    DeviceInfo,
    Estop,
    FaultBit,
    FwAbort,
    FwBegin,
    FwChunk,
    FwCommit,
    Hello,
    Message,
    Nack,
    PenState,
    SetTarget,
    Start,
    Stop,
    Unknown,
)
from firmware_sim.pen_core import FirmwareCore
from firmware_sim.pen_states import TRANSITIONS, Trigger
from firmware_sim.supervision import (
    PEN_DEPTH_LIMIT_UM,
    PEN_OVERDEPTH_UM,
    cause_persists,
)

__all__ = ["PEN_DEPTH_LIMIT_UM", "PEN_OVERDEPTH_UM", "TRANSITIONS", "Firmware", "Trigger"]

PROTO: Final = 1
TELEMETRY_HZ_RANGE: Final = (50, 2000)
WATCHDOG_MS_RANGE: Final = (20, 1000)
_WRAP32: Final = 0xFFFF_FFFF


class Firmware(FirmwareCore):
    """The pen's side of the link. Readable state for tests and scenarios."""

    # --- the entry point for the host's bytes (time: FirmwareCore.tick) ---------

    def receive_data(self, data: bytes, now_us: int) -> bytes:
        """Host bytes in (any chunking); the pen's answers out."""
        frames = self.link.receive(data)
        if frames and self.greeted:
            # Bytes in hand arrived before `now`: a real pen's UART feeds the
            # watchdog as they come, so a simulator that ran late (a busy
            # machine) must not latch WATCHDOG for frames it holds already.
            self._last_feed_us = now_us
        self._advance(now_us)
        self._count_bad_frames(now_us)
        for frame in frames:
            if self.greeted:
                self._last_feed_us = now_us  # any valid frame feeds the watchdog
            self._handle(frame.seq, frame.flags, frame.message, now_us)
        return self.link.flush()

    # --- commands --------------------------------------------------------------

    def _handle(self, seq: int, flags: int, msg: Message | Unknown, now_us: int) -> None:
        ack_req = bool(flags & FLAG_ACK_REQ)
        if isinstance(msg, Hello):
            self._on_hello(msg, now_us)
            if ack_req:
                self._ack(seq, msg.TYPE, Nack.OK)
            return
        known_here = self.auth is not None or not isinstance(msg, AuthBegin | AuthConfirm)
        known_here &= self._updates or not isinstance(msg, FwBegin | FwChunk | FwCommit | FwAbort)
        if isinstance(msg, AuthBegin) and known_here:
            self._on_auth_begin(seq, msg, ack_req)
            return
        if isinstance(msg, Unknown) or msg.TYPE >= 0x40 or not known_here:
            if ack_req:
                code = msg.type_code if isinstance(msg, Unknown) else int(msg.TYPE)
                self._ack(seq, code, Nack.UNKNOWN_TYPE)
            return
        status = self._command(msg, now_us)
        if ack_req:
            self._ack(seq, msg.TYPE, status)
        if isinstance(msg, FwCommit) and status is Nack.OK and self.state is PenState.BOOT:
            self._restart()

    def _on_hello(self, msg: Hello, now_us: int) -> None:
        if not self.greeted:
            self.greeted = True
            self._last_feed_us = now_us
            self._restart_telemetry(now_us)
        self._apply(Trigger.HELLO)
        phys = self.physics
        pen = self.pen
        self.link.send(
            DeviceInfo(
                msg.nonce,
                PROTO,
                pen.fw_version,
                pen.serial_number,
                pen.max_depth_um,
                pen.min_rate_dhz,
                pen.max_rate_dhz,
                pen.needle_count,
                pen.capabilities,
                phys.cartridge_id,
                min(phys.cartridge_stamps, _WRAP32),
                pen.footprint_dmm,
            ),
            signed=False,
        )
        if self.boot.pending_event is not None:
            self.emit_event(self.boot.pending_event, now_us)
            self.boot.pending_event = None

    def _on_auth_begin(self, seq: int, msg: AuthBegin, ack_req: bool) -> None:
        assert self.auth is not None
        refused = self._try(Trigger.AUTH, Nack.OK)
        if refused is not Nack.OK:
            self._ack(seq, msg.TYPE, refused)
            return
        self.link.send(self.auth.begin(msg), signed=False)
        if ack_req:  # not asked by the spec's host; every frame that asks gets one
            self._ack(seq, msg.TYPE, Nack.OK)

    def _command(self, msg: Message, now_us: int) -> Nack:
        """Check a host command's arguments and guards, then apply the table."""
        if isinstance(msg, Estop):
            self.latch(FaultBit.ESTOP, msg.reason, now_us)
            return Nack.OK
        if not self.greeted:
            # Spec 1.1 clarification 5: nothing but ESTOP before the first HELLO, also
            # once an ESTOP has put the pen in FAULT (whose column would take it).
            return Nack.BAD_STATE
        if isinstance(msg, Configure):
            return self._on_configure(msg, now_us)
        if isinstance(msg, SetTarget):
            return self._on_set_target(msg)
        if isinstance(msg, Start):
            return self._try(Trigger.START, self._start_guard())
        if isinstance(msg, Stop):
            refused = self._try(Trigger.STOP, Nack.OK)
            if refused is Nack.OK:
                self.physics.halt()
            return refused
        if isinstance(msg, ClearFault):
            return self._on_clear_fault(now_us)
        if isinstance(msg, AuthConfirm):
            assert self.auth is not None
            status = self._try(Trigger.AUTH, Nack.OK)
            return status if status is not Nack.OK or self.auth.confirm(msg) else Nack.AUTH
        if isinstance(msg, FwBegin | FwChunk | FwAbort):
            return self._on_update(msg)
        if isinstance(msg, FwCommit):
            return self._try(Trigger.FW_COMMIT, self.boot.commit() if self._updating() else Nack.OK)
        return Nack.OK  # HEARTBEAT: feeding the watchdog was all it had to do

    def _updating(self) -> bool:
        return self.state is PenState.UPDATING

    def _on_update(self, msg: FwBegin | FwChunk | FwAbort) -> Nack:
        if isinstance(msg, FwBegin):
            nxt = TRANSITIONS[(self.state, Trigger.FW_BEGIN)]
            guard = self.boot.begin(msg) if nxt is PenState.UPDATING else Nack.OK
            status = self._try(Trigger.FW_BEGIN, guard)
            if status is Nack.OK:
                self.physics.halt()  # UPDATING: motor off, needle retracted
            return status
        if isinstance(msg, FwChunk):
            guard = self.boot.chunk(msg) if self._updating() else Nack.OK
            return self._try(Trigger.FW_CHUNK, guard)
        if not self._updating():
            return self._try(Trigger.FW_ABORT, Nack.OK)
        self.boot.abandon()
        self.target = None  # to IDLE, which is "no target yet" (spec): READY's is gone
        return self._try(Trigger.FW_ABORT, Nack.OK)

    def _restart(self) -> None:
        """After a good FW_COMMIT was ACKed: the new firmware (or the old, rolled back) starts."""
        self.physics.halt()
        self._power_on(self.boot.pen)  # BOOT, silent until the next HELLO, no session

    def _on_configure(self, msg: Configure, now_us: int) -> Nack:
        lo_hz, hi_hz = TELEMETRY_HZ_RANGE
        lo_ms, hi_ms = WATCHDOG_MS_RANGE
        guard = Nack.OK
        if not (lo_hz <= msg.telemetry_hz <= hi_hz and lo_ms <= msg.watchdog_ms <= hi_ms):
            guard = Nack.BAD_ARG
        status = self._try(Trigger.CONFIGURE, guard)
        if status is Nack.OK:
            self.watchdog_us = msg.watchdog_ms * 1000
            if msg.telemetry_hz != self.telemetry_hz:
                self.telemetry_hz = msg.telemetry_hz
                self._restart_telemetry(now_us)
        return status

    def _on_set_target(self, msg: SetTarget) -> Nack:
        pen = self.pen
        guard = Nack.OK
        if msg.depth_um > PEN_DEPTH_LIMIT_UM or msg.depth_um > pen.max_depth_um:
            guard = Nack.DEPTH_LIMIT
        elif not pen.min_rate_dhz <= msg.rate_dhz <= pen.max_rate_dhz:
            guard = Nack.RATE_LIMIT
        status = self._try(Trigger.SET_TARGET, guard)
        if status is Nack.OK:
            self.target = msg
        return status

    def _start_guard(self) -> Nack:
        return Nack.OK if self.physics.cartridge_present else Nack.CARTRIDGE

    def _on_clear_fault(self, now_us: int) -> Nack:
        trigger = Trigger.CLEAR_TO_READY if self.target else Trigger.CLEAR_TO_IDLE
        persists = cause_persists(self.fault_flags, self.physics, self.pen)
        guard = Nack.FAULT_ACTIVE if persists else Nack.OK
        if self.state is not PenState.FAULT:
            guard = Nack.OK  # a repeat of an accepted CLEAR_FAULT: nothing to do
        status = self._try(trigger, guard)
        if status is Nack.OK and self.fault_flags:
            self.fault_flags = 0
            self.link.forget_bad_frames()
            self._slow_since_us = None
        return status
