"""The pen link's words: message types, states, faults, codes, and one class per message.

Plain data from the spec's tables (pen-protocol.md, revision 1.1); protocol.py
turns these into bytes and back. One frozen, slotted dataclass per type, its
fields in the spec's body order; `TYPE` and `FORMAT` tie each class to its row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from devicectl.frozen import by_fields


class MsgType(enum.IntEnum):
    HELLO = 0x01
    HEARTBEAT = 0x02
    CONFIGURE = 0x03
    SET_TARGET = 0x04
    START = 0x05
    STOP = 0x06
    ESTOP = 0x07
    CLEAR_FAULT = 0x08
    AUTH_BEGIN = 0x09
    AUTH_CONFIRM = 0x0A
    FW_BEGIN = 0x0B
    FW_CHUNK = 0x0C
    FW_COMMIT = 0x0D
    FW_ABORT = 0x0E
    ACK = 0x40
    DEVICE_INFO = 0x41
    TELEMETRY = 0x42
    FAULT = 0x43
    EVENT = 0x44
    AUTH_PROOF = 0x45


class PenState(enum.IntEnum):
    BOOT = 0
    IDLE = 1
    READY = 2
    STAMPING = 3
    FAULT = 4
    UPDATING = 5


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
    BAD_IMAGE = 8
    AUTH = 9


class PenEvent(enum.IntEnum):
    BUTTON_PAUSE = 1
    BUTTON_RESUME = 2
    BUTTON_NEXT_ZONE = 3
    CONTACT_LOST = 4
    CONTACT_MADE = 5
    CARTRIDGE_REMOVED = 6
    CARTRIDGE_INSERTED = 7
    FW_ROLLBACK = 8
    FW_UPDATED = 9


class Capability(enum.IntFlag):
    POSITION = 1
    CONTACT = 2
    AUTH = 4
    UPDATE = 8
    AUTH_REQUIRED = 16


def fault_names(flags: int) -> list[str]:
    """The names of the faults set in `fault_flags`, lowest bit first."""
    return [b.name for b in FaultBit if flags & (1 << b)]


class _Message:
    """What every message class has: `TYPE`, its row in the spec's table, and
    `FORMAT`, its body's struct format. They are set after each class body, not
    in it: mypyc (issue 1122) takes a ClassVar in a dataclass body for a field."""

    __slots__ = ()
    TYPE: ClassVar[MsgType]
    FORMAT: ClassVar[str]

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    host_proto: int
    nonce: int


Hello.TYPE, Hello.FORMAT = MsgType.HELLO, "<HI"


@dataclass(frozen=True, slots=True)
class Heartbeat(_Message):
    host_ms: int


Heartbeat.TYPE, Heartbeat.FORMAT = MsgType.HEARTBEAT, "<I"


@dataclass(frozen=True, slots=True)
class Configure(_Message):
    telemetry_hz: int
    watchdog_ms: int


Configure.TYPE, Configure.FORMAT = MsgType.CONFIGURE, "<HH"


@dataclass(frozen=True, slots=True)
class SetTarget(_Message):
    depth_um: int
    rate_dhz: int
    zone_id: int


SetTarget.TYPE, SetTarget.FORMAT = MsgType.SET_TARGET, "<HHB"


@dataclass(frozen=True, slots=True)
class Start(_Message):
    pass


Start.TYPE, Start.FORMAT = MsgType.START, "<"


@dataclass(frozen=True, slots=True)
class Stop(_Message):
    pass


Stop.TYPE, Stop.FORMAT = MsgType.STOP, "<"


@dataclass(frozen=True, slots=True)
class Estop(_Message):
    reason: int


Estop.TYPE, Estop.FORMAT = MsgType.ESTOP, "<B"


@dataclass(frozen=True, slots=True)
class ClearFault(_Message):
    pass


ClearFault.TYPE, ClearFault.FORMAT = MsgType.CLEAR_FAULT, "<"


@dataclass(frozen=True, slots=True)
class AuthBegin(_Message):
    host_random: bytes


AuthBegin.TYPE, AuthBegin.FORMAT = MsgType.AUTH_BEGIN, "<16s"


@dataclass(frozen=True, slots=True)
class AuthConfirm(_Message):
    host_proof: bytes


AuthConfirm.TYPE, AuthConfirm.FORMAT = MsgType.AUTH_CONFIRM, "<16s"


@dataclass(frozen=True, slots=True)
class FwBegin(_Message):
    image_size: int
    image_crc32: int
    fw_version: int


FwBegin.TYPE, FwBegin.FORMAT = MsgType.FW_BEGIN, "<IIH"


@dataclass(frozen=True, slots=True)
class FwChunk(_Message):
    offset: int
    data: bytes


FwChunk.TYPE, FwChunk.FORMAT = MsgType.FW_CHUNK, "<I40s"


@dataclass(frozen=True, slots=True)
class FwCommit(_Message):
    pass


FwCommit.TYPE, FwCommit.FORMAT = MsgType.FW_COMMIT, "<"


@dataclass(frozen=True, slots=True)
class FwAbort(_Message):
    pass


FwAbort.TYPE, FwAbort.FORMAT = MsgType.FW_ABORT, "<"


@dataclass(frozen=True, slots=True)
class Ack(_Message):
    acked_seq: int
    acked_type: int
    status: int


Ack.TYPE, Ack.FORMAT = MsgType.ACK, "<BBB"


@dataclass(frozen=True, slots=True)
class DeviceInfo(_Message):
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


DeviceInfo.TYPE, DeviceInfo.FORMAT = MsgType.DEVICE_INFO, "<IHHIHHHBBIIH"


@dataclass(frozen=True, slots=True, init=False)
class Telemetry(_Message):
    """The pen's report, a thousand a second: its `__init__` is written out, not generated.

    Compiled, a dataclass's generated `__init__` stays interpreted Python (1.3 µs,
    most of a decode); this one compiles to twelve stores (~0.1 µs). Equality,
    hashing, repr, `fields()` and frozenness are still the dataclass's: each field
    is set the way a frozen dataclass sets it, through `object.__setattr__`.
    """

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

    def __init__(self, t_us: int, state: int, fault_flags: int, depth_cmd_um: int,
                 depth_meas_um: int, rate_meas_dhz: int, stamp_count: int, x_dmm: int,
                 y_dmm: int, contact: int, zone_id: int, battery_mv: int) -> None:
        object.__setattr__(self, "t_us", t_us)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "fault_flags", fault_flags)
        object.__setattr__(self, "depth_cmd_um", depth_cmd_um)
        object.__setattr__(self, "depth_meas_um", depth_meas_um)
        object.__setattr__(self, "rate_meas_dhz", rate_meas_dhz)
        object.__setattr__(self, "stamp_count", stamp_count)
        object.__setattr__(self, "x_dmm", x_dmm)
        object.__setattr__(self, "y_dmm", y_dmm)
        object.__setattr__(self, "contact", contact)
        object.__setattr__(self, "zone_id", zone_id)
        object.__setattr__(self, "battery_mv", battery_mv)


Telemetry.TYPE, Telemetry.FORMAT = MsgType.TELEMETRY, "<IBHHHHIhhBBH"


@dataclass(frozen=True, slots=True)
class Fault(_Message):
    fault_flags: int
    code: int
    detail: int


Fault.TYPE, Fault.FORMAT = MsgType.FAULT, "<HBH"


@dataclass(frozen=True, slots=True)
class Event(_Message):
    event: int
    t_us: int


Event.TYPE, Event.FORMAT = MsgType.EVENT, "<BI"


@dataclass(frozen=True, slots=True)
class AuthProof(_Message):
    pen_random: bytes
    pen_proof: bytes


AuthProof.TYPE, AuthProof.FORMAT = MsgType.AUTH_PROOF, "<16s16s"


@dataclass(frozen=True, slots=True)
class Unknown:
    """A frame of a type this version does not define (valid CRC, kept for NACK)."""

    type_code: int
    body: bytes

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


Message = (
    Hello
    | Heartbeat
    | Configure
    | SetTarget
    | Start
    | Stop
    | Estop
    | ClearFault
    | AuthBegin
    | AuthConfirm
    | FwBegin
    | FwChunk
    | FwCommit
    | FwAbort
    | Ack
    | DeviceInfo
    | Telemetry
    | Fault
    | Event
    | AuthProof
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
    AuthBegin,
    AuthConfirm,
    FwBegin,
    FwChunk,
    FwCommit,
    FwAbort,
    Ack,
    DeviceInfo,
    Telemetry,
    Fault,
    Event,
    AuthProof,
)
BY_TYPE: Final[dict[int, type[Any]]] = {cls.TYPE: cls for cls in MESSAGE_CLASSES}
BY_NAME: Final[dict[str, type[Any]]] = {cls.TYPE.name: cls for cls in MESSAGE_CLASSES}
#: Types the host sends with ACK_REQ (spec: CONFIGURE … CLEAR_FAULT, AUTH_CONFIRM, FW_*).
ACK_REQ_TYPES: Final = frozenset(
    (*range(MsgType.CONFIGURE, MsgType.CLEAR_FAULT + 1),
     *range(MsgType.AUTH_CONFIRM, MsgType.FW_ABORT + 1))
)
