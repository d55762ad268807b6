"""Sans-I/O codec for the pen link, version 1 (shared/spec/pen-protocol.md, revision 1.1).

Theory of operation: `encode(message, seq)` turns one typed message into one
frame, `COBS(packet) 0x00`, ready for the wire. A `Decoder` is fed bytes in any
chunking and returns the complete frames they finish, as `Frame(seq, flags,
message)`. It never raises on what it is fed and never holds more than one
maximal frame of partial input; what it throws away it counts, by reason.

A frame with a valid CRC and an unknown type is not thrown away: it comes out
as `Unknown`, because the pen must NACK it (UNKNOWN_TYPE) when it asks for an
ACK. It is counted under `unknown_type` as well. A packet shorter than 6 or
longer than 64 bytes is a length discard whatever its type (spec 1.1).

Signed frames (flags bit 1) carry a 12-byte trailer, `counter <I` and an 8-byte
tag, between body and CRC. The codec knows their shape only: it decodes them
into a Frame with `counter`, `tag` and `head` (the bytes the tag covers); the
keys, the tags and the counters' rules live in signing.py.
"""

from __future__ import annotations

import binascii
import enum
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final

from cobs import cobs

from devicectl.errors import ProtocolError
from devicectl.frozen import by_fields
from devicectl.messages import (
    ACK_REQ_TYPES,
    BY_NAME,
    BY_TYPE,
    MESSAGE_CLASSES,
    Ack,
    AuthBegin,
    AuthConfirm,
    AuthProof,
    Capability,
    ClearFault,
    Configure,
    DeviceInfo,
    Estop,
    Event,
    Fault,
    FaultBit,
    FwAbort,
    FwBegin,
    FwChunk,
    FwCommit,
    Heartbeat,
    Hello,
    Message,
    MsgType,
    Nack,
    PenEvent,
    PenState,
    SetTarget,
    Start,
    Stop,
    Telemetry,
    Unknown,
    fault_names,
)

__all__ = [
    "ACK_REQ_TYPES", "BY_NAME", "BY_TYPE", "CRC_INIT", "FLAG_ACK_REQ", "FLAG_SIGNED", "HEADER",
    "MAX_ENCODED", "MAX_PACKET", "MESSAGE_CLASSES", "POSITION_UNKNOWN", "PROTO_VERSION",
    "TAG_BYTES", "TRAILER_BYTES", "Ack", "AuthBegin", "AuthConfirm", "AuthProof", "Capability",
    "ClearFault", "Configure", "Decoder", "DeviceInfo", "Discard", "Estop", "Event", "Fault",
    "FaultBit", "Frame", "FwAbort", "FwBegin", "FwChunk", "FwCommit", "Heartbeat", "Hello",
    "Message", "MsgType", "Nack", "PenEvent", "PenState", "SetTarget", "Start", "Stop",
    "Telemetry", "Unknown", "encode", "encode_head", "encode_packet", "encode_raw",
    "encode_telemetry", "fault_names", "field_names", "field_ranges", "field_sizes",
    "frame_of_packet", "message_from_fields", "message_to_dict", "telemetry_head",
]

PROTO_VERSION: Final = 1
MAX_PACKET: Final = 64
MAX_ENCODED: Final = 66  # COBS adds one byte per 254, plus the first code byte
HEADER: Final = struct.Struct("<BBBB")
CRC_INIT: Final = 0xFFFF
FLAG_ACK_REQ: Final = 0x01
FLAG_SIGNED: Final = 0x02
TAG_BYTES: Final = 8
TRAILER_BYTES: Final = 4 + TAG_BYTES
POSITION_UNKNOWN: Final = 32767

_RANGES: Final = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "I": (0, 0xFFFF_FFFF),
    "h": (-0x8000, 0x7FFF),
}
_FIELD_CODE: Final = re.compile(r"(\d*)([BHIhs])")


def field_names(cls: type[Any]) -> tuple[str, ...]:
    """The body fields of a message class, in wire order."""
    return tuple(f.name for f in fields(cls))


def _codes(cls: type[Any]) -> list[tuple[str, str]]:
    """(name, struct code) per field: "H", or "16s" for a byte string."""
    codes = [n + c for n, c in _FIELD_CODE.findall(cls.FORMAT[1:])]
    return list(zip(field_names(cls), codes, strict=True))


