"""The flight recorder: the last frames on the wire, both ways, with host times.

As Klipper keeps one: a fixed ring, allocated once, that the inner loop feeds
with the bytes it reads and writes (`record`), split into frames at 0x00. On an
ESTOP, a pen fault or a bad end the loop takes a `snapshot` (one copy of the
ring's buffer, nothing else); the record writer's thread turns it into the
frames of the last WINDOW_US (`frames`, `pack`) and saves them as a FLIGHT
event. `unpack` reads them back (`devicectl sessions frames`).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Final

from devicectl.protocol import MAX_ENCODED

#: One slot: the longest encoded frame and its 0x00 delimiter.
SLOT_BYTES: Final = MAX_ENCODED + 1
#: Slots in the ring: 10 s at the 500 Hz telemetry the host configures, heartbeats and
#: ACKs fit with room (a pen at 1 kHz, which it was not told, fills it in ~7.8 s).
SLOTS: Final = 8192
#: How far back a recording goes (µs).
WINDOW_US: Final = 10_000_000
RX: Final = 0  # pen -> host
TX: Final = 1  # host -> pen
DIRECTIONS: Final = ("rx", "tx")
#: Packed frame header: time (µs, session time), direction, length on the wire.
_HEAD: Final = struct.Struct("<qBH")
#: One slot of the ring: the frame's header (as _HEAD), then its first SLOT_BYTES bytes.
_SLOT: Final = struct.Struct(f"<qBH{SLOT_BYTES}s")
#: Its size, read once: `_SLOT.size` in `_put` was an attribute look-up every frame.
_SLOT_SIZE: Final = _SLOT.size
_MAX_LEN: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    t_us: int
    direction: int
    #: the bytes kept (at most SLOT_BYTES, the delimiter included)
    raw: bytes
    #: how long the frame was on the wire (above SLOT_BYTES: cut, too long to be valid)
    length: int


class FlightRecorder:
    """A ring of SLOTS frames. Not thread-safe: the inner loop owns it.

    `record` only copies bytes into the preallocated ring (a frame still
    arriving waits in a per-direction staging slot); nothing grows per frame.
    A frame is one `pack_into` of its slot: time, direction, length and bytes
    side by side in one buffer.
    """

    def __init__(self, slots: int = SLOTS) -> None:
        self._slots = slots
        self._ring = bytearray(slots * _SLOT_SIZE)
        self._put_slot = _SLOT.pack_into
        self._head = 0  # frames recorded so far; the next slot is head % slots
        self._stage = (bytearray(SLOT_BYTES), bytearray(SLOT_BYTES))
        self._staged = [0, 0]  # bytes of the frame arriving, per direction (may exceed a slot)

    def record(self, data: bytes, direction: int, t_us: int) -> None:
        """Bytes read (RX) or written (TX) at `t_us`; a frame counts once its 0x00 is in."""
        n = len(data)
        start = 0
        while start < n:
            end = data.find(0, start)
            if end < 0:
                self._stage_bytes(data, start, n, direction)
                return
            stop = end + 1
            if self._staged[direction]:
                self._stage_bytes(data, start, stop, direction)
                self._commit_staged(direction, t_us)
            elif stop - start > 1:  # a whole frame in this chunk: straight into its slot
                # the chunk is the frame in the usual read and every write: no copy
                frame = data if stop - start == n else data[start:stop]
                self._put(frame, stop - start, direction, t_us)
            start = stop

    def _stage_bytes(self, data: bytes, start: int, stop: int, direction: int) -> None:
        have = self._staged[direction]
        take = min(SLOT_BYTES - have, stop - start)
        if take > 0:
            self._stage[direction][have : have + take] = data[start : start + take]
        self._staged[direction] = have + stop - start

    def _commit_staged(self, direction: int, t_us: int) -> None:
        length = self._staged[direction]
        self._staged[direction] = 0
        if length <= 1:
            return  # a lone delimiter is no frame
        self._put(self._stage[direction][: min(length, SLOT_BYTES)], length, direction, t_us)

    def _put(self, frame: bytes | bytearray, length: int, direction: int, t_us: int) -> None:
        """The next slot: the frame's header and its first SLOT_BYTES bytes (`pack_into`
        cuts a longer frame, and pads a shorter one with 0x00)."""
        slot = self._head % self._slots
        self._head += 1
        self._put_slot(self._ring, slot * _SLOT_SIZE, t_us, direction,
                       length if length <= _MAX_LEN else _MAX_LEN, frame)

    def snapshot(self, now_us: int) -> FlightSnapshot:
        """A copy of the ring, cheap enough for the loop; decode it elsewhere."""
        return FlightSnapshot(bytes(self._ring), self._head, self._slots, now_us)


@dataclass(frozen=True, slots=True)
class FlightSnapshot:
    #: the ring's slots, each packed by _SLOT
    data: bytes
    head: int
    slots: int
    now_us: int

    def frames(self, window_us: int = WINDOW_US) -> list[RecordedFrame]:
        """The frames of the last `window_us` before the snapshot, oldest first."""
        count = min(self.head, self.slots)
        out: list[RecordedFrame] = []
        for i in range(self.head - count, self.head):
            t, direction, length, kept = _SLOT.unpack_from(self.data, i % self.slots * _SLOT_SIZE)
            if self.now_us - t > window_us:
                continue
            out.append(RecordedFrame(t, direction, kept[: min(length, SLOT_BYTES)], length))
        return out


def pack(frames: list[RecordedFrame], t0_us: int = 0) -> str:
    """Frames as base64 text for a record (times from `t0_us`, the session's start)."""
    parts = bytearray()
    for f in frames:
        parts += _HEAD.pack(f.t_us - t0_us, f.direction, f.length)
        parts.append(len(f.raw))
        parts += f.raw
    return base64.b64encode(bytes(parts)).decode("ascii")


def unpack(text: str) -> list[RecordedFrame]:
    """`pack`'s frames back; ValueError when the text is not such frames."""
    blob = base64.b64decode(text, validate=True)
    out: list[RecordedFrame] = []
    i = 0
    while i < len(blob):
        if i + _HEAD.size + 1 > len(blob):
            raise ValueError("a recorded frame is cut short")
        t_us, direction, length = _HEAD.unpack_from(blob, i)
        i += _HEAD.size
        kept = blob[i]
        i += 1
        raw = blob[i : i + kept]
        if len(raw) != kept or direction not in (RX, TX):
            raise ValueError("a recorded frame is cut short")
        i += kept
        out.append(RecordedFrame(t_us, direction, raw, length))
    return out
