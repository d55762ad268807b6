"""Sans-I/O codec for the pen link, version 1 (shared/spec/pen-protocol.md).

Theory of operation: `encode(message, seq)` turns one typed message into one
frame, `COBS(packet) 0x00`, ready for the wire. A `Decoder` is fed bytes in any
chunking and returns the complete frames they finish, as `Frame(seq, flags,
message)`. It never raises on what it is fed and never holds more than one
maximal frame of partial input; what it throws away it counts, by reason.

A frame with a valid CRC and an unknown type is not thrown away: it comes out
as `Unknown`, because the pen must NACK it (UNKNOWN_TYPE) when it asks for an
ACK. It is counted under `unknown_type` as well. A packet shorter than 6 or
longer than 64 bytes is a length discard whatever its type (spec 1.1).
"""

from __future__ import annotations

import binascii
import enum
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final

from cobs import cobs

from devicectl.errors import ProtocolError

PROTO_VERSION: Final = 1
MAX_PACKET: Final = 64
MAX_ENCODED: Final = 66  # COBS adds one byte per 254, plus the first code byte
HEADER: Final = struct.Struct("<BBBB")
CRC_INIT: Final = 0xFFFF
FLAG_ACK_REQ: Final = 0x01
POSITION_UNKNOWN: Final = 32767


class MsgType(enum.IntEnum):
    HELLO = 0x01
    HEARTBEAT = 0x02
    CONFIGURE = 0x03
    SET_TARGET = 0x04
    START = 0x05
    STOP = 0x06
    ESTOP = 0x07
    CLEAR_FAULT = 0x08
    ACK = 0x40
    DEVICE_INFO = 0x41
    TELEMETRY = 0x42
    FAULT = 0x43
    EVENT = 0x44


class PenState(enum.IntEnum):
    BOOT = 0
    IDLE = 1
    READY = 2
    STAMPING = 3
    FAULT = 4


class FaultBit(enum.IntEnum):
    """Bit numbers of `fault_flags`; `1 << bit` is the flag."""

    OVERDEPTH = 0
    STALL = 1
    SENSOR = 2
    WATCHDOG = 3
    LOW_BATTERY = 4
    ESTOP = 5
    CARTRIDGE = 6
    OVERTEMP = 7
    LINK = 8


class Nack(enum.IntEnum):
    OK = 0
    BAD_STATE = 1
    DEPTH_LIMIT = 2
    RATE_LIMIT = 3
    FAULT_ACTIVE = 4
    UNKNOWN_TYPE = 5
    BAD_ARG = 6
    CARTRIDGE = 7


class PenEvent(enum.IntEnum):
    BUTTON_PAUSE = 1
    BUTTON_RESUME = 2
    BUTTON_NEXT_ZONE = 3
    CONTACT_LOST = 4
    CONTACT_MADE = 5
    CARTRIDGE_REMOVED = 6
    CARTRIDGE_INSERTED = 7


class Capability(enum.IntFlag):
    POSITION = 1
    CONTACT = 2


def fault_names(flags: int) -> list[str]:
    """The names of the faults set in `fault_flags`, lowest bit first."""
    return [b.name for b in FaultBit if flags & (1 << b)]


# --- messages -------------------------------------------------------------
# One frozen, slotted dataclass per type; fields in the spec's body order.
# `TYPE` and `FORMAT` tie each class to its row of the spec's tables.


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[MsgType] = MsgType.HELLO
    FORMAT: ClassVar[str] = "<HI"
    host_proto: int
    nonce: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    FORMAT: ClassVar[str] = "<I"
    host_ms: int


@dataclass(frozen=True, slots=True)
class Configure:
    TYPE: ClassVar[MsgType] = MsgType.CONFIGURE
    FORMAT: ClassVar[str] = "<HH"
    telemetry_hz: int
    watchdog_ms: int


@dataclass(frozen=True, slots=True)
class SetTarget:
    TYPE: ClassVar[MsgType] = MsgType.SET_TARGET
    FORMAT: ClassVar[str] = "<HHB"
    depth_um: int
    rate_dhz: int
    zone_id: int


@dataclass(frozen=True, slots=True)
class Start:
    TYPE: ClassVar[MsgType] = MsgType.START
    FORMAT: ClassVar[str] = "<"


@dataclass(frozen=True, slots=True)
class Stop:
    TYPE: ClassVar[MsgType] = MsgType.STOP
    FORMAT: ClassVar[str] = "<"


@dataclass(frozen=True, slots=True)
class Estop:
    TYPE: ClassVar[MsgType] = MsgType.ESTOP
    FORMAT: ClassVar[str] = "<B"
    reason: int


