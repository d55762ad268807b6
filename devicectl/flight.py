"""The flight recorder: the last frames on the wire, both ways, with host times.

As Klipper keeps one: a fixed ring, allocated once, that the inner loop feeds
with the bytes it reads and writes (`record`), split into frames at 0x00. On an
ESTOP, a pen fault or a bad end the loop takes a `snapshot` (one copy of the
ring's buffers, nothing else); the record writer's thread turns it into the
frames of the last WINDOW_US (`frames`, `pack`) and saves them as a FLIGHT
event. `unpack` reads them back (`devicectl sessions frames`).
"""

from __future__ import annotations

import base64
import struct
from array import array
from dataclasses import dataclass
from typing import Final

from devicectl.protocol import MAX_ENCODED

#: One slot: the longest encoded frame and its 0x00 delimiter.
SLOT_BYTES: Final = MAX_ENCODED + 1
#: Slots in the ring: 10 s at 500 Hz telemetry, heartbeats and ACKs fit with room.
SLOTS: Final = 8192
#: How far back a recording goes (µs).
WINDOW_US: Final = 10_000_000
RX: Final = 0  # pen -> host
TX: Final = 1  # host -> pen
DIRECTIONS: Final = ("rx", "tx")
#: Packed frame header: time (µs, session time), direction, length on the wire.
_HEAD: Final = struct.Struct("<qBH")
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

    `record` only copies bytes into the preallocated buffers (a frame still
    arriving waits in a per-direction staging slot); nothing grows per frame.
    """

    def __init__(self, slots: int = SLOTS) -> None:
        self._slots = slots
        self._data = bytearray(slots * SLOT_BYTES)
        self._len = array("H", bytes(2 * slots))
        self._t = array("q", bytes(8 * slots))
        self._dir = bytearray(slots)
        self._head = 0  # frames recorded so far; the next slot is head % slots
        self._stage = (bytearray(SLOT_BYTES), bytearray(SLOT_BYTES))
        self._stage_views = (memoryview(self._stage[0]), memoryview(self._stage[1]))
        self._staged = [0, 0]  # bytes of the frame arriving, per direction (may exceed a slot)

    def record(self, data: bytes, direction: int, t_us: int) -> None:
        """Bytes read (RX) or written (TX) at `t_us`; a frame counts once its 0x00 is in."""
        n = len(data)
        start = 0
        find = data.find
        while start < n:
            end = find(0, start)
            if end < 0:
                self._stage_bytes(data, start, n, direction)
                return
            stop = end + 1
            if self._staged[direction]:
                self._stage_bytes(data, start, stop, direction)
                self._commit_staged(direction, t_us)
            elif stop - start > 1:  # a whole frame in this chunk: straight into its slot
                length = stop - start
                kept = length if length <= SLOT_BYTES else SLOT_BYTES
                off = self._next_slot(direction, length, t_us) * SLOT_BYTES
                self._data[off : off + kept] = data[start : start + kept]
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
        kept = min(length, SLOT_BYTES)
        off = self._next_slot(direction, length, t_us) * SLOT_BYTES
        self._data[off : off + kept] = self._stage_views[direction][:kept]

    def _next_slot(self, direction: int, length: int, t_us: int) -> int:
        slot = self._head % self._slots
        self._head += 1
        self._len[slot] = length if length <= _MAX_LEN else _MAX_LEN
        self._t[slot] = t_us
        self._dir[slot] = direction
        return slot

    def snapshot(self, now_us: int) -> FlightSnapshot:
        """A copy of the ring, cheap enough for the loop; decode it elsewhere."""
        return FlightSnapshot(
            bytes(self._data), self._len.tobytes(), self._t.tobytes(), bytes(self._dir),
            self._head, self._slots, now_us,
        )


@dataclass(frozen=True, slots=True)
class FlightSnapshot:
    data: bytes
    lengths: bytes
    times: bytes
    directions: bytes
    head: int
    slots: int
    now_us: int

    def frames(self, window_us: int = WINDOW_US) -> list[RecordedFrame]:
        """The frames of the last `window_us` before the snapshot, oldest first."""
        lengths = array("H")
        lengths.frombytes(self.lengths)
        times = array("q")
        times.frombytes(self.times)
        count = min(self.head, self.slots)
        out: list[RecordedFrame] = []
        for i in range(self.head - count, self.head):
            slot = i % self.slots
            t = times[slot]
            if self.now_us - t > window_us:
                continue
            length = lengths[slot]
            off = slot * SLOT_BYTES
            raw = self.data[off : off + min(length, SLOT_BYTES)]
            out.append(RecordedFrame(t, self.directions[slot], raw, length))
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
