"""The `devicectl` subcommands, one module each: `register(subparsers)` adds them; here,
the argument types more than one of them shares."""

from __future__ import annotations

import argparse
import math

from devicectl.plain import control_at, escape_controls


def web_port(text: str) -> int:
    """argparse's type for --web-port: a TCP port, 0-65535 (0: any free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; give 0-65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number; give 0-65535")
    return port


def sim_speed(text: str) -> float:
    """argparse's type for the simulator's --speed: times real time, finite and ≥ 0."""
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a speed; give a number ≥ 0 "
                                         "(0 = as fast as possible)") from None
    if not math.isfinite(speed) or speed < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a speed; give a number ≥ 0 "
                                         "(0 = as fast as possible)")
    return speed


def _whole_in(text: str, low: int, high: int | None, refusal: str) -> int:
    """`text` as a whole number from `low` to `high` (None: no bound), else `refusal`."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(refusal) from None
    if number < low or (high is not None and number > high):
        raise argparse.ArgumentTypeError(refusal)
    return number


def whole_number(text: str) -> int:
    """argparse's type for a count (--limit, --count) or a rate (--baud): a whole number ≥ 1."""
    return _whole_in(text, 1, None, f"{text!r} is not a whole number ≥ 1")


#: The largest id the records can hold (SQLite's INTEGER, PostgreSQL's bigint).
MAX_SESSION_ID = 2**63 - 1


def session_id(text: str) -> int:
    """argparse's type for a session id: a whole number from 1 to what the records hold
    (a larger one cannot even be looked up: the database refuses the number itself)."""
    return _whole_in(text, 1, MAX_SESSION_ID,
                     f"{text!r} is not a session id; `devicectl sessions list` shows them")


def seconds(text: str) -> float:
    """argparse's type for a duration in seconds: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; give seconds above 0")
    return value


def pen_serial(text: str) -> int:
    """argparse's type for a pen's serial number: DEVICE_INFO's u32, 0 to 4294967295."""
    return _whole_in(text, 0, 0xFFFF_FFFF,
                     f"{text!r} is not a pen's serial number; give a whole number 0 to 4294967295")


def utf8_text(value: str) -> str:
    """argparse's type for text that is recorded or served (a room, a reason, a note, an
    address): UTF-8, as the records' chain and the pages encode it. argv hands bytes
    that are not UTF-8 over as surrogate escapes, which nothing downstream can write.

    And one line of printable text: a control character (an ESC sequence, CR, NUL, a
    newline) is refused, not escaped. Recorded, it would be shown again for years by
    every view, export, report and database client, each of which would have to escape
    it; nobody means one in a room, a name or a note."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = value[exc.start].encode("utf-8", "surrogateescape")[0]
        raise argparse.ArgumentTypeError(
            f"not UTF-8 text (byte 0x{byte:02x} at character {exc.start + 1}); "
            "type it again in a UTF-8 terminal") from None
    at = control_at(value)
    if at is not None:
        raise argparse.ArgumentTypeError(
            f"a control character ({escape_controls(value[at])}) at character {at + 1}; "
            "give one line of printable text")
    return value