@dataclass(frozen=True, slots=True)
class ClearFault:
    TYPE: ClassVar[MsgType] = MsgType.CLEAR_FAULT
    FORMAT: ClassVar[str] = "<"


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[MsgType] = MsgType.ACK
    FORMAT: ClassVar[str] = "<BBB"
    acked_seq: int
    acked_type: int
    status: int


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    TYPE: ClassVar[MsgType] = MsgType.DEVICE_INFO
    FORMAT: ClassVar[str] = "<IHHIHHHBBIIH"
    nonce: int
    proto: int
    fw_version: int
    serial_number: int
    max_depth_um: int
    min_rate_dhz: int
    max_rate_dhz: int
    needle_count: int
    capabilities: int
    cartridge_id: int
    cartridge_stamps: int
    footprint_dmm: int


@dataclass(frozen=True, slots=True)
class Telemetry:
    TYPE: ClassVar[MsgType] = MsgType.TELEMETRY
    FORMAT: ClassVar[str] = "<IBHHHHIhhBBH"
    t_us: int
    state: int
    fault_flags: int
    depth_cmd_um: int
    depth_meas_um: int
    rate_meas_dhz: int
    stamp_count: int
    x_dmm: int
    y_dmm: int
    contact: int
    zone_id: int
    battery_mv: int


@dataclass(frozen=True, slots=True)
class Fault:
    TYPE: ClassVar[MsgType] = MsgType.FAULT
    FORMAT: ClassVar[str] = "<HBH"
    fault_flags: int
    code: int
    detail: int


@dataclass(frozen=True, slots=True)
class Event:
    TYPE: ClassVar[MsgType] = MsgType.EVENT
    FORMAT: ClassVar[str] = "<BI"
    event: int
    t_us: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """A frame of a type this version does not define (valid CRC, kept for NACK)."""

    type_code: int
    body: bytes


Message = (
    Hello
    | Heartbeat
    | Configure
    | SetTarget
    | Start
    | Stop
    | Estop
    | ClearFault
    | Ack
    | DeviceInfo
    | Telemetry
    | Fault
    | Event
)
MESSAGE_CLASSES: Final[tuple[type[Any], ...]] = (
    Hello,
    Heartbeat,
    Configure,
    SetTarget,
    Start,
    Stop,
    Estop,
    ClearFault,
    Ack,
    DeviceInfo,
    Telemetry,
    Fault,
    Event,
)
BY_TYPE: Final[dict[int, type[Any]]] = {cls.TYPE: cls for cls in MESSAGE_CLASSES}
BY_NAME: Final[dict[str, type[Any]]] = {cls.TYPE.name: cls for cls in MESSAGE_CLASSES}
HOST_TYPES: Final = frozenset(t for t in BY_TYPE if t < 0x40)
PEN_TYPES: Final = frozenset(t for t in BY_TYPE if t >= 0x40)
#: Types the host sends with ACK_REQ (spec: CONFIGURE … CLEAR_FAULT).
ACK_REQ_TYPES: Final = frozenset(range(MsgType.CONFIGURE, MsgType.CLEAR_FAULT + 1))

_RANGES: Final = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "I": (0, 0xFFFF_FFFF),
    "h": (-0x8000, 0x7FFF),
}


def field_names(cls: type[Any]) -> tuple[str, ...]:
    """The body fields of a message class, in wire order."""
    return tuple(f.name for f in fields(cls))


def field_ranges(cls: type[Any]) -> dict[str, tuple[int, int]]:
    """Each body field's wire range, inclusive."""
    return {n: _RANGES[c] for n, c in zip(field_names(cls), cls.FORMAT[1:], strict=True)}


def _twin_class(cls: type[Any]) -> type[Any]:
    """A plain class with exactly `cls`'s slots: the same memory layout, no freezing."""
    slots = field_names(cls)
    twin: type[Any] = type(f"_{cls.__name__}Builder", (), {"__slots__": slots})
    return twin


def _frame_builder(cls: type[Any]) -> Callable[[tuple[int, ...]], Frame]:
    """A builder of `Frame(seq, flags, cls(...))` from one unpacked packet tuple.

    Why not `cls(*values)`: a frozen dataclass's `__init__` calls
    `object.__setattr__` once per field, over a microsecond for TELEMETRY, and
    the decoder does it for every frame. Instead the object is filled as a
    plain twin class with the same slots (ordinary attribute stores, which the
    interpreter specialises) and then given its real class; the two layouts
    are identical, so CPython allows the `__class__` assignment. The result is
    an ordinary frozen instance (tests/test_protocol.py checks equality, type,
    hash and frozenness against the constructor). The tuple is the whole
    packet unpacked: header, body, CRC; body fields start at index 4.
    """
    names = field_names(cls)
    namespace: dict[str, Any] = {
        "_twin": _twin_class(cls),
        "_cls": cls,
        "_frame_twin": _FRAME_TWIN,
        "_frame": Frame,
    }
    lines = ["def make(v):", " m = _twin()"]
    lines += [f" m.{name} = v[{i + 4}]" for i, name in enumerate(names)]
    lines += [
        " m.__class__ = _cls",
        " f = _frame_twin()",
        " f.seq = v[2]",
        " f.flags = v[3]",
        " f.message = m",
        " f.__class__ = _frame",
        " return f",
    ]
    exec("\n".join(lines), namespace)  # names come from our own dataclasses only
    make: Callable[[tuple[int, ...]], Frame] = namespace["make"]
    return make


