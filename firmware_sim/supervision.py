"""The pen's own supervision: its limits, and the pure checks that latch a fault.

Written here on purpose and not imported from the host's devicectl.safety: the
pen's limits and the host's are independent (defence in depth); a test checks
that they agree. firmware.py calls these and latches what they find.
"""

from __future__ import annotations

from typing import Final

from devicectl.protocol import FaultBit
from firmware_sim.physics import PenParams, Physics

#: The pen's own depth limit.
PEN_DEPTH_LIMIT_UM: Final = 1500
#: Measured protrusion that latches OVERDEPTH, and the margin over the command.
PEN_OVERDEPTH_UM: Final = PEN_DEPTH_LIMIT_UM + 50
PEN_OVERSHOOT_MARGIN_UM: Final = 100
STALL_FRACTION: Final = 0.5
STALL_US: Final = 50_000
#: Identical sensor readings in a row, while stamping, that mean a stuck sensor:
#: with ±10 µm of noise a live sensor repeats a value 9 times in ~1 of 10^11.
STUCK_STROKES: Final = 10


def stroke_fault(
    phys: Physics, target_um: int, max_depth_um: int, limit_enabled: bool
) -> FaultBit | None:
    """What the stroke just made latches: OVERDEPTH (unless the limit is broken), SENSOR."""
    meas = phys.step_max_meas_um
    if limit_enabled and (meas > PEN_OVERDEPTH_UM or meas > target_um + PEN_OVERSHOOT_MARGIN_UM):
        return FaultBit.OVERDEPTH
    if meas > max_depth_um or phys.unchanged_strokes >= STUCK_STROKES - 1:
        return FaultBit.SENSOR
    return None


def slow_since(
    rate_dhz: float, target_rate_dhz: int, since_us: int | None, t_us: int
) -> int | None:
    """When the motor's slow spell began (None: it is not slow); STALL after STALL_US of it."""
    if rate_dhz >= target_rate_dhz * STALL_FRACTION:
        return None
    return t_us if since_us is None else since_us


def cause_persists(fault_flags: int, phys: Physics, pen: PenParams) -> bool:
    """A latched fault whose cause is still there: CLEAR_FAULT is NACKed FAULT_ACTIVE."""
    return bool(
        (fault_flags & (1 << FaultBit.LOW_BATTERY) and phys.battery_mv < pen.battery_low_mv)
        or (fault_flags & (1 << FaultBit.CARTRIDGE) and not phys.cartridge_present)
        or (fault_flags & (1 << FaultBit.OVERTEMP) and phys.temp_c > pen.overtemp_clear_c)
    )
