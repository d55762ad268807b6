"""`devicectl ports` and `devicectl wire decode|encode|spy`: the link on the bench.

Decode and encode turn hex to the spec's messages and back, one JSON object a
line; spy opens a port and prints what the pen sends, frame by frame. Signed
frames show their "counter", and "tag_ok" (null unless --session-key is given).
"""

from __future__ import annotations

import argparse
import hmac
import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from devicectl.commands import seconds, whole_number
from devicectl.errors import DevicectlError, ProtocolError
from devicectl.link import DEFAULT_BAUDRATE, list_serial_ports, open_transport
from devicectl.protocol import (
    BY_NAME,
    Decoder,
    Discard,
    Frame,
    Unknown,
    encode,
    message_from_fields,
    message_to_dict,
)
from devicectl.safety import assert_sendable
from devicectl.signing import HOST, KEY_BYTES, SecureSession, direction_of

_HEX_SEPARATORS = re.compile(r"[\s:,]+")
_READ_BYTES = 4096
_READ_TIMEOUT_S = 0.1


def register(subparsers: Any) -> None:
    ports = subparsers.add_parser("ports", help="list serial ports, marking the likely pen")
    ports.set_defaults(func=run_ports)

    wire = subparsers.add_parser("wire", help="decode, encode or spy on pen-link frames")
    sub = wire.add_subparsers(dest="wire_command", required=True, metavar="ACTION")

    dec = sub.add_parser(
        "decode",
        help="hex frames to JSON lines (from arguments, else stdin)",
        description="Decode hex (spaces, newlines, colons and 0x prefixes allowed) into "
        "one JSON object per frame; a thrown-away frame prints {'discarded': reason}. "
        "The end of the input ends the last frame.",
    )
    dec.add_argument("hex", nargs="*", help="hex bytes; read from stdin when absent")
    dec.add_argument("--session-key", metavar="HEX",
                     help="a secure session's key K_s (64 hex digits): check signed frames' tags")
    dec.add_argument("--from", dest="from_file", metavar="FILE", default=None,
                     help="a raw binary capture (bytes as read off the port) instead of hex; "
                     "decoded column-wise, fast for large captures")
    dec.set_defaults(func=run_decode, usage=dec.format_usage)

    enc = sub.add_parser(
        "encode",
        help="one message to a hex frame",
        description=f"Encode TYPE ({', '.join(sorted(BY_NAME))}) with field=value "
        "pairs (decimal or 0x hex) into a frame, printed as hex.",
    )
    enc.add_argument("type", metavar="TYPE")
    enc.add_argument("fields", nargs="*", metavar="FIELD=VALUE")
    enc.add_argument("--seq", type=int, default=0, help="sequence number (default 0)")
    enc.add_argument("--flags", type=int, default=None, help="flags (default per the spec)")
    enc.set_defaults(func=run_encode)

    spy = sub.add_parser("spy", help="decode live traffic from a port")
    spy.add_argument("port", help="device path, pseudo-terminal or pyserial URL")
    spy.add_argument("--json", action="store_true", help="print JSON lines")
    spy.add_argument("--baud", type=whole_number, default=DEFAULT_BAUDRATE, help="UART baud rate")
    spy.add_argument("--count", type=whole_number, default=None, help="stop after N frames")
    spy.add_argument("--duration", type=seconds, default=None, help="stop after S seconds")
    spy.add_argument("--session-key", metavar="HEX",
                     help="a secure session's key K_s (64 hex digits): check signed frames' tags")
    spy.set_defaults(func=run_spy)


# --- ports -------------------------------------------------------------------


NO_PEN = ("no pen found: is it plugged in (USB) and switched on? "
          "A port not marked here can still be given to `devicectl run --port PATH`.")


