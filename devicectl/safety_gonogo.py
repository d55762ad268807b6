"""The go/no-go before the first START: the pre-session rules of safety.py's caps and
interlocks (the intervals between treatments, the region's depth, the needle count,
and the go/no-go that gathers them with the cartridge, the firmware and every zone's
target and stamp rate), in one pure function.

Its limits are constants of safety.py, written there once; the checks it shares with
the session (the cartridge, the firmware, the SET_TARGET cap) are safety.py's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from devicectl.errors import SafetyError
from devicectl.safety import (
    INTERVAL_DEPTH_UM,
    MIN_INTERVAL_DAYS,
    OVERRIDE_REASON_MIN_CHARS,
    STROKE_FRAMES,
    TELEMETRY_HZ,
    checked_set_target,
    firmware_problem,
)


@dataclass(frozen=True, slots=True)
class ZoneInterval:
    """A zone of the plan, as the interval rule sees it."""

    name: str
    #: the depth planned for it now
    depth_um: int
    #: the profile's minimum interval for this zone
    min_interval_days: int


def zone_interval_days(zone: ZoneInterval, deep_before: bool) -> int:
    """The days that must have passed since the zone's last treatment.

    The profile's interval always applies, at any depth. When the zone was
    treated deeper than INTERVAL_DEPTH_UM last time (`deep_before`), or is
    planned deeper now, the interval is never shorter than MIN_INTERVAL_DAYS.
    """
    if deep_before or zone.depth_um > INTERVAL_DEPTH_UM:
        return max(zone.min_interval_days, MIN_INTERVAL_DAYS)
    return zone.min_interval_days


def interval_problems(
    zones: Sequence[ZoneInterval],
    days_since_treatment: Mapping[str, float],
    days_since_deep_treatment: Mapping[str, float],
) -> list[str]:
    """Zones of the plan treated too recently for this patient (empty: none).

    The facts come from the records, zone name -> days since the last session
    that stamped it at any depth (`days_since_treatment`), and deeper than
    INTERVAL_DEPTH_UM (`days_since_deep_treatment`); missing = never. A deep
    treatment binds the zone to MIN_INTERVAL_DAYS whatever depth is planned
    now: the skin is still healing from it.
    """
    problems = []
    for zone in zones:
        last = days_since_treatment.get(zone.name)
        deep = days_since_deep_treatment.get(zone.name)
        if deep is not None and deep < zone_interval_days(zone, deep_before=True):
            problems.append(
                f"zone {zone.name} was treated deeper than {INTERVAL_DEPTH_UM / 1000:g} mm "
                f"{_days_text(deep)} ago; the minimum interval is "
                f"{zone_interval_days(zone, deep_before=True)} days"
            )
        elif last is not None and last < zone_interval_days(zone, deep_before=False):
            problems.append(
                f"zone {zone.name} was treated {_days_text(last)} ago; the minimum interval "
                f"is {zone_interval_days(zone, deep_before=False)} days"
            )
    return problems


def _days_text(days: float) -> str:
    """A tenth of a day, or under a day in hours: a treatment minutes ago is not "0.0 days"."""
    if days >= 1:
        return f"{days:.1f} days"
    hours = max(days, 0.0) * 24
    return f"{hours:.1f} hours" if hours >= 0.05 else "under 0.1 hours"


def region_depth_problems(zones: Sequence[tuple[str, int, int | None]]) -> list[str]:
    """(zone name, planned depth µm, the region's limit µm or None) -> why each zone
    planned deeper than its region allows (the zone map's max_depth_mm) is refused."""
    return [
        f"zone {name} at {depth_um / 1000:.2f} mm is deeper than its region allows "
        f"({limit_um / 1000:.2f} mm, profiles/zones.yaml)"
        for name, depth_um, limit_um in zones
        if limit_um is not None and depth_um > limit_um
    ]


def interval_override_problem(reason: str | None, clinician: str | None) -> str | None:
    """Why an interval override may not be accepted, or None when it may.

    It needs a reason of at least OVERRIDE_REASON_MIN_CHARS characters and the
    clinician who decided it; both are recorded with the override.
    """
    text = (reason or "").strip()
    who = (clinician or "").strip()
    if len(text) < OVERRIDE_REASON_MIN_CHARS:
        return (
            f"an interval override needs a reason of at least {OVERRIDE_REASON_MIN_CHARS} "
            f"characters (--override-interval REASON); {text!r} has {len(text)}"
        )
    if not who:
        return (
            "an interval override needs the clinician who decided it (--clinician ID); "
            "none was given"
        )
    return None


class ZoneTarget(Protocol):
    """What the go/no-go needs of a plan's zone (plan.ZonePlan fits)."""

    @property
    def name(self) -> str: ...
    @property
    def zone_id(self) -> int: ...
    @property
    def depth_um(self) -> int: ...
    @property
    def rate_dhz(self) -> int: ...


@dataclass(frozen=True, slots=True)
class GoNoGo:
    """The go/no-go before the first START: why not (empty: go), and what was overridden."""

    reasons: tuple[str, ...]
    #: interval problems a clinician's written reason overrode (recorded as such)
    overridden: tuple[str, ...] = ()
    override_reason: str = ""
    override_clinician: str = ""


def go_no_go(
    zones: Sequence[ZoneTarget],
    *,
    min_interval_days: int,
    fw_version: int,
    cartridge_problem: str | None,
    days_since_treatment: Mapping[str, float],
    days_since_deep_treatment: Mapping[str, float],
    interval_override_reason: str | None,
    interval_override_clinician: str | None,
    other_problems: Sequence[str] = (),
    telemetry_hz: int = TELEMETRY_HZ,
) -> GoNoGo:
    """Everything that must hold before a session treats, in one pure function.

    The pen's firmware, the cartridge (single use), every zone's target (a plan
    deeper than the cap is refused whole, before anything is sent), the
    intervals (overridden only with a reason and the clinician who decided
    it), every zone's stamp rate against the telemetry rate (`telemetry_hz`: each
    stroke in STROKE_FRAMES frames), and any `other_problems` the caller found.
    """
    reasons: list[str] = []
    firmware = firmware_problem(fw_version)
    if firmware is not None:
        reasons.append(firmware)
    if cartridge_problem is not None:
        reasons.append(cartridge_problem)
    for z in zones:
        try:
            checked_set_target(z.depth_um, z.rate_dhz, z.zone_id)
        except SafetyError as exc:
            reasons.append(f"zone {z.name}: {exc}")
        fastest_dhz = telemetry_hz * 10 // STROKE_FRAMES
        if z.rate_dhz > fastest_dhz:
            reasons.append(
                f"zone {z.name}: a stamp rate of {z.rate_dhz / 10:g} Hz is faster than "
                f"{fastest_dhz / 10:g} Hz, above which the {telemetry_hz} Hz telemetry does not "
                f"report every stroke in {STROKE_FRAMES} frames (the over-depth check "
                "sees only the strokes reported)")
    late = interval_problems(
        [ZoneInterval(z.name, z.depth_um, min_interval_days) for z in zones],
        days_since_treatment,
        days_since_deep_treatment,
    )
    override = (interval_override_reason or "").strip()
    clinician = (interval_override_clinician or "").strip()
    refused = interval_override_problem(override, clinician) if override else None
    overridden: tuple[str, ...] = ()
    if late and override and refused is None:
        overridden = tuple(late)
    else:
        reasons.extend(late)
        if late and refused is not None:
            reasons.append(refused)
    reasons.extend(other_problems)
    if not overridden:
        return GoNoGo(tuple(reasons))
    return GoNoGo(tuple(reasons), overridden, override, clinician)


def needle_count_problem(needle_count: int, allowed: tuple[int, int]) -> str | None:
    """Why the pen's cartridge does not match the profile's needle count, or None.

    The dose of every stroke is needle_count punctures: a cartridge with more
    needles than the profile was written for would multiply the dose unseen.
    """
    low, high = allowed
    if low <= needle_count <= high:
        return None
    wanted = f"{low}" if low == high else f"{low} to {high}"
    return (
        f"the cartridge has {needle_count} needles but the profile is for {wanted}; "
        "fit a cartridge the profile allows"
    )
