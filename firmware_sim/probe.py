"""A minimal scripted host for the simulator's tests and benchmark, through real bytes.

It encodes what it is told to send, decodes everything the pen says, keeps
each frame with its arrival time, and can keep the pen's watchdog fed. It is
not the controller: it makes no decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from devicectl.protocol import Ack, Decoder, Frame, Heartbeat, Hello, Message, encode
from firmware_sim.virtual import VirtualPen

M = TypeVar("M")
HEARTBEAT_US = 20_000


@dataclass
class Probe:
    """Drives a VirtualPen in virtual time: `send`, `run_until`, then read `frames`."""

    pen: VirtualPen
    now_us: int = 0
    step_us: int = 1000
    feed_watchdog: bool = True
    decoder: Decoder = field(default_factory=Decoder)
    frames: list[tuple[int, Frame]] = field(default_factory=list)
    _seq: int = 0
    _last_sent_us: int = 0

    def send(self, message: Message, flags: int | None = None) -> int:
        """Encode and deliver one frame now; returns its seq."""
        seq = self._seq
        self.send_bytes(encode(message, seq, flags))
        self._seq = (seq + 1) & 0xFF
        return seq

    def send_bytes(self, data: bytes) -> None:
        self.pen.receive_data(data, self.now_us)
        self._last_sent_us = self.now_us

    def run_until(self, t_us: int) -> None:
        while self.now_us < t_us:
            self.now_us = min(t_us, self.now_us + self.step_us)
            data = self.pen.advance(self.now_us)
            if data:
                for frame in self.decoder.feed(data):
                    self.frames.append((self.now_us, frame))
            if self.feed_watchdog and self.now_us - self._last_sent_us >= HEARTBEAT_US:
                self.send(Heartbeat((self.now_us // 1000) & 0xFFFF_FFFF))

    def run_for(self, dt_us: int) -> None:
        self.run_until(self.now_us + dt_us)

    def hello(self, nonce: int = 0x1234) -> None:
        self.send(Hello(1, nonce))
        self.run_for(self.step_us)

    def of(self, cls: type[M], since_us: int = 0) -> list[M]:
        """The messages of one class received at or after `since_us`, in order."""
        return [f.message for t, f in self.frames if t >= since_us and isinstance(f.message, cls)]

    def ack_for(self, seq: int) -> Ack:
        for _, f in reversed(self.frames):
            if isinstance(f.message, Ack) and f.message.acked_seq == seq:
                return f.message
        raise AssertionError(f"no ACK for seq {seq}")

    def last(self, cls: type[M]) -> Any:
        found = self.of(cls)
        assert found, f"no {cls.__name__} received"
        return found[-1]
