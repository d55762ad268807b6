"""The plan a session executes: per-zone targets, and what one pass means.

A *pass* is one sweep of the needle array over a spot of skin: the strokes
whose footprint covers a spot, with no gap longer than PASS_GAP_US between
them, make one pass. The profile states target and maximum passes per spot;
the coverage grid counts them (devicectl/coverage.py); without position
tracking they are estimated from strokes, the zone's area and a nominal hand
speed. docs/profiles.md says the same for clinicians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: Strokes on a spot further apart than this start a new pass.
PASS_GAP_US: Final = 500_000
#: The hand speed assumed when estimating passes without position (mm/s).
NOMINAL_HAND_SPEED_MM_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """One zone's targets, in the pen's units."""

    zone_id: int
    name: str
    depth_um: int
    rate_dhz: int
    target_passes: int
    max_passes: int
    target_fraction: float
    area_mm2: float
    est_stamps: int
    est_seconds: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated profile fitted to the connected pen, zone by zone, in order."""

    profile_name: str
    profile_version: str
    profile_hash: str
    min_interval_days: int
    zones: tuple[ZonePlan, ...]
    warnings: tuple[str, ...]
    footprint_dmm: int
    needle_count: int

    @property
    def est_seconds(self) -> float:
        return sum(z.est_seconds for z in self.zones)

    @property
    def max_depth_um(self) -> int:
        return max((z.depth_um for z in self.zones), default=0)


def strokes_per_pass(area_mm2: float, footprint_mm: float, rate_hz: float) -> float:
    """Strokes one pass over a whole zone takes at the nominal hand speed.

    The hand sweeps rows one footprint wide, so a pass takes
    area / (footprint × speed) seconds at `rate_hz` strokes a second.
    """
    if footprint_mm <= 0 or rate_hz <= 0:
        raise ValueError("footprint and rate must be positive")
    seconds = area_mm2 / (footprint_mm * NOMINAL_HAND_SPEED_MM_S)
    return seconds * rate_hz


def estimated_passes(strokes: int, area_mm2: float, footprint_mm: float, rate_hz: float) -> float:
    """Passes over a zone estimated from its strokes alone (no position tracking)."""
    return strokes / strokes_per_pass(area_mm2, footprint_mm, rate_hz)


def estimated_strokes(passes: float, area_mm2: float, footprint_mm: float, rate_hz: float) -> int:
    """Strokes a number of passes over a zone takes at the nominal hand speed."""
    return math.ceil(passes * strokes_per_pass(area_mm2, footprint_mm, rate_hz))
