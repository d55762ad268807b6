"""The caps and interlocks: every clinical limit is written here, once.

Everything that commands the pen reaches these constants and checks; nothing
else in devicectl may spell a depth limit. Checks raise, they never clamp.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from devicectl.errors import SafetyError
from devicectl.protocol import Estop, SetTarget, encode, fault_names

#: The clinical depth cap: no needle deeper than 1.5 mm, whatever asks.
DEPTH_CAP_UM: Final = 1500
#: Measured depth beyond the cap that means the pen must stop at once.
OVERDEPTH_MARGIN_UM: Final = 50
#: Measured depth beyond the commanded depth that means the pen must stop at once.
OVERSHOOT_MARGIN_UM: Final = 100
#: The absolute over-depth limit on measured depth (cap + margin).
OVERDEPTH_LIMIT_UM: Final = DEPTH_CAP_UM + OVERDEPTH_MARGIN_UM
#: The pen's depth step: profiles give depth in 0.05 mm steps.
DEPTH_STEP_UM: Final = 50
#: Zones treated deeper than this are bound by the minimum interval.
INTERVAL_DEPTH_UM: Final = 1000
#: Minimum days between sessions on a zone treated deeper than INTERVAL_DEPTH_UM.
MIN_INTERVAL_DAYS: Final = 28
#: The host stops stamping below this battery voltage, before the pen's own
#: LOW_BATTERY fault (3300 mV) cuts a stroke short.
BATTERY_LOW_MV: Final = 3400
#: Skin contact lost for longer than this stops stamping.
CONTACT_LOST_LIMIT_US: Final = 300_000
#: Telemetry missing for more than this many periods stops stamping.
TELEMETRY_GAP_PERIODS: Final = 3

# The pen's states (protocol.PenState) the host knows; anything else is unknown.
_KNOWN_PEN_STATES: Final = frozenset(range(5))


class Action(enum.Enum):
    """What a telemetry frame asks of the host, most urgent last."""

    OK = 0
    STOP = 1
    ESTOP = 2


class EstopReason(enum.IntEnum):
    """The `reason` byte of the ESTOPs the host sends (the pen logs it)."""

    OVERDEPTH = 1
    OVERSHOOT = 2
    PEN_FAULT = 3
    #: the host itself failed (the session's last-ditch stop)
    HOST_FAILURE = 4


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    estop_reason: int = 0


#: The verdict of a frame with nothing wrong: one shared object, no allocation.
OK: Final = Verdict(Action.OK, "")


def checked_set_target(depth_um: int, rate_dhz: int, zone_id: int) -> SetTarget:
    """The only way devicectl builds a SET_TARGET: refused above the depth cap.

    Raises SafetyError for a depth above DEPTH_CAP_UM (or not a whole number of
    µm, or negative); it never clamps, so a wrong plan stops the session
    instead of treating at a depth nobody asked for.
    """
    if not isinstance(depth_um, int) or isinstance(depth_um, bool):
        raise SafetyError(f"target depth {depth_um!r} is not a whole number of µm")
    if depth_um > DEPTH_CAP_UM:
        raise SafetyError(
            f"target depth {depth_um} µm is above the {DEPTH_CAP_UM} µm cap; "
            "it was refused, not sent"
        )
    if depth_um < 0:
        raise SafetyError(f"target depth {depth_um} µm is negative")
    return SetTarget(depth_um=depth_um, rate_dhz=rate_dhz, zone_id=zone_id)


#: The pen firmware versions this host works with (major << 8 | minor), inclusive.
SUPPORTED_FW_VERSIONS: Final = (0x0101, 0x01FF)


def firmware_problem(fw_version: int) -> str | None:
    """Why the pen's firmware is a NO-GO, or None when this host supports it."""
    lo, hi = SUPPORTED_FW_VERSIONS
    text = f"{fw_version >> 8}.{fw_version & 0xFF}"
    if fw_version < lo:
        return (f"the pen runs firmware {text}, older than {lo >> 8}.{lo & 0xFF}: update the "
                "pen's firmware: devicectl firmware update IMAGE")
    if fw_version > hi:
        return (f"the pen runs firmware {text}, newer than this devicectl knows "
                f"(up to {hi >> 8}.{hi & 0xFF}): update devicectl")
    return None


def assert_sendable(message: object) -> None:
    """Last gate before encoding: a SET_TARGET above the cap never reaches a frame."""
    if isinstance(message, SetTarget) and (
        not isinstance(message.depth_um, int) or message.depth_um > DEPTH_CAP_UM
    ):
        raise SafetyError(
            f"target depth {message.depth_um} µm is above the {DEPTH_CAP_UM} µm cap; "
            "it was refused, not sent"
        )


