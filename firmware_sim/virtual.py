"""The whole simulated pen on a clock it is given: firmware, physics, hand and faults.

`VirtualPen.advance(now_us)` gives the pen's bytes and `receive_data(bytes,
now_us)` takes the host's; real-time serving calls the two with the wall clock.
`VirtualWire` makes the pen a transport in virtual time: the host's loop reads
and writes it like a serial port, and each read moves the virtual clock on to
the pen's next frame (or the reader's timeout), stepping the pen there. Byte
impairments of a scenario apply in the pen, both ways.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

from devicectl.errors import LinkError
from devicectl.link import Transport, VirtualClock
from devicectl.protocol import Capability
from devicectl.zones import ZoneMap, load_zone_map
from firmware_sim.bootloader import Slots
from firmware_sim.faults import FaultInjector, Scenario, get_scenario
from firmware_sim.firmware import Firmware
from firmware_sim.handpiece import Hand, MapView
from firmware_sim.physics import PenParams, Physics

_DEFAULT_PEN = PenParams()


def fresh_cartridge_id(seed: int) -> int:
    """A cartridge id that differs from seed to seed (never 0, which means none)."""
    return ((seed * 2_654_435_761) ^ _DEFAULT_PEN.cartridge_id) & 0xFFFF_FFFF or 1


#: How far the virtual clock moves at most per step while the pen has nothing due
#: by itself (before the first HELLO: it only answers).
IDLE_STEP_US = 1_000
#: A paced wire (speed > 0) sleeps only once it is this far ahead of the wall clock.
_PACE_SLACK_S = 0.001


def tenths(mm: float) -> int:
    """`round(mm * 10)`, half to even, the same int: compiled, round() is a call into
    builtins (~0.2 µs, twice a frame), and these are plain float operations."""
    v = mm * 10
    r = int(v)  # towards zero
    if r > v:
        r -= 1  # now the floor; v - r is exact (|v| far below 2**52)
    rest = v - r
    if rest > 0.5 or (rest == 0.5 and r % 2 == 1):
        r += 1
    return r


class Pen(Protocol):
    """What the virtual wire needs of a simulated pen: VirtualPen fits, and the
    wrappers around it (misbehaving pens, the fault campaign's bench)."""

    def receive_data(self, data: bytes, now_us: int) -> None: ...
    def advance(self, now_us: int) -> bytes: ...
    def next_event_us(self, now_us: int) -> int: ...


class VirtualPen:
    def __init__(
        self,
        *,
        seed: int = 0,
        scenario: str | Scenario | None = None,
        pen: PenParams | None = None,
        zone_map: ZoneMap | None = None,
        position: bool = True,
        slots: Slots | None = None,
    ) -> None:
        if isinstance(scenario, str):
            scenario = get_scenario(scenario)
        self.faults = FaultInjector(scenario, seed=seed)
        params = self.faults.pen_params(pen or PenParams())
        if params.cartridge_id == _DEFAULT_PEN.cartridge_id:
            # A fresh sealed cartridge per seed: the host refuses one it has seen before.
            params = replace(params, cartridge_id=fresh_cartridge_id(seed))
        if not position:
            params = replace(params, capabilities=params.capabilities & ~Capability.POSITION)
        self.pen = params
        self.physics = Physics(params, seed=seed)
        self.firmware = Firmware(params, self.physics, seed=seed, slots=slots)
        zmap = zone_map if zone_map is not None else load_zone_map()
        self.hand = Hand(
            {z.id: z.outline_mm for z in zmap.zones},
            params.footprint_dmm / 10.0,
            seed=seed,
        )
        self._pending: list[bytes] = []

    def watch_map(self, view: MapView | None) -> None:
        """Let the technician see the host's dose map (same thread as `advance`)."""
        self.hand.watch(view)

    def receive_data(self, data: bytes, now_us: int) -> None:
        """Bytes from the host (after the link); the pen's answers leave on `advance`."""
        data = self.faults.to_pen(data, now_us)
        if data:
            out = self.firmware.receive_data(data, now_us)
            if out:
                self._pending.append(out)

    def next_event_us(self, now_us: int) -> int:
        """When to step the pen next: its next frame (TELEMETRY, or the watchdog's
        FAULT), at most IDLE_STEP_US away while it says nothing unasked. The hand
        and the scenarios act at those steps; answers to the host's frames are
        ready at once, on the next `advance`."""
        due = self.firmware.next_event_us()
        return now_us + IDLE_STEP_US if due is None else max(due, now_us + 1)

    def advance(self, now_us: int) -> bytes:
        """Step everything to `now_us`; the bytes the host receives (impaired, if so)."""
        fw = self.firmware
        out = fw.tick(now_us)
        target = fw.target
        hand = self.hand
        hand.advance(now_us, fw.state, target.zone_id if target else 0,
                     target.rate_dhz if target else 0)
        fw.set_position(tenths(hand.x_mm), tenths(hand.y_mm))
        fw.set_contact(hand.contact, now_us)
        for button in hand.take_presses():
            fw.press(button, now_us)
        self.faults.advance(now_us, fw, hand)
        late = fw.link.flush()  # events raised by the hand or the faults just now
        if self._pending:
            self._pending.append(out)
            self._pending.append(late)
            out = b"".join(self._pending)
            self._pending.clear()
        elif late:
            out += late
        return self.faults.to_host(out, now_us) if out else out


class VirtualWire(Transport):
    """The simulated pen behind a transport, on a virtual clock this wire moves.

    `read(max_bytes, timeout_s)` returns the pen's bytes that have arrived;
    when none have, it steps the clock to the pen's next frame, or to
    `timeout_s` of virtual time from now, whichever comes first (the reader's
    own timers are due then), and steps the pen there. `write` hands the
    host's bytes to the pen at the clock's time; its answers are there for the
    next read. At `speed` > 0 the clock is held to `speed` times the wall
    clock (reads sleep until then); at 0 it runs as fast as the pen is computed.
    """

    def __init__(self, pen: Pen, clock: VirtualClock, *, speed: float = 0.0,
                 name: str = "the simulator") -> None:
        self.pen = pen
        self.clock = clock
        self.name = name
        self._speed = speed
        self._rx = b""  # the pen's bytes not read yet
        self._unread = False  # bytes written since the pen was last stepped
        self._closed = False
        self._t0_us = clock.now_us
        self._wall0_s = time.monotonic()

    def watch_map(self, view: MapView | None) -> None:
        """Let the simulated technician see the host's dose map (the session offers it
        to any wire that asks; only this one does)."""
        watch = getattr(self.pen, "watch_map", None)
        if watch is not None:
            watch(view)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        if self._closed:
            raise LinkError(f"port {self.name} is closed")
        data = self._rx
        if not data:
            data = self._step(self.clock.now_us + max(0, int(timeout_s * 1e6)))
            if not data:
                return b""
        if len(data) <= max_bytes:
            self._rx = b""
            return data
        self._rx = data[max_bytes:]
        return data[:max_bytes]

    def _step(self, deadline_us: int) -> bytes:
        """Step the pen to its next frames until it speaks (its bytes) or `deadline_us`."""
        clock, pen = self.clock, self.pen
        now = clock.now_us
        if self._unread:
            self._unread = False
            out = pen.advance(now)  # the answers to what was written
            if out:
                return out
        paced = self._speed > 0
        while now < deadline_us:
            now = pen.next_event_us(now)
            if now > deadline_us:
                now = deadline_us
            if paced:
                self._pace(now)
            clock.now_us = now
            out = pen.advance(now)
            if out:
                return out
        return b""

    def _pace(self, now_us: int) -> None:
        ahead_s = (now_us - self._t0_us) / 1e6 / self._speed - (time.monotonic() - self._wall0_s)
        if ahead_s > _PACE_SLACK_S:
            time.sleep(ahead_s)

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkError(f"port {self.name} is closed")
        if data:
            self.pen.receive_data(data, self.clock.now_us)
            self._unread = True

    def close(self) -> None:
        self._closed = True