def field_ranges(cls: type[Any]) -> dict[str, tuple[int, int]]:
    """Each integer body field's wire range, inclusive."""
    return {n: _RANGES[c] for n, c in _codes(cls) if c in _RANGES}


def field_sizes(cls: type[Any]) -> dict[str, int]:
    """Each byte-string body field's exact length on the wire."""
    return {n: int(c[:-1]) for n, c in _codes(cls) if c.endswith("s")}


@dataclass(frozen=True, slots=True)
class _Codec:
    cls: type[Any]
    packet: struct.Struct  # header + body + CRC: its size is the packet's length
    signed_packet: struct.Struct  # header + body + counter + tag + CRC
    head_body: struct.Struct  # header + body, for one-call encoding
    names: tuple[str, ...]  # body fields, wire order
    sizes: tuple[tuple[str, int], ...]  # byte-string fields: struct pads or cuts them silently


def _codec(cls: type[Any]) -> _Codec:
    body = cls.FORMAT[1:]
    return _Codec(
        cls,
        struct.Struct("<BBBB" + body + "H"),
        struct.Struct("<BBBB" + body + f"I{TAG_BYTES}sH"),
        struct.Struct("<BBBB" + body),
        field_names(cls),
        tuple(field_sizes(cls).items()),
    )


_CODECS: Final[dict[int, _Codec]] = {t: _codec(cls) for t, cls in BY_TYPE.items()}


# --- encoding -------------------------------------------------------------


def _range_error(message: Message) -> ProtocolError:
    cls = type(message)
    for name, (lo, hi) in field_ranges(cls).items():
        value = getattr(message, name)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            return ProtocolError(
                f"{cls.TYPE.name}.{name} = {value!r} cannot be sent: "
                f"it must be an integer from {lo} to {hi}"
            )
    return ProtocolError(f"{cls.TYPE.name} cannot be encoded: {message!r}")


def encode_head(message: Message, seq: int, flags: int | None = None) -> bytes:
    """Header and body of `message` (bytes 0 … 3+n of its packet). Flags default per the spec."""
    if flags is None:
        flags = FLAG_ACK_REQ if message.TYPE in ACK_REQ_TYPES else 0
    if not (0 <= seq <= 0xFF and 0 <= flags <= 0xFF):
        raise ProtocolError(f"seq {seq} and flags {flags} must each be from 0 to 255")
    codec = _CODECS[message.TYPE]
    for name, size in codec.sizes:
        value = getattr(message, name)
        if not isinstance(value, bytes) or len(value) != size:
            raise ProtocolError(
                f"{message.TYPE.name}.{name} cannot be sent: it must be exactly {size} bytes"
            )
    try:
        return codec.head_body.pack(
            PROTO_VERSION, message.TYPE, seq, flags, *[getattr(message, n) for n in codec.names]
        )
    except struct.error:
        raise _range_error(message) from None


def frame_of_packet(packet_without_crc: bytes) -> bytes:
    """The wire frame of a packet whose CRC is still to be added: `COBS(packet+CRC) 0x00`."""
    crc = _crc(packet_without_crc, CRC_INIT).to_bytes(2, "little")
    return _cobs_encode(packet_without_crc + crc) + b"\x00"


def encode_packet(message: Message, seq: int, flags: int | None = None) -> bytes:
    """The packet (header, body, CRC) of an unsigned `message`, before COBS framing."""
    head = encode_head(message, seq, flags)
    if head[3] & FLAG_SIGNED:
        raise ProtocolError(
            "flags bit 1 (SIGNED) needs a session key and a counter: a signed frame is made "
            "by signing.SecureSession.seal"
        )
    return head + _crc(head, CRC_INIT).to_bytes(2, "little")


def encode(message: Message, seq: int, flags: int | None = None) -> bytes:
    """One unsigned frame on the wire: `COBS(packet) 0x00`. Flags default per the spec."""
    return bytes(_cobs_encode(encode_packet(message, seq, flags))) + b"\x00"


_TELEMETRY_HEAD: Final = _CODECS[MsgType.TELEMETRY].head_body
_cobs_encode: Final[Callable[[bytes], bytes]] = cobs.encode
_cobs_decode: Final[Callable[[bytes], bytes]] = cobs.decode
_crc: Final = binascii.crc_hqx


