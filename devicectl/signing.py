"""The authenticated link (spec 1.1, "Authenticated link"): keys, proofs, signed frames.

Sans-I/O and shared by both ends. The handshake is three pure functions
(`pen_proof`, `session_key`, `host_proof`); a `SecureSession` holds one
session key and both counters: `seal` turns a message into a signed frame,
`accept` says whether a received frame may be obeyed, and counts, by reason,
the frames it drops (unsigned, a wrong tag, a counter not above the last one).
HMAC-SHA256 from the standard library throughout.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from typing import Final

from devicectl.errors import ProtocolError
from devicectl.protocol import (
    FLAG_SIGNED,
    TAG_BYTES,
    AuthBegin,
    AuthConfirm,
    AuthProof,
    Frame,
    Message,
    encode_head,
    frame_of_packet,
    telemetry_head,
)

KEY_BYTES: Final = 32
RANDOM_BYTES: Final = 16
PROOF_BYTES: Final = 16
HOST: Final = b"H"  # dir of frames host -> pen
PEN: Final = b"P"  # dir of frames pen -> host
#: The simulator's pens only: K_dev = HMAC(master, serial <I). Never a real pen's key.
SIM_MASTER_KEY: Final = b"devicectl-sim-pen-master (test only)"
_COUNTER: Final = struct.Struct("<I")
_U32: Final = 0xFFFF_FFFF


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def sim_device_key(serial_number: int) -> bytes:
    """The test-only K_dev of the simulated pen with this serial number."""
    return _mac(SIM_MASTER_KEY, _COUNTER.pack(serial_number & _U32))


def pen_proof(k_dev: bytes, host_random: bytes, pen_random: bytes, serial_number: int) -> bytes:
    """What the pen answers AUTH_BEGIN with: it holds K_dev."""
    return _mac(k_dev, b"PEN", host_random, pen_random, _COUNTER.pack(serial_number))[:PROOF_BYTES]


def session_key(k_dev: bytes, host_random: bytes, pen_random: bytes) -> bytes:
    """K_s of one secure session."""
    return _mac(k_dev, b"SESSION", host_random, pen_random)


def host_proof(k_s: bytes) -> bytes:
    """What the host confirms with: it derived the same K_s (so it holds K_dev)."""
    return _mac(k_s, b"HOST")[:PROOF_BYTES]


def proofs_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def direction_of(type_code: int) -> bytes:
    """Who sends a type: host -> pen below 0x40, pen -> host from 0x40 (spec tables)."""
    return HOST if type_code < 0x40 else PEN


class Drop(enum.Enum):
    """Why a received frame was not obeyed on a secure link."""

    UNSIGNED = "unsigned"
    BAD_TAG = "bad_tag"
    OLD_COUNTER = "old_counter"  # a replay, or a stale frame


class SecureSession:
    """One secure session of one end: K_s, the counter it sends with, the last it accepted.

    `sends` is this end's direction (HOST or PEN); frames it receives are
    checked with the other one. Not thread-safe: one owner, like the codec.
    """

    __slots__ = ("_inner", "_rx_dir", "_tx_dir", "dropped", "rx_counter", "tx_counter")

    def __init__(self, k_s: bytes, sends: bytes) -> None:
        if len(k_s) != KEY_BYTES or sends not in (HOST, PEN):
            raise ProtocolError("a session key is 32 bytes, and a side sends as b'H' or b'P'")
        self._tx_dir = sends
        self._rx_dir = PEN if sends == HOST else HOST
        # HMAC's key schedule done once: each tag then hashes only its message.
        self._inner = hmac.new(k_s, digestmod=hashlib.sha256)
        self.tx_counter = 0  # the last counter sent; the first signed frame carries 1
        self.rx_counter = 0  # the last counter accepted
        self.dropped: dict[Drop, int] = dict.fromkeys(Drop, 0)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def tag(self, direction: bytes, head: bytes, counter: int) -> bytes:
        """tag = HMAC(K_s, dir ‖ header+body ‖ counter <I)[:8]."""
        mac = self._inner.copy()
        mac.update(direction + head + _COUNTER.pack(counter))
        return mac.digest()[:TAG_BYTES]

    def _seal_head(self, head: bytes) -> bytes:
        if self.tx_counter >= _U32:
            raise ProtocolError("the session's counter is spent; authenticate again")
        self.tx_counter += 1
        counter = self.tx_counter
        trailer = _COUNTER.pack(counter) + self.tag(self._tx_dir, head, counter)
        return frame_of_packet(head + trailer)

    def seal(self, message: Message, seq: int, flags: int | None = None) -> bytes:
        """`message` as a signed frame: SIGNED set, the next counter, its tag."""
        head = encode_head(message, seq, flags)
        head = head[:3] + bytes((head[3] | FLAG_SIGNED,)) + head[4:]
        return self._seal_head(head)

    def seal_telemetry(self, seq: int, values: tuple[int, ...]) -> bytes:
        """A signed TELEMETRY from its values in wire order (the pen's hot path)."""
        return self._seal_head(telemetry_head(seq, values, FLAG_SIGNED))

    def tag_ok(self, frame: Frame) -> bool:
        """The frame's tag is right for its counter and bytes (counters not checked)."""
        if frame.counter is None:
            return False
        want = self.tag(self._rx_dir, frame.head, frame.counter)
        return hmac.compare_digest(want, frame.tag)

    def accept(self, frame: Frame) -> bool:
        """True when `frame` may be obeyed: signed, its tag right, its counter new.

        Anything else is dropped and counted; the tag is checked before the
        counter, so a forged frame cannot move the counter on."""
        if frame.counter is None:
            self.dropped[Drop.UNSIGNED] += 1
            return False
        if not self.tag_ok(frame):
            self.dropped[Drop.BAD_TAG] += 1
            return False
        if frame.counter <= self.rx_counter:
            self.dropped[Drop.OLD_COUNTER] += 1
            return False
        self.rx_counter = frame.counter
        return True


class HostHandshake:
    """The host's half of one handshake: AUTH_BEGIN out, AUTH_PROOF checked, AUTH_CONFIRM out.

    `proof(msg)` returns the AUTH_CONFIRM to send and sets `session`, or None
    when the pen's proof is wrong: not a genuine pen, or not this clinic's key.
    """

    def __init__(self, k_dev: bytes, serial_number: int, host_random: bytes) -> None:
        if len(host_random) != RANDOM_BYTES:
            raise ProtocolError("host_random is 16 bytes")
        self._k_dev = k_dev
        self._serial = serial_number
        self.host_random = host_random
        self.session: SecureSession | None = None

    def begin(self) -> AuthBegin:
        return AuthBegin(self.host_random)

    def proof(self, msg: AuthProof) -> AuthConfirm | None:
        want = pen_proof(self._k_dev, self.host_random, msg.pen_random, self._serial)
        if not proofs_equal(want, msg.pen_proof):
            return None
        k_s = session_key(self._k_dev, self.host_random, msg.pen_random)
        self.session = SecureSession(k_s, HOST)
        return AuthConfirm(host_proof(k_s))