def run_ports(args: argparse.Namespace) -> int:
    ports = list_serial_ports()
    if not ports:
        print("no serial ports found")
        print(NO_PEN)
        return 0
    rows = [("PORT", "DESCRIPTION", "HARDWARE ID", "PEN?")] + [
        (p.device, p.description or "-", p.hwid or "-", "likely pen" if p.likely_pen else "")
        for p in ports
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        cells = [f"{c:<{w}}" for c, w in zip(r, widths, strict=False)] + [r[3]]
        print("  ".join(cells).rstrip())
    if not any(p.likely_pen for p in ports):
        print(NO_PEN)
    return 0


# --- decode ------------------------------------------------------------------


def parse_hex(text: str) -> bytes:
    """Bytes from hex with any spaces, newlines, colons or 0x prefixes."""
    digits = []
    for token in _HEX_SEPARATORS.split(text):
        if token[:2].lower() == "0x":
            token = token[2:]
        digits.append(token)
    joined = "".join(digits)
    bad = re.search(r"[^0-9a-fA-F]", joined)
    if bad is not None:
        raise DevicectlError(
            f"{bad.group()!r} is not a hex digit; give bytes like `04 01 42 09` or `04:01:42`"
        )
    if len(joined) % 2:
        raise DevicectlError(
            f"the hex input has an odd number of digits ({len(joined)}); a byte is two digits"
        )
    return bytes.fromhex(joined)


def decode_events(decoder: Decoder, data: bytes) -> Iterator[Frame | Discard]:
    """Frames and discards, in stream order (the decoder only counts discards)."""
    pieces = data.split(b"\x00")
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        chunk = piece + b"\x00" if i < last else piece
        if not chunk:
            continue
        before = dict(decoder.discarded)
        yield from decoder.feed(chunk)
        for reason, count in decoder.discarded.items():
            for _ in range(count - before[reason]):
                yield reason


class TagChecker:
    """Checks signed frames' tags with one session key, in the direction each type travels."""

    def __init__(self, key_hex: str | None) -> None:
        self._session: SecureSession | None = None
        if key_hex is not None:
            key = parse_hex(key_hex)
            if len(key) != KEY_BYTES:
                raise DevicectlError(
                    f"--session-key is {len(key)} bytes; K_s is 32 (64 hex digits)"
                )
            self._session = SecureSession(key, HOST)

    def tag_ok(self, frame: Frame) -> bool | None:
        if self._session is None or frame.counter is None:
            return None
        msg = frame.message
        code = msg.type_code if isinstance(msg, Unknown) else int(msg.TYPE)
        want = self._session.tag(direction_of(code), frame.head, frame.counter)
        return hmac.compare_digest(want, frame.tag)


_NO_KEY = TagChecker(None)


def frame_to_dict(frame: Frame, tags: TagChecker = _NO_KEY) -> dict[str, Any]:
    fields = message_to_dict(frame.message)
    out = {"type": fields.pop("type"), "seq": frame.seq, "flags": frame.flags, **fields}
    if frame.counter is not None:
        out["counter"] = frame.counter
        out["tag_ok"] = tags.tag_ok(frame)
    return out


def event_to_dict(event: Frame | Discard, tags: TagChecker = _NO_KEY) -> dict[str, Any]:
    if isinstance(event, Discard):
        return {"discarded": event.value}
    return frame_to_dict(event, tags)


def run_decode(args: argparse.Namespace) -> int:
    if args.from_file is not None:
        return _decode_file(args)
    if not args.hex and sys.stdin.isatty():
        # Nothing given and nothing piped: waiting on the keyboard would look like a hang.
        print(args.usage().rstrip(), file=sys.stderr)
        print("give hex bytes as arguments, e.g. `devicectl wire decode 04 01 42 09`, "
              "or pipe them in: `xxd -p capture.bin | devicectl wire decode`", file=sys.stderr)
        return 1  # a user's mistake, as a usage error is
    text = " ".join(args.hex) if args.hex else sys.stdin.read()
    data = parse_hex(text)
    if data and not data.endswith(b"\x00"):
        data += b"\x00"  # the end of the input ends the last frame
    tags = TagChecker(args.session_key)
    decoder = Decoder()
    for event in decode_events(decoder, data):
        print(json.dumps(event_to_dict(event, tags)))
    return 0


def _decode_file(args: argparse.Namespace) -> int:
    """`--from FILE`: a raw capture, decoded by columns (devicectl/columnar.py)."""
    from devicectl.columnar import decode_stream

    if args.hex:
        raise DevicectlError("give either hex bytes or --from FILE, not both")
    try:
        with open(args.from_file, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DevicectlError(f"cannot read the capture {args.from_file}: {exc.strerror}") from None
    if data and not data.endswith(b"\x00"):
        data += b"\x00"  # the end of the input ends the last frame
    if args.session_key is not None:  # tags need the key and an HMAC per frame
        tags = TagChecker(args.session_key)
        events = [event_to_dict(e, tags) for e in decode_events(Decoder(), data)]
    else:
        events = decode_stream(data).events
    sys.stdout.writelines(json.dumps(e) + "\n" for e in events)
    return 0


# --- encode ------------------------------------------------------------------


def parse_field(text: str) -> tuple[str, str]:
    """FIELD=VALUE; the value is checked against the field (integer, or hex bytes)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ProtocolError(f"{text!r} is not FIELD=VALUE, e.g. depth_um=1200")
    return name, value


def run_encode(args: argparse.Namespace) -> int:
    values = dict(parse_field(f) for f in args.fields)
    message = message_from_fields(args.type, values)
    # a frame printed here can be written to a pen's port: the same last gate as the
    # link's (no SET_TARGET above the cap is framed, whoever asks)
    assert_sendable(message)
    print(encode(message, args.seq, args.flags).hex(" "))
    return 0


# --- spy ---------------------------------------------------------------------


def spy_line(elapsed_s: float, event: Frame | Discard, tags: TagChecker = _NO_KEY) -> str:
    """One readable line: seconds since the start, direction, type, fields."""
    if isinstance(event, Discard):
        return f"{elapsed_s:9.3f} rx discarded ({event.value})"
    fields = frame_to_dict(event, tags)
    kind = fields.pop("type")
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"{elapsed_s:9.3f} rx {kind} {text}"


def run_spy(args: argparse.Namespace) -> int:
    tags = TagChecker(args.session_key)
    decoder = Decoder()
    seen = 0
    start_s = time.monotonic()
    with open_transport(args.port, baudrate=args.baud) as port:
        try:
            while args.count is None or seen < args.count:
                elapsed_s = time.monotonic() - start_s
                if args.duration is not None and elapsed_s >= args.duration:
                    break
                data = port.read(_READ_BYTES, _READ_TIMEOUT_S)
                elapsed_s = time.monotonic() - start_s
                for event in decode_events(decoder, data):
                    if args.json:
                        line = json.dumps(
                            {"t_s": round(elapsed_s, 6), **event_to_dict(event, tags)}
                        )
                    else:
                        line = spy_line(elapsed_s, event, tags)
                    print(line, flush=True)
                    if isinstance(event, Frame):
                        seen += 1
                        if args.count is not None and seen >= args.count:
                            break
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a bench session ends
    print(
        f"{decoder.frames} frames, {decoder.bad_frames} discarded from {args.port}",
        file=sys.stderr,
    )
    return 0
