"""The pen's firmware as a sans-I/O state machine (spec: pen-protocol.md, Behaviour).

Host bytes go in through `receive_data(data, now_us)`, time goes in through
`tick(now_us)`; both return the pen's frames. Nothing here reads a clock.

Theory of operation: every command and every fault becomes a `Trigger`, and
`TRANSITIONS` alone says, for each (state, trigger), the next state or the
NACK code that refuses it. Handlers only check arguments and guards
(the pen's own depth limit, cartridge, a fault cause that persists) and then
apply the table. Time moves in `_step_to`, which advances the physics and
runs the pen's own supervision (watchdog, over-depth, stall, sensor,
battery, temperature); any fault latches through `latch`, which retracts the
needle, stops the motor, enters FAULT and sends FAULT once per fault bit.
TELEMETRY goes out at telemetry_hz in every state once the first HELLO arrived;
the pen says nothing unasked before that. The wire itself (framing, seq, the
authenticated link's rules and signatures) is pen_link.py's; the FW_* commands'
checks, the slots and rollback are bootloader.py's; their states are here.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Final

from devicectl.protocol import (
    FLAG_ACK_REQ,
    POSITION_UNKNOWN,
    Ack,
    AuthBegin,
    AuthConfirm,
    Capability,
    ClearFault,
    Configure,
    Decoder,
    DeviceInfo,
    Estop,
    Event,
    Fault,
    FaultBit,
    FwAbort,
    FwBegin,
    FwChunk,
    FwCommit,
    Hello,
    Message,
    Nack,
    PenEvent,
    PenState,
    SetTarget,
    Start,
    Stop,
    Unknown,
)
from firmware_sim.bootloader import Bootloader, Slots
from firmware_sim.pen_auth import PenAuth
from firmware_sim.pen_link import LINK_BAD_FRAMES, PenLink
from firmware_sim.physics import PenParams, Physics
from firmware_sim.supervision import (
    PEN_DEPTH_LIMIT_UM,
    PEN_OVERDEPTH_UM,
    STALL_US,
    cause_persists,
    slow_since,
    stroke_fault,
)

__all__ = ["PEN_DEPTH_LIMIT_UM", "PEN_OVERDEPTH_UM", "TRANSITIONS", "Firmware", "Trigger"]

PROTO: Final = 1
TELEMETRY_HZ_RANGE: Final = (50, 2000)
WATCHDOG_MS_RANGE: Final = (20, 1000)
#: A runner far behind (a paused process) skips telemetry rather than flooding.
MAX_TELEMETRY_BACKLOG_US: Final = 200_000
_WRAP32: Final = 0xFFFF_FFFF
_WATCHDOG_FLAG: Final = 1 << FaultBit.WATCHDOG


class Trigger(enum.Enum):
    """What moves the state machine: commands, and faults latching."""

    HELLO = "hello"
    CONFIGURE = "configure"
    SET_TARGET = "set_target"
    START = "start"
    STOP = "stop"
    LATCH = "latch"  # any fault, ESTOP included
    CLEAR_TO_READY = "clear_to_ready"
    CLEAR_TO_IDLE = "clear_to_idle"
    AUTH = "auth"  # AUTH_BEGIN and AUTH_CONFIRM
    FW_BEGIN = "fw_begin"
    FW_CHUNK = "fw_chunk"
    FW_COMMIT = "fw_commit"  # a good image: the pen restarts into it
    FW_ABORT = "fw_abort"


_B, _I, _R, _S, _F, _U = PenState
_BS, _FA = Nack.BAD_STATE, Nack.FAULT_ACTIVE

#: Every transition of the pen, in one place: for each trigger, the next state
#: or the NACK that refuses it (the state then stays as it was), in each state.
#: Commands before the first HELLO are refused BAD_STATE, except ESTOP, which
#: a pen obeys in every state, and AUTH_BEGIN (no ACK asked). UPDATING: motor
#: off, needle retracted; only the FW_* commands move it.
_TABLE: Final[dict[Trigger, tuple[PenState | Nack, ...]]] = {
    #                        BOOT IDLE READY STAMPING FAULT UPDATING
    Trigger.HELLO:          (_I,  _I,  _R,   _S,      _F,   _U),
    Trigger.CONFIGURE:      (_BS, _I,  _R,   _S,      _F,   _U),
    # in STAMPING from the next stroke; in FAULT kept for after CLEAR_FAULT
    Trigger.SET_TARGET:     (_BS, _R,  _R,   _S,      _F,   _BS),
    Trigger.START:          (_BS, _BS, _S,   _S,      _FA,  _BS),
    Trigger.STOP:           (_BS, _I,  _R,   _R,      _F,   _U),
    Trigger.LATCH:          (_F,  _F,  _F,   _F,      _F,   _F),
    Trigger.CLEAR_TO_READY: (_BS, _I,  _R,   _S,      _R,   _U),
    Trigger.CLEAR_TO_IDLE:  (_BS, _I,  _R,   _S,      _I,   _U),
    Trigger.AUTH:           (_B,  _I,  _R,   _BS,     _F,   _U),
    Trigger.FW_BEGIN:       (_BS, _U,  _U,   _BS,     _BS,  _BS),
    Trigger.FW_CHUNK:       (_BS, _BS, _BS,  _BS,     _BS,  _U),
    Trigger.FW_COMMIT:      (_BS, _BS, _BS,  _BS,     _BS,  _B),
    Trigger.FW_ABORT:       (_BS, _I,  _R,   _S,      _F,   _I),
}  # fmt: skip
TRANSITIONS: Final[dict[tuple[PenState, Trigger], PenState | Nack]] = {
    (state, trigger): row[state] for trigger, row in _TABLE.items() for state in PenState
}


class Firmware:
    """The pen's side of the link. Readable state for tests and scenarios."""

    def __init__(
        self,
        pen: PenParams,
        physics: Physics,
        *,
        seed: int = 0,
        slots: Slots | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.boot = Bootloader(pen, slots)
        self._entropy = entropy
        self.link = PenLink(None)
        self._power_on(self.boot.pen)
        self.physics = physics
        self.seed = seed
        self._boot_us: int | None = None
        self._t_us = 0

    def _power_on(self, pen: PenParams) -> None:
        """The running firmware starts: at power-on, and after an update."""
        self.pen = pen
        # Asked on every step of the simulation: an IntFlag `&` costs microseconds.
        self._has_position = bool(pen.capabilities & Capability.POSITION)
        self._has_contact = bool(pen.capabilities & Capability.CONTACT)
        self._battery_low_uv = pen.battery_low_mv * 1000
        self._overtemp_c = pen.overtemp_c
        auth = (
            PenAuth(pen.serial_number, required=bool(pen.capabilities & Capability.AUTH_REQUIRED),
                    entropy=self._entropy)
            if pen.capabilities & (Capability.AUTH | Capability.AUTH_REQUIRED) else None
        )
        self.link.auth = auth  # a restart ends any secure session; the wire stays
        self._updates = bool(pen.capabilities & Capability.UPDATE)
        self.state = PenState.BOOT
        self.fault_flags = 0
        self.greeted = False
        self._depth_limit = True
        self.target: SetTarget | None = None
        self.telemetry_hz = pen.telemetry_hz
        self.watchdog_us = pen.watchdog_ms * 1000
        self.x_dmm = POSITION_UNKNOWN
        self.y_dmm = POSITION_UNKNOWN
        self.contact = 0
        self._last_feed_us = 0
        self._tlm_base_us = 0
        self._tlm_k = 0
        self._next_tlm_us = 0
        self._slow_since_us: int | None = None

    @property
    def auth(self) -> PenAuth | None:
        return self.link.auth

    @property
    def decoder(self) -> Decoder:
        return self.link.decoder

    @property
    def depth_limit_enabled(self) -> bool:
        """False only in the `overshoot-no-limit` scenario: a bug that firmware 1.2 fixes."""
        return self._depth_limit

    @depth_limit_enabled.setter
    def depth_limit_enabled(self, on: bool) -> None:
        self._depth_limit = on or "overshoot-no-limit" in self.boot.personality.fixes

    # --- the two entry points ------------------------------------------------

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

    def tick(self, now_us: int) -> bytes:
        """Advance to `now_us`: TELEMETRY when due, FAULT and EVENT as they happen."""
        self._advance(now_us)
        return self.link.flush()

    def next_event_us(self) -> int | None:
        """When the pen next speaks by itself: the next TELEMETRY, or the watchdog
        latching (a FAULT frame) if nothing feeds it first. None before the first
        HELLO, when the pen says nothing unasked."""
        if not self.greeted:
            return None
        due = self._next_tlm_us
        if not self.fault_flags & _WATCHDOG_FLAG:
            due = min(due, self._last_feed_us + self.watchdog_us + 1)
        return due

    # --- inputs from the pen's body and the hand -------------------------------

    def set_position(self, x_dmm: int, y_dmm: int) -> None:
        if self._has_position:
            self.x_dmm, self.y_dmm = x_dmm, y_dmm
        else:
            self.x_dmm = self.y_dmm = POSITION_UNKNOWN

    def set_contact(self, contact: bool, now_us: int) -> None:
        if not self._has_contact:
            return
        value = 1 if contact else 0
        if value != self.contact:
            self.contact = value
            self.emit_event(PenEvent.CONTACT_MADE if value else PenEvent.CONTACT_LOST, now_us)

    def press(self, button: PenEvent, now_us: int) -> None:
        """A button on the pen (BUTTON_PAUSE, BUTTON_RESUME, BUTTON_NEXT_ZONE)."""
        self.emit_event(button, now_us)

    def remove_cartridge(self, now_us: int) -> None:
        self._advance(now_us)
        if not self.physics.cartridge_present:
            return
        self.physics.remove_cartridge()
        self.emit_event(PenEvent.CARTRIDGE_REMOVED, now_us)
        if self.state is PenState.STAMPING:
            self.latch(FaultBit.CARTRIDGE, 0, now_us)

    def insert_cartridge(self, cartridge_id: int, stamps: int, now_us: int) -> None:
        self._advance(now_us)
        self.physics.insert_cartridge(cartridge_id, stamps)
        self.emit_event(PenEvent.CARTRIDGE_INSERTED, now_us)

    def emit_event(self, event: PenEvent, now_us: int) -> None:
        if self.greeted:
            self.link.send(Event(int(event), self._pen_clock(now_us)))

    def latch(self, bit: FaultBit, detail: int, now_us: int) -> None:
        """Latch a fault: needle retracted and motor off at once, FAULT, one FAULT frame."""
        flag = 1 << bit
        if self.fault_flags & flag:
            return  # already latched: a repeat has the effect of one
        if self.state is PenState.UPDATING:
            self.boot.abandon()  # the update is abandoned; the running firmware stays
        self.fault_flags |= flag
        self.physics.halt()
        self._slow_since_us = None
        self._apply(Trigger.LATCH)
        if self.greeted:
            self.link.send(Fault(self.fault_flags, int(bit), max(0, min(detail, 0xFFFF))))

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
            self._on_auth_begin(seq, msg)
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

    def _on_auth_begin(self, seq: int, msg: AuthBegin) -> None:
        assert self.auth is not None
        refused = self._try(Trigger.AUTH, Nack.OK)
        if refused is not Nack.OK:
            self._ack(seq, msg.TYPE, refused)
            return
        self.link.send(self.auth.begin(msg), signed=False)

    def _command(self, msg: Message, now_us: int) -> Nack:
        """Check a host command's arguments and guards, then apply the table."""
        if isinstance(msg, Estop):
            self.latch(FaultBit.ESTOP, msg.reason, now_us)
            return Nack.OK
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
            status = self._try(Trigger.FW_BEGIN, self.boot.begin(msg) if nxt is _U else Nack.OK)
            if status is Nack.OK:
                self.physics.halt()  # UPDATING: motor off, needle retracted
            return status
        if isinstance(msg, FwChunk):
            guard = self.boot.chunk(msg) if self._updating() else Nack.OK
            return self._try(Trigger.FW_CHUNK, guard)
        if self._updating():
            self.boot.abandon()
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

    def _try(self, trigger: Trigger, guard: Nack) -> Nack:
        """The table first (state refusals win), then the handler's guard."""
        nxt = TRANSITIONS[(self.state, trigger)]
        if isinstance(nxt, Nack):
            return nxt
        if guard is not Nack.OK:
            return guard
        self.state = nxt
        return Nack.OK

    def _apply(self, trigger: Trigger) -> None:
        nxt = TRANSITIONS[(self.state, trigger)]
        if isinstance(nxt, PenState):
            self.state = nxt

    # --- time ------------------------------------------------------------------

    def _advance(self, now_us: int) -> None:
        if self._boot_us is None:
            self._boot_us = now_us
            self._t_us = now_us
        if self.greeted:
            if now_us - self._next_tlm_us > MAX_TELEMETRY_BACKLOG_US:
                self._step_to(now_us)
                self._restart_telemetry(now_us)
            if self._next_tlm_us <= now_us:
                self._telemetry_until(now_us)
        self._step_to(now_us)

    def _restart_telemetry(self, now_us: int) -> None:
        self._tlm_base_us = now_us
        self._tlm_k = 1
        self._next_tlm_us = now_us + 1_000_000 // self.telemetry_hz

    def _step_to(self, t_us: int) -> None:
        dt = t_us - self._t_us
        if dt <= 0:
            return
        self._t_us = t_us
        phys = self.physics
        stamping = self.state is PenState.STAMPING
        target = self.target
        if stamping and target is not None:
            if phys.advance(dt, target.depth_um, target.rate_dhz, True):
                self._check_stroke(target, t_us)
            self._check_motor(target, t_us)
        else:
            self._slow_since_us = None  # a slow spell ends with the stamping it belonged to
            phys.advance(dt, 0, 0, False)
        if self.greeted and t_us - self._last_feed_us > self.watchdog_us:
            self.latch(FaultBit.WATCHDOG, min((t_us - self._last_feed_us) // 1000, 0xFFFF), t_us)
        if phys.battery_uv < self._battery_low_uv:
            self.latch(FaultBit.LOW_BATTERY, phys.battery_mv, t_us)
        if phys.temp_c > self._overtemp_c:
            self.latch(FaultBit.OVERTEMP, int(phys.temp_c), t_us)

    def _check_stroke(self, target: SetTarget, t_us: int) -> None:
        bit = stroke_fault(self.physics, target.depth_um, self.pen.max_depth_um,
                           self.depth_limit_enabled)
        if bit is not None:
            self.latch(bit, self.physics.step_max_meas_um, t_us)

    def _check_motor(self, target: SetTarget, t_us: int) -> None:
        if self.state is not PenState.STAMPING:
            return
        since = slow_since(self.physics.rate_dhz, target.rate_dhz, self._slow_since_us, t_us)
        self._slow_since_us = since
        if since is not None and t_us - since >= STALL_US:
            self.latch(FaultBit.STALL, self.physics.rate_meas_dhz, t_us)

    def _count_bad_frames(self, now_us: int) -> None:
        # Link supervision starts with the first HELLO, like the watchdog.
        bad = self.link.bad_frames_in_window(now_us, self.greeted)
        if bad > LINK_BAD_FRAMES:
            self.latch(FaultBit.LINK, bad, now_us)

    # --- output ----------------------------------------------------------------

    def _pen_clock(self, t_us: int) -> int:
        return (t_us - (self._boot_us or 0)) & _WRAP32

    def _telemetry_until(self, now_us: int) -> None:
        """Every TELEMETRY due by `now_us`, each after stepping the pen to its time.

        The hot path of every simulation (1000 frames per simulated second), so
        what cannot change inside the loop is read once, and each frame is
        encoded from its values (encode_telemetry), never built as a Telemetry.
        Only a fault latched while stepping changes state, flags and seq here.
        """
        phys = self.physics
        target = self.target
        depth_cmd_um = target.depth_um if target else 0
        zone_id = target.zone_id if target else 0
        boot_us = self._boot_us or 0
        base_us = self._tlm_base_us
        hz = self.telemetry_hz
        send = self.link.telemetry
        step_to = self._step_to
        stamping = PenState.STAMPING
        k = self._tlm_k
        due = self._next_tlm_us
        while due <= now_us:
            step_to(due)
            state = self.state
            battery_mv = int(phys.battery_uv // 1000)
            if not 0 <= battery_mv <= 0xFFFF:
                battery_mv = max(0, min(battery_mv, 0xFFFF))
            send(
                (
                    (due - boot_us) & _WRAP32,
                    state,
                    self.fault_flags,
                    depth_cmd_um,
                    phys.depth_meas_um if state is stamping else 0,
                    int(phys.rate_dhz + 0.5),
                    phys.strokes & _WRAP32,
                    self.x_dmm,
                    self.y_dmm,
                    self.contact,
                    zone_id,
                    battery_mv,
                )
            )
            k += 1
            due = base_us + k * 1_000_000 // hz
        self._tlm_k = k
        self._next_tlm_us = due

    def _ack(self, seq: int, type_code: int, status: Nack) -> None:
        self.link.send(Ack(seq, type_code, int(status)))
