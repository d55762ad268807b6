"""The plan a session executes: per-zone targets, and what one pass means.

Dose is punctures per cm²; a *pass* is the mean dose of one sweep over a
zone at the nominal hand speed, in rows one footprint wide (dose.py). The
profile states target and maximum passes per spot (and may cap the dose in
punctures per cm²); the coverage grid counts each spot's dose
(devicectl/coverage.py); without position tracking it is estimated from
strokes and the zone's area. docs/profiles.md does the sums for clinicians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from devicectl.dose import NOMINAL_HAND_SPEED_MM_S, pass_punctures_per_cm2
from devicectl.errors import RefusedError
from devicectl.patches import Patch, patch_area_mm2
from devicectl.profile import (
    DEFAULT_TOPICAL_WAIT_HOURS,
    LoadedProfile,
    Profile,
    content_hash,
    mm_text,
    profile_warnings,
)
from devicectl.protocol import DeviceInfo
from devicectl.safety import DEPTH_CAP_UM, region_depth_problems
from devicectl.zones import ZoneMap

__all__ = ["NOMINAL_DEVICE", "NOMINAL_HAND_SPEED_MM_S", "Plan", "ZonePlan", "make_plan"]
#: The pen assumed when a plan is shown without one connected: the DEVICE_INFO
#: of the spec's test vector (20-160 Hz, 12 needles, 5.0 mm footprint).
NOMINAL_DEVICE: Final = DeviceInfo(
    nonce=0,
    proto=1,
    fw_version=0x0102,
    serial_number=0,
    max_depth_um=2500,
    min_rate_dhz=200,
    max_rate_dhz=1600,
    needle_count=12,
    capabilities=3,
    cartridge_id=0,
    cartridge_stamps=0,
    footprint_dmm=50,
)


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
    #: the dose of one pass with the connected pen (dose.pass_punctures_per_cm2)
    pass_punctures_per_cm2: float = 0.0
    #: the profile's own cap on the dose, if it sets one
    max_punctures_per_cm2: float | None = None
    #: the patches treated, with their margin (empty: the whole zone); area_mm2 is theirs
    patches: tuple[Patch, ...] = ()


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
    #: the cartridge needle counts the profile allows (lowest, highest)
    needle_counts: tuple[int, int] = (0, 0)

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


def _hz(rate_dhz: int) -> str:
    return f"{rate_dhz / 10:g} Hz"


def _refusals(profile: Profile, device: DeviceInfo, zone_map: ZoneMap) -> list[str]:
    """Every reason this pen cannot do this profile on this map (empty: it can)."""
    reasons: list[str] = []
    if device.footprint_dmm <= 0:
        reasons.append("the pen reports no needle footprint (footprint_dmm = 0)")
    if device.needle_count <= 0:
        reasons.append("the pen reports no needles (needle_count = 0)")
    if not 0 < device.min_rate_dhz <= device.max_rate_dhz:
        reasons.append(
            f"the pen reports an impossible rate range {_hz(device.min_rate_dhz)}"
            f" to {_hz(device.max_rate_dhz)}"
        )
    for z in profile.zones:
        if z.zone not in zone_map.names:
            reasons.append(f"zone {z.zone!r} is not on the zone map")
        if z.depth_um > DEPTH_CAP_UM:  # the profile checks this; the plan never trusts it
            reasons.append(f"{z.zone}: {mm_text(z.depth_um)} mm exceeds the cap")
        elif z.depth_um > device.max_depth_um:
            reasons.append(
                f"{z.zone}: {mm_text(z.depth_um)} mm is deeper than this pen reaches"
                f" ({mm_text(device.max_depth_um)} mm)"
            )
        if z.zone in zone_map.names:
            limit = zone_map.by_name(z.zone).max_depth_um
            reasons += region_depth_problems([(z.zone, z.depth_um, limit)])
        if not device.min_rate_dhz <= z.rate_dhz <= device.max_rate_dhz:
            reasons.append(
                f"{z.zone}: {_hz(z.rate_dhz)} is outside this pen's rates"
                f" ({_hz(device.min_rate_dhz)} to {_hz(device.max_rate_dhz)})"
            )
    return reasons


def make_plan(
    profile: LoadedProfile | Profile,
    device: DeviceInfo,
    zone_map: ZoneMap,
    *,
    topical_wait_hours: float = DEFAULT_TOPICAL_WAIT_HOURS,
) -> Plan:
    """The profile fitted to the connected pen, or RefusedError naming every reason it cannot be.

    Estimates: `target_passes` passes over `target_fraction` of the zone's area,
    at the nominal hand speed, with rows one footprint wide (estimated_strokes).
    """
    if isinstance(profile, LoadedProfile):
        warnings, digest, model = profile.warnings, profile.content_hash, profile.profile
    else:
        model = profile
        warnings = profile_warnings(model, topical_wait_hours)
        digest = content_hash(model)
    reasons = _refusals(model, device, zone_map)
    if reasons:
        raise RefusedError(f"this pen cannot run profile {model.name!r}: {'; '.join(reasons)}")
    footprint_mm = device.footprint_dmm / 10
    zones: list[ZonePlan] = []
    for z in model.zones:
        patches = z.patch_shapes
        area_mm2 = (patch_area_mm2(zone_map, z.zone, patches) if patches
                    else zone_map.by_name(z.zone).area_mm2)
        rate_hz = z.rate_dhz / 10
        stamps = estimated_strokes(
            z.target_passes, area_mm2 * z.target_fraction, footprint_mm, rate_hz
        )
        zones.append(
            ZonePlan(
                zone_id=zone_map.by_name(z.zone).id,
                name=z.zone,
                depth_um=z.depth_um,
                rate_dhz=z.rate_dhz,
                target_passes=z.target_passes,
                max_passes=z.max_passes,
                target_fraction=z.target_fraction,
                area_mm2=area_mm2,
                est_stamps=stamps,
                est_seconds=stamps / rate_hz,
                pass_punctures_per_cm2=pass_punctures_per_cm2(
                    device.needle_count, z.rate_dhz, device.footprint_dmm
                ),
                max_punctures_per_cm2=z.max_punctures_per_cm2,
                patches=patches,
            )
        )
    return Plan(
        profile_name=model.name,
        profile_version=model.version,
        profile_hash=digest,
        min_interval_days=model.min_interval_days,
        zones=tuple(zones),
        warnings=warnings,
        footprint_dmm=device.footprint_dmm,
        needle_count=device.needle_count,
        needle_counts=model.needle_counts,
    )


def nominal_plan(profile: LoadedProfile | Profile, zone_map: ZoneMap) -> Plan:
    """The plan on NOMINAL_DEVICE with the profile's cartridge, for showing a
    profile with no pen connected."""
    model = profile.profile if isinstance(profile, LoadedProfile) else profile
    device = replace(NOMINAL_DEVICE, needle_count=model.needle_counts[0])
    return make_plan(profile, device, zone_map)
