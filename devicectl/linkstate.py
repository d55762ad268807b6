"""The host's side of the link rules: sequence numbers, ACK tracking with resends, heartbeat timing.

Every frame the controller sends goes through `LinkState.send`, which passes it
through the safety gate first. Sans-I/O: times are given, never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from devicectl.protocol import ACK_REQ_TYPES, FLAG_ACK_REQ, Message, MsgType, encode
from devicectl.safety import ACK_TIMEOUT_US, MAX_RESENDS, assert_sendable
from devicectl.signing import SecureSession

#: The host sends a HEARTBEAT when it has sent nothing for this long (spec).
HEARTBEAT_US: Final = 20_000


_START_STOP: Final = frozenset({MsgType.START, MsgType.STOP})
#: The pending frames a new frame of a type makes stale (default: its own type).
_SUPERSEDES: Final = {
    MsgType.START: _START_STOP,
    MsgType.STOP: _START_STOP,
    MsgType.ESTOP: frozenset({MsgType.START, MsgType.STOP, MsgType.ESTOP}),
}


@dataclass(slots=True)
class Pending:
    """An ACK_REQ message on its way: the seq it went out with last, and when."""

    message: Message
    seq: int
    sent_us: int
    resends: int = 0


class LinkLost(Exception):
    """A frame went unACKed after MAX_RESENDS resends (internal to the controller)."""

    def __init__(self, pending: Pending) -> None:
        super().__init__(pending.message.TYPE.name)
        self.pending = pending


class LinkState:
    """Seq counter, frames awaiting ACK, and the time of the last frame sent."""

    __slots__ = ("_pending", "_seq", "acked_sent_us", "last_sent_us", "resends_total", "secure")

    def __init__(self) -> None:
        #: Once the link is authenticated, every frame is signed with this session.
        self.secure: SecureSession | None = None
        self._seq = 0
        self._pending: dict[int, Pending] = {}
        self.last_sent_us: int | None = None
        self.resends_total = 0
        #: when the copy the last ACK answered was sent (the pen had it from then)
        self.acked_sent_us = 0

    @property
    def unacked(self) -> int:
        return len(self._pending)

    def pending_types(self) -> list[int]:
        return [p.message.TYPE for p in self._pending.values()]

    def _frame(self, message: Message, now_us: int, flags: int | None = None) -> tuple[int, bytes]:
        assert_sendable(message)
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        self.last_sent_us = now_us
        secure = self.secure
        return seq, (encode(message, seq, flags) if secure is None
                     else secure.seal(message, seq, flags))

    def send(self, message: Message, now_us: int) -> bytes:
        """The frame for `message`; tracked for its ACK when the spec asks for one."""
        seq, frame = self._frame(message, now_us)
        if message.TYPE in ACK_REQ_TYPES:
            # A newer frame supersedes an older one of the same intent: a START
            # resent after a STOP would set the pen stamping behind our back.
            stale = _SUPERSEDES.get(message.TYPE, frozenset({message.TYPE}))
            for old_seq, p in list(self._pending.items()):
                if p.message.TYPE in stale:
                    del self._pending[old_seq]
            self._pending[seq] = Pending(message, seq, now_us)
        return frame

    def send_untracked(self, message: Message, now_us: int) -> bytes:
        """A last-ditch frame (ACK_REQ as the spec says) whose ACK nobody waits for."""
        flags = FLAG_ACK_REQ if message.TYPE in ACK_REQ_TYPES else 0
        return self._frame(message, now_us, flags)[1]

    def ack(self, acked_seq: int, acked_type: int) -> Message | None:
        """The message an ACK answers, no longer pending; None for a stray ACK."""
        p = self._pending.get(acked_seq)
        if p is None or acked_type != p.message.TYPE:
            return None
        del self._pending[acked_seq]
        self.acked_sent_us = p.sent_us
        return p.message

    def awaits(self, kind: type) -> bool:
        """Whether a frame of this message class still waits for its ACK."""
        return any(isinstance(p.message, kind) for p in self._pending.values())

    def cancel(self, kind: type) -> int:
        """Forget the unACKed frames of one message class: they are never sent again.

        A START the pen has not acknowledged must not be resent once the host has
        decided to stop (a fault, a refusal, a STOP): its resend would start a pen
        that the host wants stopped. Returns how many were dropped.
        """
        doomed = [seq for seq, p in self._pending.items() if isinstance(p.message, kind)]
        for seq in doomed:
            del self._pending[seq]
        return len(doomed)

    def resends_due(self, now_us: int) -> list[tuple[Pending, bytes]]:
        """Frames to send again now (new seq, same content); raises LinkLost after the last."""
        out: list[tuple[Pending, bytes]] = []
        for seq, p in list(self._pending.items()):
            if now_us - p.sent_us < ACK_TIMEOUT_US:
                continue
            if p.resends >= MAX_RESENDS:
                self._pending.clear()
                raise LinkLost(p)
            del self._pending[seq]
            new_seq, frame = self._frame(p.message, now_us)
            p.seq = new_seq
            p.sent_us = now_us
            p.resends += 1
            self.resends_total += 1
            self._pending[new_seq] = p
            out.append((p, frame))
        return out

    def next_resend_us(self) -> int | None:
        """When `resends_due` next has a frame (or LinkLost) for the caller."""
        if not self._pending:
            return None
        return min(p.sent_us for p in self._pending.values()) + ACK_TIMEOUT_US

    def next_heartbeat_us(self) -> int | None:
        """When `heartbeat_due` next says yes (nothing sent yet: never)."""
        return None if self.last_sent_us is None else self.last_sent_us + HEARTBEAT_US

    def heartbeat_due(self, now_us: int) -> bool:
        return self.last_sent_us is not None and now_us - self.last_sent_us >= HEARTBEAT_US

    def forget(self) -> None:
        """Drop every pending frame (link lost, or session over)."""
        self._pending.clear()
