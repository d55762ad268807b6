"""The pen's firmware below its commands: state, time, supervision and what it says.

`FirmwareCore` holds the running firmware's state (power-on, after an update),
the inputs from the pen's body and the hand (position, contact, buttons, the
cartridge), `latch` (any fault: needle retracted, motor off, FAULT, one FAULT
frame per bit), the table's application (`_try`, `_apply`), and time: `_step_to`
advances the physics and runs the pen's own supervision (watchdog, over-depth,
stall, sensor, battery, temperature); TELEMETRY goes out at telemetry_hz once
the first HELLO arrived. Sans-I/O: times are given, never read. The commands
are firmware.py's `Firmware`, which extends this class.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from devicectl.protocol import (
    POSITION_UNKNOWN,
    Ack,
    Capability,
    Decoder,
    Event,
    Fault,
    FaultBit,
    Nack,
    PenEvent,
    PenState,
    SetTarget,
)
from firmware_sim.bootloader import Bootloader, Slots
from firmware_sim.pen_auth import PenAuth
from firmware_sim.pen_link import LINK_BAD_FRAMES, PenLink
from firmware_sim.pen_states import TRANSITIONS, Trigger
from firmware_sim.physics import PenParams, Physics
from firmware_sim.supervision import STALL_US, slow_since, stroke_fault

#: A runner far behind (a paused process) skips telemetry rather than flooding.
MAX_TELEMETRY_BACKLOG_US: Final = 200_000
_WRAP32: Final = 0xFFFF_FFFF
_WATCHDOG_FLAG: Final = 1 << FaultBit.WATCHDOG


class FirmwareCore:
    """The pen's state, time and output; firmware.Firmware adds the commands."""

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

    # --- the table -------------------------------------------------------------

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

        The hot path of every simulation (1000 frames per simulated second): each
        frame is encoded from its values (encode_telemetry), never built as a
        Telemetry. Plain calls (`self._step_to`, `self.link.telemetry`): compiled,
        they are direct calls, where methods bound to locals were Python calls.
        Only a fault latched while stepping changes state, flags and seq here.
        """
        phys = self.physics
        target = self.target
        depth_cmd_um = target.depth_um if target else 0
        zone_id = target.zone_id if target else 0
        boot_us = self._boot_us or 0
        k = self._tlm_k
        due = self._next_tlm_us
        while due <= now_us:
            self._step_to(due)
            state = self.state
            battery_mv = max(0, min(int(phys.battery_uv // 1000), 0xFFFF))
            self.link.telemetry(
                (
                    (due - boot_us) & _WRAP32,
                    state,
                    self.fault_flags,
                    depth_cmd_um,
                    phys.depth_meas_um if state is PenState.STAMPING else 0,
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
            due = self._tlm_base_us + k * 1_000_000 // self.telemetry_hz
        self._tlm_k = k
        self._next_tlm_us = due

    def _ack(self, seq: int, type_code: int, status: Nack) -> None:
        self.link.send(Ack(seq, type_code, int(status)))


__all__ = ["MAX_TELEMETRY_BACKLOG_US", "FirmwareCore"]