def _values_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A C-speed getter of a message's field values as a tuple, in wire order."""
    if not names:
        return lambda message: ()
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda message: (one(message),)
    many: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    return many


@dataclass(frozen=True, slots=True)
class _Codec:
    body: struct.Struct  # body only
    packet: struct.Struct  # header + body + CRC, for one-call decoding
    head_body: struct.Struct  # header + body, for one-call encoding
    values: Callable[[Any], tuple[Any, ...]]
    names: tuple[str, ...]


def _codec(cls: type[Any]) -> _Codec:
    body = cls.FORMAT[1:]
    return _Codec(
        struct.Struct(cls.FORMAT),
        struct.Struct("<BBBB" + body + "H"),
        struct.Struct("<BBBB" + body),
        _values_getter(field_names(cls)),
        field_names(cls),
    )


_CODECS: Final[dict[int, _Codec]] = {t: _codec(cls) for t, cls in BY_TYPE.items()}


# --- encoding -------------------------------------------------------------


def default_flags(message: Message) -> int:
    """The flags the spec gives a message: ACK_REQ for CONFIGURE … CLEAR_FAULT."""
    return FLAG_ACK_REQ if message.TYPE in ACK_REQ_TYPES else 0


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


def encode_packet(message: Message, seq: int, flags: int | None = None) -> bytes:
    """The packet (header, body, CRC) of `message`, before COBS framing."""
    if flags is None:
        flags = FLAG_ACK_REQ if message.TYPE in ACK_REQ_TYPES else 0
    if not (0 <= seq <= 0xFF and 0 <= flags <= 0xFF):
        raise ProtocolError(f"seq {seq} and flags {flags} must each be from 0 to 255")
    codec = _CODECS[message.TYPE]
    try:
        head = codec.head_body.pack(PROTO_VERSION, message.TYPE, seq, flags, *codec.values(message))
    except struct.error:
        raise _range_error(message) from None
    return head + binascii.crc_hqx(head, CRC_INIT).to_bytes(2, "little")


def encode(message: Message, seq: int, flags: int | None = None) -> bytes:
    """One frame on the wire: `COBS(packet) 0x00`. Flags default per the spec."""
    return bytes(cobs.encode(encode_packet(message, seq, flags))) + b"\x00"


_TELEMETRY_HEAD: Final = _CODECS[MsgType.TELEMETRY].head_body
_cobs_encode: Final[Callable[[bytes], bytes]] = cobs.encode
_crc: Final = binascii.crc_hqx


def encode_telemetry(seq: int, values: tuple[int, ...]) -> bytes:
    """`encode(Telemetry(*values), seq)` without building the message: the same bytes.

    The simulated pen sends a TELEMETRY every millisecond; building the frozen
    dataclass only to take its fields apart again costs more than the encoding.
    `values` are Telemetry's fields in wire order. Out-of-range values raise the
    same ProtocolError as `encode`.
    """
    try:
        head = _TELEMETRY_HEAD.pack(PROTO_VERSION, MsgType.TELEMETRY, seq, 0, *values)
    except struct.error:
        return encode(Telemetry(*values), seq)  # raises the located error (or fits after all)
    return _cobs_encode(head + _crc(head, CRC_INIT).to_bytes(2, "little")) + b"\x00"


def encode_raw(type_code: int, body: bytes, seq: int, flags: int) -> bytes:
    """A frame of any type and body, valid CRC: for tests of the receiver's rules."""
    head = HEADER.pack(PROTO_VERSION, type_code, seq, flags) + body
    packet = head + binascii.crc_hqx(head, CRC_INIT).to_bytes(2, "little")
    return bytes(cobs.encode(packet)) + b"\x00"


# --- decoding -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    flags: int
    message: Message | Unknown

    @property
    def ack_req(self) -> bool:
        return bool(self.flags & FLAG_ACK_REQ)


_FRAME_TWIN: Final = _twin_class(Frame)

