"""The caps and interlocks: every clinical limit is written here, once.

Everything that commands the pen reaches these constants and checks; nothing
else in devicectl may spell a depth limit. Checks raise, they never clamp.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from devicectl.errors import SafetyError
from devicectl.protocol import PROTO_VERSION, Estop, PenState, SetTarget, encode, fault_names

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
#: An interval override's reason has at least this many characters: a reason, not a keystroke.
OVERRIDE_REASON_MIN_CHARS: Final = 10
#: The host stops stamping below this battery voltage, before the pen's own
#: LOW_BATTERY fault (3300 mV) cuts a stroke short.
BATTERY_LOW_MV: Final = 3400
#: Skin contact lost for longer than this stops stamping.
CONTACT_LOST_LIMIT_US: Final = 300_000
#: Telemetry missing for more than this many periods stops stamping.
TELEMETRY_GAP_PERIODS: Final = 3

#: The one protocol version the host speaks (spec H4: another is refused).
PEN_PROTO: Final = PROTO_VERSION

# --- the link and the session's end (docs/safety.md, "Stopping") ---------------------
#: The telemetry rate devicectl configures (Hz) and the pen's watchdog (ms) it sets.
TELEMETRY_HZ: Final = 500
WATCHDOG_MS: Final = 100
#: After a telemetry gap, this many on-time frames in a row before stamping resumes.
STEADY_FRAMES: Final = 25
#: No telemetry at all for this long while the pen should be talking: the link is gone.
#: Past 2.5 watchdog periods the pen's watchdog has surely latched, so the session
#: cannot carry on by itself: it waits for the technician to reconnect.
SILENCE_LOST_US: Final = WATCHDOG_MS * 2_500
#: An ACK_REQ frame not ACKed within this is sent again (spec).
ACK_TIMEOUT_US: Final = 30_000
#: Resends of one frame before the link counts as lost (spec).
MAX_RESENDS: Final = 3
#: The longest a write waits for a port that takes no byte (s): as long as the host
#: gives a pen whose telemetry has stopped before it calls the link lost (2.5 watchdog
#: periods, SILENCE_LOST_US). At 921,600 baud the port's buffer drains in milliseconds.
WRITE_STALL_S: Final = 0.25
#: How long the session's end waits for telemetry that shows the pen stopped (µs).
STOP_VERIFY_US: Final = 500_000
#: A pen still stamping at the session's end gets ESTOP NOT_STOPPED (every 30 ms, ten
#: times) before the loop ends anyway, the technician told to switch it off (µs). A pen
#: that ignored ten ESTOPs will not take the eleventh, and every one fed its watchdog:
#: once the host is silent, the watchdog (watchdog_ms) is what can still stop it.
NOT_STOPPED_WAIT_US: Final = 300_000
#: How much of the footprint's area may lie outside the zone being treated
#: (the spill onto neighbours): a larger overhang holds stamping at the border.
MAX_OVERHANG_FRACTION: Final = 0.25
#: Every stroke is reported in at least this many TELEMETRY frames: the over-depth
#: check sees a stroke only in a frame that reports it (a frame carries the most recent
#: stroke's depth), so a plan stamping faster than the telemetry rate over this is
#: refused (500 Hz: up to 166 Hz).
STROKE_FRAMES: Final = 3
#: Records queued and not yet written past which treatment stops: no treatment
#: without a record, and a writer this far behind is not keeping the record.
#: Nothing is dropped: the queue keeps every record until it is written.
RECORDS_BEHIND_ITEMS: Final = 10_000

# --- the host checks the pen (spec 1.1, H1-H5) --------------------------------
#: H1: telemetry periods after a SET_TARGET's ACK (OK) from which every TELEMETRY
#: must report that target's depth and zone.
TARGET_SETTLE_PERIODS: Final = 2
#: H2: while STAMPING, the measured rate may exceed the commanded rate by this
#: percentage ...
OVERSPEED_PERCENT: Final = 125
#: ... in at most this many TELEMETRY frames in a row, less one.
OVERSPEED_FRAMES: Final = 3
#: H2, beyond the spec's letter: the rate is also measured from `stamp_count` itself,
#: over windows of at least this much of the pen's own clock (`t_us`), whatever state
#: and rate the pen reports. The pen's clock, not the host's: frames the link holds
#: back or loses change neither end of a window ...
COUNTER_WINDOW_US: Final = 1_000_000
#: ... which may hold this many strokes beyond OVERSPEED_PERCENT of the commanded
#: rate (a stroke under way at each end), or short of ...
COUNTER_SLACK_STROKES: Final = 2
#: ... this percentage of it, when the pen said STAMPING throughout: an honest pen
#: under it for 50 ms latches STALL (spec), so a counter under it misses strokes.
UNDERRUN_PERCENT: Final = 50
#: H3: from this long after a STOP or ESTOP is sent, the pen must be stopped ...
STOP_SETTLE_US: Final = 20_000
#: ... having made at most this many strokes since the stop was sent.
STOP_STROKE_SLACK: Final = 2
#: H3: the ESTOP to a pen that does not stop is sent again this often.
NOT_STOPPED_RESEND_US: Final = 30_000
#: H5: the over-depth that ends a session (the first may be cleared).
OVERDEPTHS_PER_SESSION: Final = 2
#: Tolerance band: strokes measured above the cap but not over the ESTOP limit
#: (DEPTH_CAP_UM + 1 ... OVERDEPTH_LIMIT_UM) are counted, never silently passed.
TOLERANCE_EVENT_PERIOD_US: Final = 1_000_000
#: SENSOR_SUSPECT: measured depth more than this below the commanded depth ...
SENSOR_SUSPECT_SHORTFALL_UM: Final = 400
#: ... for this many strokes in a row while in contact and stamping stops stamping.
SENSOR_SUSPECT_STROKES: Final = 30

# The pen's states (protocol.PenState) the host knows; anything else is unknown.
_KNOWN_PEN_STATES: Final = frozenset(range(5))
_UPDATING: Final = 5  # PenState.UPDATING (spec 1.1): known, but never a state to stamp in
_STAMPING: Final = int(PenState.STAMPING)
_U32: Final = 0xFFFF_FFFF


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
    #: H1, H4: the pen reports a target, zone or identity the host did not command, or
    #: STAMPING with a counter that misses strokes
    MISMATCH = 5
    #: H2: the pen stamps faster than commanded
    OVERSPEED = 6
    #: H3: the pen goes on stamping after STOP or ESTOP
    NOT_STOPPED = 7


def stop_follows_estop(reason: int, fault_latched: bool) -> bool:
    """H3, beyond the letter of spec 1.1: whether this ESTOP is followed at once by a
    STOP. A pen that goes on after a stop (NOT_STOPPED, or an ESTOP sent again while
    its fault is latched, as over-depth is while the pen stays over depth) may ignore
    ESTOP and still obey STOP, which its firmware takes by another path. A pen
    accepts STOP in every state after HELLO, and a pen in FAULT stays there: the STOP
    costs nothing, and one broken command path no longer leaves a pen stamping until
    its watchdog acts."""
    return fault_latched or reason == EstopReason.NOT_STOPPED


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    estop_reason: int = 0
    #: the pen is faulty (spec H1-H5): the session ends in FAULT, nothing is cleared
    ends_session: bool = False


#: The verdict of a frame with nothing wrong: one shared object, no allocation.
OK: Final = Verdict(Action.OK, "")


def checked_set_target(depth_um: object, rate_dhz: int, zone_id: int) -> SetTarget:
    """The only way devicectl builds a SET_TARGET: refused above the depth cap.

    Raises SafetyError for a depth above DEPTH_CAP_UM (or not a whole number of
    µm, or negative); it never clamps, so a wrong plan stops the session
    instead of treating at a depth nobody asked for. `depth_um` is typed
    `object` and narrowed here, not at the call: compiled with mypyc, an `int`
    parameter would refuse a float with TypeError and take True as 1 before
    this check ran (docs/performance.md, "Round 5").
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
    commanded_depth_um: int,
    depth_meas_um: int,
    battery_mv: int,
    known_fault_flags: int,
) -> Verdict:
    """What one TELEMETRY frame demands, checked before any other work on it.

    ESTOP: measured depth over OVERDEPTH_LIMIT_UM or over the depth *the host
    commanded* plus OVERSHOOT_MARGIN_UM (never the pen's own claim of its
    target: that claim is what H1 checks), or a fault flag set that
    `known_fault_flags` (the flags seen before, and those the host caused
    itself) did not have. STOP: battery below BATTERY_LOW_MV or a pen state the
    host does not know. Scalar arithmetic only: this runs on every frame.
    """
    if depth_meas_um > OVERDEPTH_LIMIT_UM:
        return Verdict(
            Action.ESTOP,
            f"measured needle depth {depth_meas_um} µm is over the "
            f"{OVERDEPTH_LIMIT_UM} µm limit",
            EstopReason.OVERDEPTH,
        )
    if depth_meas_um > commanded_depth_um + OVERSHOOT_MARGIN_UM:
        return Verdict(
            Action.ESTOP,
            f"measured needle depth {depth_meas_um} µm is more than "
            f"{OVERSHOOT_MARGIN_UM} µm over the {commanded_depth_um} µm the host commanded",
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
        return Verdict(Action.STOP, unknown_state_problem(state))
    if battery_mv < BATTERY_LOW_MV:
        return Verdict(Action.STOP, low_battery_problem(battery_mv))
    return OK


def unknown_state_problem(state: int) -> str:
    """The words for a state a pen may not stamp in: UPDATING (spec 1.1) by its name."""
    if state == _UPDATING:
        return "the pen reports UPDATING (a firmware update): it cannot stamp"
    return f"the pen reports an unknown state ({state})"


def low_battery_problem(battery_mv: int) -> str:
    return f"the pen's battery is low ({battery_mv} mV, below {BATTERY_LOW_MV} mV)"


def pen_condition_problem(state: int, fault_flags: int, battery_mv: int) -> str | None:
    """Why the pen's last TELEMETRY forbids stamping now, or None (one rule for
    the technician's START and the coverage's restart alike)."""
    if fault_flags:
        return "the pen reports " + ", ".join(fault_names(fault_flags))
    if state not in _KNOWN_PEN_STATES:
        return unknown_state_problem(state)
    if battery_mv < BATTERY_LOW_MV:
        return low_battery_problem(battery_mv)
    return None


def target_mismatch(
    depth_cmd_um: int, zone_id: int, commanded_depth_um: int, commanded_zone_id: int
) -> Verdict:
    """H1: the pen must report the target the host commanded, once it settled."""
    if depth_cmd_um == commanded_depth_um and zone_id == commanded_zone_id:
        return OK
    return Verdict(
        Action.ESTOP,
        f"the pen reports target {depth_cmd_um} µm in zone {zone_id}; the host "
        f"commanded {commanded_depth_um} µm in zone {commanded_zone_id}",
        EstopReason.MISMATCH,
        ends_session=True,
    )


def is_overspeed(rate_meas_dhz: int, commanded_rate_dhz: int) -> bool:
    """H2, one frame: the measured rate over OVERSPEED_PERCENT of the commanded one."""
    return rate_meas_dhz * 100 > commanded_rate_dhz * OVERSPEED_PERCENT


def overspeed(rate_meas_dhz: int, commanded_rate_dhz: int) -> Verdict:
    """H2: the verdict once OVERSPEED_FRAMES frames in a row were over the limit."""
    return Verdict(
        Action.ESTOP,
        f"the pen stamps at {rate_meas_dhz / 10:g} Hz, over {OVERSPEED_PERCENT} % of the "
        f"commanded {commanded_rate_dhz / 10:g} Hz in {OVERSPEED_FRAMES} frames in a row",
        EstopReason.OVERSPEED,
        ends_session=True,
    )


def is_counter_overspeed(strokes: int, window_us: int, commanded_rate_dhz: int) -> bool:
    """H2 from the counter: more strokes in `window_us` of the pen's clock than
    OVERSPEED_PERCENT of the commanded rate makes, plus COUNTER_SLACK_STROKES."""
    allowed_x1e9 = commanded_rate_dhz * OVERSPEED_PERCENT * window_us  # 0.1 Hz * % * µs
    return (strokes - COUNTER_SLACK_STROKES) * 1_000_000_000 > allowed_x1e9


def counter_overspeed(strokes: int, window_us: int, commanded_rate_dhz: int) -> Verdict:
    """H2 from the counter: the verdict on one window."""
    return Verdict(
        Action.ESTOP,
        f"the pen's stroke counter rose by {strokes} in {window_us / 1000:.0f} ms "
        f"({strokes * 1_000_000 / window_us:.1f} Hz), over {OVERSPEED_PERCENT} % of "
        f"the commanded {commanded_rate_dhz / 10:g} Hz, whatever rate it reports",
        EstopReason.OVERSPEED,
        ends_session=True,
    )


def is_counter_underrun(strokes: int, window_us: int, commanded_rate_dhz: int) -> bool:
    """A pen STAMPING throughout `window_us` of its clock whose counter shows fewer
    strokes than UNDERRUN_PERCENT of the commanded rate makes, less COUNTER_SLACK_STROKES."""
    least_x1e9 = commanded_rate_dhz * UNDERRUN_PERCENT * window_us  # 0.1 Hz * % * µs
    return (strokes + COUNTER_SLACK_STROKES) * 1_000_000_000 < least_x1e9


def counter_underrun(strokes: int, window_us: int, commanded_rate_dhz: int) -> Verdict:
    """The verdict on a pen whose counter misses strokes: its reports disagree."""
    return Verdict(
        Action.ESTOP,
        f"the pen reports STAMPING throughout {window_us / 1000:.0f} ms of its clock, but "
        f"its stroke counter rose by {strokes} ({strokes * 1_000_000 / window_us:.1f} Hz), "
        f"under {UNDERRUN_PERCENT} % of the commanded {commanded_rate_dhz / 10:g} Hz: "
        "strokes the records would not hold",
        EstopReason.MISMATCH,
        ends_session=True,
    )


def not_stopped(state: int, stamp_count: int, stamps_at_stop: int | None, *,
                acked: bool = True, started: bool = True) -> Verdict:
    """H3: a TELEMETRY from STOP_SETTLE_US after a STOP or ESTOP was sent must show the
    pen stopped: not STAMPING, at most STOP_STROKE_SLACK strokes since the stop. A
    counter that went backwards (a reboot) is not strokes. `acked`: the pen ACKed the
    stop (else the words say the link may have lost it); `started`: the host has sent
    a START since it connected (else the pen stamps on its own: the first HELLO holds
    it as a stop would). The verdict is the same."""
    strokes = 0 if stamps_at_stop is None else (stamp_count - stamps_at_stop) & _U32
    if state != _STAMPING and not STOP_STROKE_SLACK < strokes < 0x8000_0000:
        return OK
    what = "reports STAMPING" if state == _STAMPING else f"made {strokes} strokes"
    if not started:
        why = "though the host has not told it to start"
    else:
        why = f"more than {STOP_SETTLE_US // 1000} ms after it was told to stop" + (
            "" if acked else
            ", which it has not acknowledged (the link may be losing frames: check the cable)")
    return Verdict(
        Action.ESTOP,
        f"the pen {what} {why}: switch the pen off now",
        EstopReason.NOT_STOPPED,
        ends_session=True,
    )


def identity_problem(
    proto: int,
    serial_number: int,
    cartridge_id: int,
    session_serial: int | None,
    session_cartridge_id: int | None,
) -> str | None:
    """H4: why this DEVICE_INFO is not the pen (and cartridge) of this session.

    Another protocol version is refused before anything is configured; after a
    reconnect, another serial number or another cartridge is refused.
    """
    if proto != PEN_PROTO:
        return (
            f"the pen speaks protocol version {proto}; this host speaks only "
            f"version {PEN_PROTO}"
        )
    if session_serial is not None and serial_number != session_serial:
        return (
            f"pen {serial_number} answered, not pen {session_serial} of this session; "
            "reconnect the session's pen"
        )
    if session_cartridge_id is not None and cartridge_id != session_cartridge_id:
        return (
            f"the pen holds cartridge {cartridge_id}, not cartridge {session_cartridge_id} "
            "of this session"
        )
    return None


def second_overdepth(cartridge_id: int) -> str:
    """H5's message: the session ends, and the cartridge is recorded as failed."""
    return (
        f"over-depth {OVERDEPTHS_PER_SESSION} times in one session: the session ends "
        f"in FAULT, and cartridge {cartridge_id} is recorded as failed"
    )


def in_tolerance_band(depth_meas_um: int) -> bool:
    """A stroke measured over the cap, but not over the ESTOP limit: counted."""
    return DEPTH_CAP_UM < depth_meas_um <= OVERDEPTH_LIMIT_UM


def tolerance_text(count: int) -> str:
    return (
        f"{count} strokes measured {DEPTH_CAP_UM + 1}-{OVERDEPTH_LIMIT_UM} µm so far "
        f"(above the {DEPTH_CAP_UM} µm cap, within the {OVERDEPTH_MARGIN_UM} µm tolerance)"
    )


def is_shallow_stroke(depth_meas_um: int, commanded_depth_um: int) -> bool:
    """SENSOR_SUSPECT, one stroke: measured far below what the host commanded."""
    return depth_meas_um + SENSOR_SUSPECT_SHORTFALL_UM < commanded_depth_um


def sensor_suspect_text(commanded_depth_um: int) -> str:
    return (
        f"measured depth more than {SENSOR_SUSPECT_SHORTFALL_UM} µm below the commanded "
        f"{commanded_depth_um} µm for {SENSOR_SUSPECT_STROKES} strokes in a row in "
        "contact: the depth sensor may read low, or the needle does not come out; "
        "check the pen and the cartridge"
    )


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
