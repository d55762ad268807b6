"""The pen's end of the wire: frames in and out, sequence numbers, the authenticated link.

Sans-I/O, owned by firmware.py. `receive(data)` decodes the host's bytes and
applies the authenticated link's receiving rules (pen_auth.py): it returns the
frames the pen may obey, and queues the unsigned NACK AUTH answers. `send` and
`telemetry` number the pen's frames (one seq counter) and sign them once the
link is secure. `bad_frames_in_window(now)` counts thrown-away and refused
frames over the LINK fault's window.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from devicectl.protocol import Ack, Decoder, Frame, Message, Nack, Unknown, encode, encode_telemetry
from firmware_sim.pen_auth import PenAuth, Verdict

LINK_WINDOW_US: Final = 100_000
#: More bad frames than this within the window latch LINK (spec).
LINK_BAD_FRAMES: Final = 10


class PenLink:
    """The decoder, the authenticated link (or None), the seq counter, the output queue."""

    def __init__(self, auth: PenAuth | None) -> None:
        self.decoder = Decoder()
        self.auth = auth
        self._seq = 0
        self._out: list[bytes] = []
        self._bad_seen = 0
        self._bad_times: deque[int] = deque()

    def receive(self, data: bytes) -> list[Frame]:
        """The frames in `data` the pen may obey (all of them without AUTH)."""
        frames = self.decoder.feed(data)
        auth = self.auth
        if auth is None:
            return frames
        kept = []
        for frame in frames:
            verdict = auth.verdict(frame)
            if verdict is Verdict.OBEY:
                kept.append(frame)
            elif verdict is Verdict.NACK_AUTH:
                msg = frame.message
                code = msg.type_code if isinstance(msg, Unknown) else int(msg.TYPE)
                self.send(Ack(frame.seq, code, Nack.AUTH), signed=False)
        return kept

    def send(self, msg: Message, *, signed: bool = True) -> None:
        session = self.auth.session if self.auth is not None else None
        seq = self._seq
        if signed and session is not None:
            self._out.append(session.seal(msg, seq))
        else:
            self._out.append(encode(msg, seq))
        self._seq = (seq + 1) & 0xFF

    def telemetry(self, values: tuple[int, ...]) -> None:
        """One TELEMETRY from its values in wire order (the simulation's hot path)."""
        seq = self._seq
        session = self.auth.session if self.auth is not None else None
        if session is None:
            self._out.append(encode_telemetry(seq, values))
        else:
            self._out.append(session.seal_telemetry(seq, values))
        self._seq = (seq + 1) & 0xFF

    def flush(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def bad_frames_in_window(self, now_us: int, supervised: bool) -> int:
        """Bad frames (thrown away, or refused by the authenticated link) within the last
        LINK_WINDOW_US; counting starts when `supervised` (the first HELLO)."""
        bad = self.decoder.bad_frames + (self.auth.dropped_total if self.auth else 0)
        new = bad - self._bad_seen
        self._bad_seen = bad
        times = self._bad_times
        if new > 0 and supervised:
            times.extend([now_us] * min(new, LINK_BAD_FRAMES + 1))
        while times and now_us - times[0] >= LINK_WINDOW_US:
            times.popleft()
        return len(times)

    def forget_bad_frames(self) -> None:
        """CLEAR_FAULT: the LINK window starts afresh."""
        self._bad_times.clear()