def telemetry_head(seq: int, values: tuple[int, ...], flags: int = 0) -> bytes:
    """`encode_head(Telemetry(*values), seq, flags)` without building the message."""
    try:
        return _TELEMETRY_HEAD.pack(PROTO_VERSION, MsgType.TELEMETRY, seq, flags, *values)
    except struct.error:
        return encode_head(Telemetry(*values), seq, flags)  # raises the located error


def encode_telemetry(seq: int, values: tuple[int, ...]) -> bytes:
    """`encode(Telemetry(*values), seq)` without building the message: the same bytes.

    The simulated pen sends a TELEMETRY every millisecond; building the frozen
    dataclass only to take its fields apart again costs more than the encoding.
    `values` are Telemetry's fields in wire order. Out-of-range values raise the
    same ProtocolError as `encode`.
    """
    head = telemetry_head(seq, values)
    return _cobs_encode(head + _crc(head, CRC_INIT).to_bytes(2, "little")) + b"\x00"


def encode_raw(type_code: int, body: bytes, seq: int, flags: int) -> bytes:
    """A frame of any type and body, valid CRC: for tests of the receiver's rules."""
    return frame_of_packet(HEADER.pack(PROTO_VERSION, type_code, seq, flags) + body)


# --- decoding -------------------------------------------------------------


@dataclass(frozen=True, slots=True, init=False)
class Frame:
    """One decoded frame. Signed frames also carry their trailer and the bytes it covers.

    Its `__init__` is written out for the compiled build, as Telemetry's (messages.py).
    """

    seq: int
    flags: int
    message: Message | Unknown
    counter: int | None  # signed frames only
    tag: bytes
    head: bytes  # bytes 0 … 3+n of the packet: what the tag covers, with the counter

    def __init__(self, seq: int, flags: int, message: Message | Unknown,
                 counter: int | None = None, tag: bytes = b"", head: bytes = b"") -> None:
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "counter", counter)
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "head", head)

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)

    @property
    def ack_req(self) -> bool:
        return bool(self.flags & FLAG_ACK_REQ)

    @property
    def signed(self) -> bool:
        return self.counter is not None


def _telemetry_of(v: tuple[Any, ...]) -> Telemetry:
    """`Telemetry(*v[4:16])` of an unpacked TELEMETRY packet, the fields spelled out:
    compiled, one direct call, without a sliced tuple for `__init__` to parse (~0.1 µs
    of a 0.7 µs decode, docs/performance.md, "Round 6")."""
    return Telemetry(v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15])


class Discard(enum.Enum):
    """Why a chunk between delimiters was thrown away."""

    TOO_LONG = "too_long"
    COBS = "cobs"
    CRC = "crc"
    VERSION = "version"
    LENGTH = "length"


