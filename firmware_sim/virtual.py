"""The whole simulated pen on a clock it is given: firmware, physics, hand and faults.

The host's virtual-time loop calls `advance(now_us)` for the pen's bytes and
`receive_data(bytes, now_us)` with its own; real-time serving calls the same
two with the wall clock. Byte impairments of a scenario apply here, both ways.
"""

from __future__ import annotations

from dataclasses import replace

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

    def advance(self, now_us: int) -> bytes:
        """Step everything to `now_us`; the bytes the host receives (impaired, if so)."""
        fw = self.firmware
        out = fw.tick(now_us)
        target = fw.target
        hand = self.hand
        hand.advance(now_us, fw.state, target.zone_id if target else 0,
                     target.rate_dhz if target else 0)
        fw.set_position(round(hand.x_mm * 10), round(hand.y_mm * 10))
        fw.set_contact(hand.contact, now_us)
        for button in hand.take_presses():
            fw.press(button, now_us)
        self.faults.advance(now_us, fw, hand)
        late = fw.tick(now_us)  # events raised by the hand or the faults just now
        if self._pending:
            self._pending.append(out)
            self._pending.append(late)
            out = b"".join(self._pending)
            self._pending.clear()
        elif late:
            out += late
        return self.faults.to_host(out, now_us) if out else out
