"""The controller's authenticated link (spec 1.1): who must prove a key, and the filter.

Sans-I/O. `decide(info)` says, from a pen's DEVICE_INFO and the keyring, whether
to authenticate (an AUTH_BEGIN to send), go on unauthenticated, or refuse: a pen
offering AUTH without a key in the keyring cannot prove anything; a pen without
AUTH whose serial the keyring knows is refused (no downgrade). `proof(msg)`
checks the pen's proof; once secure, `filter` keeps only the pen's frames that
are signed, with a good tag and a new counter, and counts the rest (an unsigned
DEVICE_INFO too: this host says HELLO only while it connects, with no session).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from devicectl import protocol as p
from devicectl.signing import RANDOM_BYTES, HostHandshake, SecureSession

KeySource = Callable[[int], bytes | None]
_AUTH_BITS = p.Capability.AUTH | p.Capability.AUTH_REQUIRED


def _no_keys(_serial: int) -> bytes | None:
    return None


def unauthenticated_problem(keys: object, serial: int, key: bytes | None) -> str | None:
    """Why a pen without AUTH may not be used unauthenticated (one sentence), or None:
    the keyring holds its key (no downgrade), or the key source says every pen must
    authenticate (keys.KeyPolicy's `require_auth`; a plain callable, as the simulator's
    test key, does not). The controller and the firmware updater both ask it."""
    if key is not None:
        return (f"pen {serial} does not offer the authenticated link, but the keyring holds "
                "its key: refused (no downgrade); is this the clinic's pen?")
    if getattr(keys, "require_auth", False) is True:
        return (f"pen {serial} does not offer the authenticated link, and this clinic's "
                "keyring requires every pen to (`devicectl keys require off` allows pens "
                "without it)")
    return None


class LinkAuth:
    """One session's view of the link's authentication. One owner: the controller."""

    def __init__(self, keys: KeySource | None, entropy: Callable[[int], bytes] = os.urandom):
        self._keys = keys if keys is not None else _no_keys
        self._entropy = entropy
        self._handshake: HostHandshake | None = None
        self.session: SecureSession | None = None
        #: the pen has sent a signed frame that held: it took our AUTH_CONFIRM (spec: its
        #: ACK is the pen's first signed frame), so our frames are signed from now on
        self.confirmed = False
        self.serial: int | None = None  # the pen that proved its key
        self.dropped_unsigned = 0  # unsigned pen frames dropped once secure
        #: the session of the link before this one (a reconnect): a pen that still holds
        #: it refuses an unsigned AUTH_BEGIN (NACK AUTH), and takes one signed with it
        self.previous: SecureSession | None = None
        #: the AUTH_BEGIN of the handshake under way, and whether it went signed
        self.begun: p.AuthBegin | None = None
        self.begun_signed = False

    @property
    def dropped(self) -> int:
        session = self.session
        return self.dropped_unsigned + (session.dropped_total if session else 0)

    def reset(self) -> None:
        """The link is to be established anew (reconnect, link lost): no session. The
        one that ends is kept as `previous`, to sign a new AUTH_BEGIN to a pen that
        still holds it."""
        self._handshake = None
        if self.session is not None:
            self.previous = self.session
        self.session = None
        self.confirmed = False
        self.begun = None
        self.begun_signed = False

    def decide(self, info: p.DeviceInfo) -> p.AuthBegin | str | None:
        """AUTH_BEGIN to send, a refusal (one sentence), or None: go on unauthenticated."""
        serial = info.serial_number
        key = self._keys(serial)
        if info.capabilities & _AUTH_BITS:
            if key is None:
                return (f"pen {serial} offers the authenticated link but the keyring has no "
                        f"key for it: `devicectl keys add {serial}`")
            self.reset()
            self._handshake = HostHandshake(key, serial, self._entropy(RANDOM_BYTES))
            self.begun = self._handshake.begin()
            return self.begun
        return unauthenticated_problem(self._keys, serial, key)

    def proof(self, msg: p.AuthProof) -> p.AuthConfirm | str | None:
        """AUTH_CONFIRM to send (the session then starts), a refusal, or None (not asked)."""
        handshake = self._handshake
        if handshake is None:
            return None  # no handshake of ours: a stray or late proof
        confirm = handshake.proof(msg)
        self._handshake = None
        if confirm is None:
            return "the pen could not prove its key: not a genuine pen, or not this clinic's key"
        self.session = handshake.session
        self.previous = None  # the pen began anew: the earlier session is over on both ends
        self.begun = None
        return confirm

    def begin_signed(self) -> SecureSession | str:
        """The pen refused our unsigned AUTH_BEGIN (NACK AUTH): it still holds a secure
        session (spec: once secure, unsigned commands but HELLO and ESTOP are refused).
        The session to sign the same AUTH_BEGIN with, once: the link's before a
        reconnect; else a refusal (one sentence)."""
        previous = self.previous
        if self.begun is None or self.begun_signed or previous is None:
            return ("the pen holds a secure session this host cannot continue and refuses a "
                    "new one unsigned: switch the pen off and on, then connect again")
        self.begun_signed = True
        return previous

    def filter(self, frames: list[p.Frame]) -> list[p.Frame]:
        session = self.session
        if session is None:
            return frames
        kept = []
        for frame in frames:
            if frame.counter is None:
                # Every unsigned frame, DEVICE_INFO too: the pen sends one only to answer
                # HELLO (unsigned, spec 1.1), and this host says HELLO only while it
                # connects, with no session (a reconnect ends it first). One arriving
                # now is injected: it would tell the host another cartridge is in.
                self.dropped_unsigned += 1
            elif session.accept(frame):
                self.confirmed = True
                kept.append(frame)
        return kept
