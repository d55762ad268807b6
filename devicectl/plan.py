"""The plan a session executes, as plain data: per-zone targets, and what one pass means.

Dose is punctures per cm²; a *pass* is the mean dose of one sweep over a
zone at the nominal hand speed, in rows one footprint wide (dose.py). The
profile states target and maximum passes per spot (and may cap the dose in
punctures per cm²); the coverage grid counts each spot's dose
(devicectl/coverage.py); without position tracking it is estimated from
strokes and the zone's area. docs/profiles.md does the sums for clinicians.

Plain data and pure functions only: this module imports neither profile.py
(pydantic) nor zones.py (YAML), so the pen process never loads them. The
profile side (devicectl/profile_plan.py) turns a profile on a zone map into a
PlanRecipe; `fit_plan` fits a recipe to the pen that answered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from devicectl.dose import NOMINAL_HAND_SPEED_MM_S, pass_punctures_per_cm2
from devicectl.errors import RefusedError
from devicectl.frozen import by_fields
from devicectl.protocol import DeviceInfo
from devicectl.safety import DEPTH_CAP_UM
from devicectl.safety_gonogo import region_depth_problems

if TYPE_CHECKING:  # the type only: plain data here, the geometry stays in patches.py
    from devicectl.patches import Patch

__all__ = ["NOMINAL_DEVICE", "NOMINAL_HAND_SPEED_MM_S", "Plan", "PlanRecipe", "ZonePlan",
           "ZoneRecipe", "fit_plan"]
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

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


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

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


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


def mm_text(um: int) -> str:
    """Micrometres as mm for people: 1200 -> "1.2", 1000 -> "1.0", 50 -> "0.05"
    (profile.mm_text's twin: this module may not import the profile's)."""
    text = f"{um / 1000:g}"
    return text if "." in text else text + ".0"


def _hz(rate_dhz: int) -> str:
    return f"{rate_dhz / 10:g} Hz"


@dataclass(frozen=True, slots=True)
class ZoneRecipe:
    """One zone as the profile asks for it, placed on the zone map (plain data)."""

    name: str
    #: the zone's wire id on the map; None when the map has no zone of that name
    zone_id: int | None
    depth_um: int
    rate_dhz: int
    target_passes: int
    max_passes: int
    target_fraction: float
    #: the zone's area on the map, or its patches' with their margin (0: not on the map)
    area_mm2: float
    #: the map's depth limit for the region (None: the device cap)
    region_max_depth_um: int | None
    #: the profile's own cap on the dose, if it sets one
    max_punctures_per_cm2: float | None = None
    #: the patches treated, with their margin (empty: the whole zone)
    patches: tuple[Patch, ...] = ()

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


@dataclass(frozen=True, slots=True)
class PlanRecipe:
    """A validated profile on a zone map, waiting for a pen: what `fit_plan` needs,
    picklable, so the pen process builds the plan without pydantic or YAML."""

    profile_name: str
    profile_version: str
    profile_hash: str
    min_interval_days: int
    warnings: tuple[str, ...]
    zones: tuple[ZoneRecipe, ...]
    #: the cartridge needle counts the profile allows (lowest, highest)
    needle_counts: tuple[int, int] = (0, 0)

    def __call__(self, device: DeviceInfo) -> Plan:
        """The controller's `plan_for`: the recipe fitted to the pen that answered."""
        return fit_plan(self, device)

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


def _refusals(recipe: PlanRecipe, device: DeviceInfo) -> list[str]:
    """Every reason this pen cannot do this recipe (empty: it can)."""
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
    for z in recipe.zones:
        if z.zone_id is None:
            reasons.append(f"zone {z.name!r} is not on the zone map")
        if z.depth_um > DEPTH_CAP_UM:  # the profile checks this; the plan never trusts it
            reasons.append(f"{z.name}: {mm_text(z.depth_um)} mm exceeds the cap")
        elif z.depth_um > device.max_depth_um:
            reasons.append(
                f"{z.name}: {mm_text(z.depth_um)} mm is deeper than this pen reaches"
                f" ({mm_text(device.max_depth_um)} mm)"
            )
        if z.zone_id is not None:
            reasons += region_depth_problems([(z.name, z.depth_um, z.region_max_depth_um)])
        if not device.min_rate_dhz <= z.rate_dhz <= device.max_rate_dhz:
            reasons.append(
                f"{z.name}: {_hz(z.rate_dhz)} is outside this pen's rates"
                f" ({_hz(device.min_rate_dhz)} to {_hz(device.max_rate_dhz)})"
            )
    return reasons


def fit_plan(recipe: PlanRecipe, device: DeviceInfo) -> Plan:
    """The recipe fitted to the connected pen, or RefusedError naming every reason it cannot be.

    Estimates: `target_passes` passes over `target_fraction` of the zone's area,
    at the nominal hand speed, with rows one footprint wide (estimated_strokes).
    """
    reasons = _refusals(recipe, device)
    if reasons:
        raise RefusedError(
            f"this pen cannot run profile {recipe.profile_name!r}: {'; '.join(reasons)}")
    footprint_mm = device.footprint_dmm / 10
    zones: list[ZonePlan] = []
    for z in recipe.zones:
        assert z.zone_id is not None  # refused above
        rate_hz = z.rate_dhz / 10
        stamps = estimated_strokes(
            z.target_passes, z.area_mm2 * z.target_fraction, footprint_mm, rate_hz
        )
        zones.append(
            ZonePlan(
                zone_id=z.zone_id,
                name=z.name,
                depth_um=z.depth_um,
                rate_dhz=z.rate_dhz,
                target_passes=z.target_passes,
                max_passes=z.max_passes,
                target_fraction=z.target_fraction,
                area_mm2=z.area_mm2,
                est_stamps=stamps,
                est_seconds=stamps / rate_hz,
                pass_punctures_per_cm2=pass_punctures_per_cm2(
                    device.needle_count, z.rate_dhz, device.footprint_dmm
                ),
                max_punctures_per_cm2=z.max_punctures_per_cm2,
                patches=z.patches,
            )
        )
    return Plan(
        profile_name=recipe.profile_name,
        profile_version=recipe.profile_version,
        profile_hash=recipe.profile_hash,
        min_interval_days=recipe.min_interval_days,
        zones=tuple(zones),
        warnings=recipe.warnings,
        footprint_dmm=device.footprint_dmm,
        needle_count=device.needle_count,
        needle_counts=recipe.needle_counts,
    )