#: What the CRC register holds after a whole packet whose CRC field is `c` and
#: correct: the register update over two fixed bytes is a bijection, so
#: `crc(packet) == _CRC_RESIDUE[c]` exactly when `crc(packet[:-2]) == c`. Saves
#: slicing the packet on the hot path. The map is linear in `c` (no xorout), so
#: it is built from its values on the low and the high byte alone.
_RESIDUE_LO: Final = [binascii.crc_hqx(bytes((c, 0)), c) for c in range(0x100)]
_RESIDUE_HI: Final = [binascii.crc_hqx(bytes((0, c)), c << 8) for c in range(0x100)]
_CRC_RESIDUE: Final[list[int]] = [hi ^ lo for hi in _RESIDUE_HI for lo in _RESIDUE_LO]

#: (packet length << 8 | type) -> (unpack of the whole packet, Frame builder).
_Unpack = Callable[[bytes], tuple[int, ...]]
_Build = Callable[[tuple[int, ...]], Frame]
_FAST: Final[dict[int, tuple[_Unpack, _Build]]] = {
    (c.packet.size << 8) | t: (c.packet.unpack, _frame_builder(BY_TYPE[t]))
    for t, c in _CODECS.items()
}


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
            out = self._decode_chunks(chunks)
            self._partial = tail
        else:
            self._partial += tail
        if len(self._partial) > MAX_ENCODED:
            self._partial = b""
            self._overflow = True
        return out

    def _decode_chunks(self, chunks: list[bytes]) -> list[Frame]:
        """The hot path: well-formed frames of known types in one unpack each.

        Anything unusual (too long, bad COBS, short, bad CRC or version, unknown
        type, wrong length) goes to `decode_chunk`, which classifies and counts
        it in the spec's order; this loop only takes chunks it fully checks.
        """
        out: list[Frame] = []
        append = out.append
        fast = _FAST
        residue = _CRC_RESIDUE
        cobs_decode = cobs.decode
        decode_error = cobs.DecodeError
        crc = binascii.crc_hqx
        slow = self.decode_chunk
        good = 0
        for chunk in chunks:
            if not chunk:
                continue
            if len(chunk) <= MAX_ENCODED:
                try:
                    packet = cobs_decode(chunk)
                except decode_error:
                    packet = b""
                n = len(packet)
                if n >= 6:
                    entry = fast.get(n << 8 | packet[1])
                    if entry is not None:
                        unpack, build = entry
                        values = unpack(packet)
                        if (
                            crc(packet, CRC_INIT) == residue[values[-1]]
                            and values[0] == PROTO_VERSION
                        ):
                            append(build(values))
                            good += 1
                            continue
            frame = slow(chunk)
            if frame is not None:
                append(frame)
        self.frames += good
        return out

    def decode_chunk(self, chunk: bytes) -> Frame | None:
        """One chunk between delimiters to a frame, or None (and counted)."""
        if len(chunk) > MAX_ENCODED:
            self.discarded[Discard.TOO_LONG] += 1
            return None
        try:
            packet = cobs.decode(chunk)
        except cobs.DecodeError:
            self.discarded[Discard.COBS] += 1
            return None
        n = len(packet)
        if n < 6 or n > MAX_PACKET:  # spec 1.1, clarification 1: whatever its type
            self.discarded[Discard.LENGTH] += 1
            return None
        if binascii.crc_hqx(packet[:-2], CRC_INIT) != packet[-2] | (packet[-1] << 8):
            self.discarded[Discard.CRC] += 1
            return None
        if packet[0] != PROTO_VERSION:
            self.discarded[Discard.VERSION] += 1
            return None
        codec = _CODECS.get(packet[1])
        if codec is None:
            self.unknown_type += 1
            self.frames += 1
            return Frame(packet[2], packet[3], Unknown(packet[1], bytes(packet[4:-2])))
        if n != codec.packet.size:
            self.discarded[Discard.LENGTH] += 1
            return None
        self.frames += 1
        unpack, build = _FAST[n << 8 | packet[1]]
        return build(unpack(packet))


def message_to_dict(message: Message | Unknown) -> dict[str, Any]:
    """The message as a JSON-ready dict with the spec's names: {"type": ..., fields}."""
    if isinstance(message, Unknown):
        return {"type": f"0x{message.type_code:02x}", "body": message.body.hex()}
    out: dict[str, Any] = {"type": message.TYPE.name}
    for name in field_names(type(message)):
        out[name] = getattr(message, name)
    return out


def message_from_fields(type_name: str, values: dict[str, int]) -> Message:
    """Build a message from its spec name and field values; names every mistake."""
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
    message: Message = cls(**{n: values[n] for n in names})
    return message