class Decoder:
    """A stream decoder: `feed(bytes) -> [Frame]`, any chunking, never raises.

    `discarded` counts thrown-away chunks by reason; `unknown_type` counts
    valid frames of undefined types (returned as `Unknown`); `frames` counts
    frames returned. Memory stays under one maximal frame of partial input.
    """

    __slots__ = ("_overflow", "_partial", "discarded", "frames", "unknown_type")

    def __init__(self) -> None:
        self._partial = b""
        self._overflow = False
        self.discarded: dict[Discard, int] = dict.fromkeys(Discard, 0)
        self.unknown_type = 0
        self.frames = 0

    @property
    def bad_frames(self) -> int:
        """All chunks thrown away, whatever the reason."""
        return sum(self.discarded.values())

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held now (never above MAX_ENCODED)."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        if not data:
            return out
        chunks = data.split(b"\x00")
        tail = chunks.pop()
        if chunks:
            first = self._partial + chunks[0]
            if self._overflow:
                self._overflow = False
                self.discarded[Discard.TOO_LONG] += 1
                first = b""
            chunks[0] = first
            self._partial = b""
            for chunk in chunks:
                if chunk:
                    frame = self.decode_chunk(chunk)
                    if frame is not None:
                        out.append(frame)
            self._partial = tail
        else:
            self._partial += tail
        if len(self._partial) > MAX_ENCODED:
            self._partial = b""
            self._overflow = True
        return out

    def decode_chunk(self, chunk: bytes) -> Frame | None:
        """One chunk between delimiters to a frame, or None (and counted)."""
        if len(chunk) > MAX_ENCODED:
            self.discarded[Discard.TOO_LONG] += 1
            return None
        try:
            packet = _cobs_decode(chunk)
        except cobs.DecodeError:
            self.discarded[Discard.COBS] += 1
            return None
        n = len(packet)
        if n < 6 or n > MAX_PACKET:  # spec 1.1, clarification 1: whatever its type
            self.discarded[Discard.LENGTH] += 1
            return None
        if _crc(packet[:-2], CRC_INIT) != packet[-2] | (packet[-1] << 8):
            self.discarded[Discard.CRC] += 1
            return None
        if packet[0] != PROTO_VERSION:
            self.discarded[Discard.VERSION] += 1
            return None
        signed = bool(packet[3] & FLAG_SIGNED)
        codec = _CODECS.get(packet[1])
        if codec is None:
            return self._unknown(packet, signed)
        layout = codec.signed_packet if signed else codec.packet
        if n != layout.size:
            self.discarded[Discard.LENGTH] += 1
            return None
        self.frames += 1
        values = layout.unpack(packet)  # header, body fields, [counter, tag,] CRC
        if codec.cls is Telemetry:
            message: Message = _telemetry_of(values)
        else:
            message = codec.cls(*values[4 : 4 + len(codec.names)])
        if not signed:
            return Frame(packet[2], packet[3], message)
        return Frame(packet[2], packet[3], message, values[-3], values[-2],
                     bytes(packet[: n - 2 - TRAILER_BYTES]))

    def _unknown(self, packet: bytes, signed: bool) -> Frame | None:
        """A valid packet of a type this version does not define: an `Unknown` frame."""
        n = len(packet)
        end = n - 2 - (TRAILER_BYTES if signed else 0)
        if end < 4:
            self.discarded[Discard.LENGTH] += 1
            return None
        self.frames += 1
        self.unknown_type += 1
        message = Unknown(packet[1], bytes(packet[4:end]))
        if not signed:
            return Frame(packet[2], packet[3], message)
        counter = int.from_bytes(packet[end : end + 4], "little")
        return Frame(packet[2], packet[3], message, counter, bytes(packet[end + 4 : n - 2]),
                     bytes(packet[:end]))


def message_to_dict(message: Message | Unknown) -> dict[str, Any]:
    """The message as a JSON-ready dict with the spec's names: {"type": ..., fields}.

    Byte strings (randoms, proofs, firmware data) are given as hex."""
    if isinstance(message, Unknown):
        return {"type": f"0x{message.type_code:02x}", "body": message.body.hex()}
    out: dict[str, Any] = {"type": message.TYPE.name}
    for name in field_names(type(message)):
        value = getattr(message, name)
        out[name] = value.hex() if isinstance(value, bytes) else value
    return out


def _field_value(cls: type[Any], name: str, value: int | str | bytes) -> int | bytes:
    size = field_sizes(cls).get(name)
    if size is None:
        if isinstance(value, int):
            return value
        try:
            return int(str(value), 0)
        except ValueError:
            raise ProtocolError(f"{cls.TYPE.name}.{name} = {value!r} is not an integer") from None
    if isinstance(value, bytes):
        return value
    try:
        return bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raise ProtocolError(
            f"{cls.TYPE.name}.{name} = {value!r} is not hex; give {size} bytes as "
            f"{2 * size} hex digits"
        ) from None


def message_from_fields(type_name: str, values: dict[str, Any]) -> Message:
    """Build a message from its spec name and field values; names every mistake.

    Integer fields take ints or decimal/0x strings; byte-string fields take hex."""
    cls = BY_NAME.get(type_name.upper())
    if cls is None:
        raise ProtocolError(
            f"unknown message type {type_name!r}; known: {', '.join(sorted(BY_NAME))}"
        )
    names = field_names(cls)
    unknown = sorted(set(values) - set(names))
    missing = [n for n in names if n not in values]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown field(s) {', '.join(unknown)}")
        if missing:
            parts.append(f"missing field(s) {', '.join(missing)}")
        raise ProtocolError(
            f"{cls.TYPE.name}: {'; '.join(parts)}; its fields are: {', '.join(names) or 'none'}"
        )
    message: Message = cls(**{n: _field_value(cls, n, values[n]) for n in names})
    return message
