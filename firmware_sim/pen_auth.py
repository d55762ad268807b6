"""The pen's side of the authenticated link (spec 1.1): the handshake and the receiving rules.

Sans-I/O. `verdict(frame)` says what the pen does with a host frame: obey it,
drop it (counted, as a bad frame for the LINK fault), or refuse it with an
unsigned NACK AUTH. Once secure, every frame the pen sends is sealed, except
the DEVICE_INFO answering HELLO and those NACK AUTH answers.

An ESTOP is obeyed whatever its trailer (a wrong tag, a spent counter, no session
to check it): stopping never needs a key. It is still counted when it does not hold.

The handshake's messages are taken unsigned while the pen holds no session (also
with AUTH_REQUIRED); once secure, only HELLO and ESTOP are (spec: "any other unsigned
command gets an unsigned NACK 9 AUTH"): a new AUTH_BEGIN, which ends the earlier
session, must then be signed with it. A host that reconnects signs it with the
session it had; one that lost it (a restart) cannot, and the pen must be restarted.
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

#: Taken unsigned with no session, also with AUTH_REQUIRED: HELLO (answered unsigned),
#: ESTOP (stopping never needs a key) and the handshake.
_ALWAYS: Final = frozenset({MsgType.HELLO, MsgType.ESTOP, MsgType.AUTH_BEGIN, MsgType.AUTH_CONFIRM})
#: Taken unsigned once secure: HELLO and ESTOP alone.
_UNSIGNED_ONCE_SECURE: Final = frozenset({MsgType.HELLO, MsgType.ESTOP})


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
        self._confirmed: bytes | None = None  # the host_proof that began `session`
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
            # counted as a bad frame all the same, but "it always obeys ESTOP, signed
            # or not": a tag or counter that does not hold never keeps the pen going
            return Verdict.OBEY if type_code == MsgType.ESTOP else Verdict.DROP
        if type_code in _ALWAYS and (session is None or type_code in _UNSIGNED_ONCE_SECURE):
            return Verdict.OBEY
        if session is None and not self.required:
            return Verdict.OBEY
        self.refused += 1
        return Verdict.NACK_AUTH

    def begin(self, msg: AuthBegin) -> AuthProof:
        """A new handshake; any earlier session ends here."""
        self.session = None
        self._confirmed = None
        pen_random = self._entropy(RANDOM_BYTES)
        self._pending = (msg.host_random, pen_random)
        proof = pen_proof(self._k_dev, msg.host_random, pen_random, self.serial_number)
        return AuthProof(pen_random, proof)

    def confirm(self, msg: AuthConfirm) -> bool:
        """True when the host proved K_s: the secure session starts (its ACK is signed).

        The host sends AUTH_CONFIRM again when its ACK was lost (an ACK_REQ frame): a
        repeat of the proof that began the session now has the effect of one, OK."""
        pending = self._pending
        self._pending = None
        if pending is None:
            confirmed = self._confirmed
            return confirmed is not None and proofs_equal(confirmed, msg.host_proof)
        k_s = session_key(self._k_dev, *pending)
        proof = host_proof(k_s)
        if not proofs_equal(proof, msg.host_proof):
            return False
        self.session = SecureSession(k_s, PEN)
        self._confirmed = proof
        return True

    def end(self) -> None:
        """A restart: no session, no handshake."""
        self.session = None
        self._pending = None
        self._confirmed = None
