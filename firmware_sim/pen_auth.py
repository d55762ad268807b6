"""The pen's side of the authenticated link (spec 1.1): the handshake and the receiving rules.

Sans-I/O. `verdict(frame)` says what the pen does with a host frame: obey it,
drop it (counted, as a bad frame for the LINK fault), or refuse it with an
unsigned NACK AUTH. Once secure, every frame the pen sends is sealed, except
the DEVICE_INFO answering HELLO and those NACK AUTH answers.

Reading of the spec: the AUTH messages themselves are always taken unsigned
(a host that lost its session, after a restart, must be able to begin again);
a new AUTH_BEGIN ends the earlier session.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Final

from devicectl.protocol import AuthBegin, AuthConfirm, AuthProof, Frame, MsgType, Unknown
from devicectl.signing import (
    PEN,
    RANDOM_BYTES,
    SecureSession,
    host_proof,
    pen_proof,
    proofs_equal,
    session_key,
    sim_device_key,
)

#: Taken unsigned in every mode: HELLO (answered unsigned), ESTOP (stopping never
#: needs a key) and the handshake.
_ALWAYS: Final = frozenset({MsgType.HELLO, MsgType.ESTOP, MsgType.AUTH_BEGIN, MsgType.AUTH_CONFIRM})


class Verdict(enum.Enum):
    OBEY = "obey"
    DROP = "drop"
    NACK_AUTH = "nack_auth"


class PenAuth:
    """K_dev, the handshake in progress, and the secure session once confirmed."""

    def __init__(
        self,
        serial_number: int,
        *,
        required: bool,
        k_dev: bytes | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.serial_number = serial_number
        self.required = required
        self._k_dev = k_dev if k_dev is not None else sim_device_key(serial_number)
        self._entropy = entropy
        self._pending: tuple[bytes, bytes] | None = None  # host_random, pen_random
        self.session: SecureSession | None = None
        #: Frames refused or dropped outside a session (unsigned in required mode, or
        #: signed with no session to check them); a session counts its own.
        self.refused = 0

    @property
    def dropped_total(self) -> int:
        return self.refused + (self.session.dropped_total if self.session else 0)

    def verdict(self, frame: Frame) -> Verdict:
        msg = frame.message
        type_code = msg.type_code if isinstance(msg, Unknown) else int(msg.TYPE)
        session = self.session
        if frame.signed:
            if session is not None and session.accept(frame):
                return Verdict.OBEY
            if session is None:
                self.refused += 1
            # counted as bad all the same, but stopping never needs a key: an ESTOP
            # sealed with a session the pen lost, or another one, still stops it
            return Verdict.OBEY if type_code == MsgType.ESTOP else Verdict.DROP
        if type_code in _ALWAYS:
            return Verdict.OBEY
        if session is None and not self.required:
            return Verdict.OBEY
        self.refused += 1
        return Verdict.NACK_AUTH

    def begin(self, msg: AuthBegin) -> AuthProof:
        """A new handshake; any earlier session ends here."""
        self.session = None
        pen_random = self._entropy(RANDOM_BYTES)
        self._pending = (msg.host_random, pen_random)
        proof = pen_proof(self._k_dev, msg.host_random, pen_random, self.serial_number)
        return AuthProof(pen_random, proof)

    def confirm(self, msg: AuthConfirm) -> bool:
        """True when the host proved K_s: the secure session starts (its ACK is signed)."""
        pending = self._pending
        self._pending = None
        if pending is None:
            return False
        k_s = session_key(self._k_dev, *pending)
        if not proofs_equal(host_proof(k_s), msg.host_proof):
            return False
        self.session = SecureSession(k_s, PEN)
        return True

    def end(self) -> None:
        """A restart: no session, no handshake."""
        self.session = None
        self._pending = None