def emergency_stop_frame(seq: int = 0) -> bytes:
    """An ESTOP frame for the session's last resort, when the loop itself failed.

    The pen treats a repeated ESTOP as one, whatever its seq, so a frame built
    outside the controller's sequence is still obeyed.
    """
    return encode(Estop(reason=EstopReason.HOST_FAILURE), seq & 0xFF)


def telemetry_verdict(
    state: int,
    fault_flags: int,
    depth_cmd_um: int,
    depth_meas_um: int,
    battery_mv: int,
    known_fault_flags: int,
) -> Verdict:
    """What one TELEMETRY frame demands, checked before any other work on it.

    ESTOP: measured depth over OVERDEPTH_LIMIT_UM or over the commanded depth
    plus OVERSHOOT_MARGIN_UM, or a fault flag set that `known_fault_flags`
    (the flags seen before, and those the host caused itself) did not have.
    STOP: battery below BATTERY_LOW_MV or a pen state the host does not know.
    Scalar arithmetic only: this runs on every frame, at up to 2 kHz.
    """
    if depth_meas_um > OVERDEPTH_LIMIT_UM:
        return Verdict(
            Action.ESTOP,
            f"measured needle depth {depth_meas_um} µm is over the "
            f"{OVERDEPTH_LIMIT_UM} µm limit",
            EstopReason.OVERDEPTH,
        )
    if depth_meas_um > depth_cmd_um + OVERSHOOT_MARGIN_UM:
        return Verdict(
            Action.ESTOP,
            f"measured needle depth {depth_meas_um} µm is more than "
            f"{OVERSHOOT_MARGIN_UM} µm over the commanded {depth_cmd_um} µm",
            EstopReason.OVERSHOOT,
        )
    new_flags = fault_flags & ~known_fault_flags
    if new_flags:
        return Verdict(
            Action.ESTOP,
            f"the pen reports a new fault: {', '.join(fault_names(new_flags))}",
            EstopReason.PEN_FAULT,
        )
    if state not in _KNOWN_PEN_STATES:
        return Verdict(Action.STOP, f"the pen reports an unknown state ({state})")
    if battery_mv < BATTERY_LOW_MV:
        return Verdict(
            Action.STOP,
            f"the pen's battery is low ({battery_mv} mV, below {BATTERY_LOW_MV} mV)",
        )
    return OK


def fault_verdict(fault_flags: int, known_fault_flags: int) -> Verdict:
    """A FAULT message: ESTOP when it shows a flag not known before."""
    new_flags = fault_flags & ~known_fault_flags
    if new_flags:
        return Verdict(
            Action.ESTOP,
            f"the pen reports a fault: {', '.join(fault_names(new_flags))}",
            EstopReason.PEN_FAULT,
        )
    return OK


def cartridge_problem(
    cartridge_id: int,
    cartridge_stamps: int,
    used_cartridge_ids: frozenset[int],
    session_cartridge_id: int | None = None,
) -> str | None:
    """Why the cartridge in the pen may not be used, or None when it may.

    Single use: present, no stamps delivered, not seen in an earlier session.
    `session_cartridge_id` is the cartridge this session already started with:
    that one may carry on (it has stamped this patient only).
    """
    if cartridge_id == 0:
        return "no cartridge is in the pen; insert a new sealed cartridge"
    if session_cartridge_id is not None and cartridge_id == session_cartridge_id:
        return None
    if cartridge_id in used_cartridge_ids:
        return (
            f"cartridge {cartridge_id} was used in an earlier session; "
            "insert a new sealed cartridge"
        )
    if cartridge_stamps != 0:
        return (
            f"cartridge {cartridge_id} has already delivered {cartridge_stamps} stamps; "
            "insert a new sealed cartridge"
        )
    return None


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
    return f"{max(days, 0.0):.1f} days"


def region_depth_problems(zones: Sequence[tuple[str, int, int | None]]) -> list[str]:
    """(zone name, planned depth µm, the region's limit µm or None) -> why each zone
    planned deeper than its region allows (the zone map's max_depth_mm) is refused."""
    return [
        f"zone {name} at {depth_um / 1000:.2f} mm is deeper than its region allows "
        f"({limit_um / 1000:.2f} mm, profiles/zones.yaml)"
        for name, depth_um, limit_um in zones
        if limit_um is not None and depth_um > limit_um
    ]


#: An interval override's reason has at least this many characters: a reason, not a keystroke.
OVERRIDE_REASON_MIN_CHARS: Final = 10


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
