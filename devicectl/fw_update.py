"""Sending a firmware image to the pen (spec 1.1, "Firmware update"), sans-I/O.

Theory of operation: an `Updater` is driven like the controller: `start`,
`receive_data(bytes, now)` and `tick(now)` return the bytes to send. It greets
the pen (HELLO), authenticates when the pen offers AUTH, brings the pen to IDLE
(CLEAR_FAULT after a fault, FW_ABORT of an earlier update), then FW_BEGIN, the
chunks one by one, FW_COMMIT, and greets the restarted pen to learn which
firmware runs now (EVENT FW_UPDATED or FW_ROLLBACK). Chunks are idempotent, so
a link that drops (resends exhausted, or silence) is survived by beginning
again from HELLO, up to MAX_ATTEMPTS times. Every failure the spec names ends
the update with its own sentence in `error`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Final

from devicectl import protocol as p
from devicectl.controller_auth import unauthenticated_problem
from devicectl.firmware import Image, chunks, version_text
from devicectl.linkstate import LinkLost, LinkState
from devicectl.signing import RANDOM_BYTES, HostHandshake, SecureSession

KeySource = Callable[[int], bytes | None]
HELLO_RETRY_US: Final = 100_000
HELLO_GIVE_UP_US: Final = 2_000_000
#: Nothing at all from the pen for this long mid-update: the link dropped.
SILENCE_US: Final = 300_000
MAX_ATTEMPTS: Final = 5
_U32: Final = 0xFFFF_FFFF


class Step(enum.Enum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    PREPARING = "preparing"
    SENDING = "sending"
    COMMITTING = "committing"
    RESTARTING = "restarting"
    DONE = "done"
    FAILED = "failed"


class Updater:
    """One firmware update of one pen. `done` once `step` is DONE or FAILED."""

    def __init__(self, image: Image, *, key_for: KeySource, now_us: int,
                 entropy: Callable[[int], bytes] = os.urandom) -> None:
        self.image = image
        self._chunks = chunks(image)
        self._key_for = key_for
        self._entropy = entropy
        self.attempt = 0
        self.step = Step.CONNECTING
        self.error: str | None = None
        self.notes: list[str] = []
        self.device: p.DeviceInfo | None = None
        self.running_version: int | None = None  # after the restart
        self.acked_chunks = 0
        self._out = bytearray()
        self._restart_us = 0
        self._begin_again(now_us)

    # --- entry points ---------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.step in (Step.DONE, Step.FAILED)

    @property
    def progress(self) -> tuple[int, int]:
        """(bytes the pen has acknowledged, image bytes)."""
        total = len(self.image.data)
        return min(self.acked_chunks * 40, total), total

    def start(self, now_us: int) -> bytes:
        self._hello(now_us)
        return self._flush()

    def receive_data(self, data: bytes, now_us: int) -> bytes:
        for frame in self._decoder.feed(data):
            if self.done:
                break
            if self._accepted(frame, now_us):
                self._last_rx_us = now_us
                self._on_frame(frame.message, now_us)
        return self._flush()

    def tick(self, now_us: int) -> bytes:
        if self.done:
            return self._flush()
        waiting = self.step in (Step.CONNECTING, Step.RESTARTING) and self.device is None
        if waiting:
            if now_us - self._connect_us >= HELLO_GIVE_UP_US:
                self._lost(now_us, "the pen did not answer HELLO within 2 s")
                return self._flush()
            if now_us - self._hello_us >= HELLO_RETRY_US:
                self._hello(now_us)
        elif self.step is Step.RESTARTING and now_us - self._restart_us > HELLO_GIVE_UP_US:
            self._settle_restart()
            return self._flush()
        elif now_us - self._last_rx_us > SILENCE_US:
            self._lost(now_us, f"nothing from the pen for {SILENCE_US // 1000} ms")
            return self._flush()
        try:
            for _pending, frame in self._link.resends_due(now_us):
                self._out += frame
        except LinkLost as lost:
            self._lost(now_us, f"{lost.pending.message.TYPE.name} was never acknowledged")
            return self._flush()
        if self._link.heartbeat_due(now_us) and not waiting:
            self._send(p.Heartbeat((now_us // 1000) & _U32), now_us)
        return self._flush()

    # --- plumbing ---------------------------------------------------------------

    def _flush(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, message: p.Message, now_us: int) -> None:
        self._out += self._link.send(message, now_us)

    def _fail(self, text: str) -> None:
        self.step = Step.FAILED
        self.error = text

    def _begin_again(self, now_us: int) -> None:
        self.attempt += 1
        self._link = LinkState()
        self._decoder = p.Decoder()
        self._handshake: HostHandshake | None = None
        #: the session our AUTH_CONFIRM proposes: our frames are signed from the pen's
        #: first signed frame that holds under it (spec: the ACK of AUTH_CONFIRM), so
        #: a resend of a lost AUTH_CONFIRM still goes unsigned, to a pen with no session
        self._confirming: SecureSession | None = None
        self._nonce = int.from_bytes(self._entropy(4), "little")
        self._connect_us = self._hello_us = self._last_rx_us = now_us
        self.device = None
        self.acked_chunks = 0
        self._prepared = False
        self.step = Step.CONNECTING

    def _lost(self, now_us: int, why: str) -> None:
        if self.step is Step.RESTARTING:
            self._fail(f"{why} after the restart; the pen's new firmware is unknown: "
                       "switch it off and on, then `devicectl firmware update` again")
            return
        if self.attempt >= MAX_ATTEMPTS:
            self._fail(f"the link to the pen kept dropping ({why}); the pen still runs its "
                       "previous firmware; check the cable and try again")
            return
        self.notes.append(f"link dropped ({why}); beginning again")
        self._begin_again(now_us)
        self._hello(now_us)

    def _hello(self, now_us: int) -> None:
        self._hello_us = now_us
        self._send(p.Hello(p.PROTO_VERSION, self._nonce), now_us)

    def _accepted(self, frame: p.Frame, now_us: int) -> bool:
        """Once secure, only signed frames whose tag and counter hold; DEVICE_INFO too
        (the pen answers HELLO unsigned)."""
        secure = self._link.secure
        if secure is None and frame.signed and self._confirming is not None:
            if not self._confirming.accept(frame):
                return False
            self._link.secure, self._confirming = self._confirming, None
            return True
        if secure is None or isinstance(frame.message, p.DeviceInfo):
            return True
        if frame.signed:
            return secure.accept(frame)
        message = frame.message
        if (isinstance(message, p.Ack) and message.status == p.Nack.AUTH
                and message.acked_type != p.MsgType.HEARTBEAT):
            self._lost(now_us, "the pen no longer knows our secure session")
        return False

    # --- frames from the pen ----------------------------------------------------

    def _on_frame(self, m: p.Message | p.Unknown, now_us: int) -> None:
        if isinstance(m, p.DeviceInfo):
            self._on_device_info(m, now_us)
        elif isinstance(m, p.AuthProof):
            self._on_proof(m, now_us)
        elif isinstance(m, p.Telemetry):
            self._on_telemetry(m, now_us)
        elif isinstance(m, p.Ack):
            if (m.acked_type == p.MsgType.AUTH_BEGIN and m.status == p.Nack.AUTH
                    and self.step is Step.AUTHENTICATING):
                # the pen holds a secure session (spec: once secure, an unsigned
                # AUTH_BEGIN is refused), another host's: this one cannot sign for it
                self._fail("the pen holds a secure session of another connection and "
                           "refuses a new one unsigned: switch it off and on, then "
                           "`devicectl firmware update` again")
                return
            message = self._link.ack(m.acked_seq, m.acked_type)
            if message is not None:
                self._on_ack(message, m.status, now_us)
        elif isinstance(m, p.Event) and self.step is Step.RESTARTING:
            self._on_restart_event(m)

    def _on_device_info(self, info: p.DeviceInfo, now_us: int) -> None:
        if info.nonce != self._nonce or self.device is not None:
            return
        self.device = info
        if self.step is Step.RESTARTING:
            self.running_version = info.fw_version
            return
        serial, caps = info.serial_number, info.capabilities
        if not caps & p.Capability.UPDATE:
            self._fail(f"pen {serial} cannot be updated over the link (it lacks UPDATE)")
            return
        if self.image.fw_version < info.fw_version:
            self._fail(f"the image is firmware {self.image.version_text}, older than the pen's "
                       f"{version_text(info.fw_version)}: no downgrade")
            return
        key = self._key_for(serial)
        if caps & (p.Capability.AUTH | p.Capability.AUTH_REQUIRED):
            if key is None:
                self._fail(f"pen {serial} requires the authenticated link and the keyring has "
                           f"no key for it: `devicectl keys add {serial}`")
                return
            self._handshake = HostHandshake(key, serial, self._entropy(RANDOM_BYTES))
            self.step = Step.AUTHENTICATING
            self._send(self._handshake.begin(), now_us)
        elif (problem := unauthenticated_problem(self._key_for, serial, key)) is not None:
            self._fail(problem)
        else:
            self.step = Step.PREPARING

    def _on_proof(self, proof: p.AuthProof, now_us: int) -> None:
        if self.step is not Step.AUTHENTICATING or self._handshake is None:
            return
        confirm = self._handshake.proof(proof)
        if confirm is None:
            serial = self.device.serial_number if self.device else "?"
            self._fail(f"pen {serial} could not prove its key: not a genuine pen, "
                       "or not this clinic's key")
            return
        self._send(confirm, now_us)  # unsigned, as its resends (`_accepted`)
        self._confirming = self._handshake.session

    def _on_telemetry(self, t: p.Telemetry, now_us: int) -> None:
        if self.step is not Step.PREPARING or self._prepared:
            return
        self._prepared = True
        state = t.state
        if state == p.PenState.STAMPING:
            self._fail("the pen is stamping; end the session before updating its firmware")
        elif state == p.PenState.FAULT:
            self._send(p.ClearFault(), now_us)
        elif state == p.PenState.UPDATING:
            self._send(p.FwAbort(), now_us)  # an earlier, unfinished update: start over
        else:
            self._fw_begin(now_us)

    def _fw_begin(self, now_us: int) -> None:
        image = self.image
        self._send(p.FwBegin(len(image.data), image.crc32, image.fw_version), now_us)
        self.step = Step.SENDING

    def _on_ack(self, message: p.Message, status: int, now_us: int) -> None:
        if status != p.Nack.OK:
            self._on_nack(message, status, now_us)
        elif isinstance(message, p.AuthConfirm):
            self.step = Step.PREPARING
        elif isinstance(message, p.ClearFault | p.FwAbort):
            self._fw_begin(now_us)
        elif isinstance(message, p.FwBegin | p.FwChunk):
            if isinstance(message, p.FwChunk):
                self.acked_chunks += 1
            if self.acked_chunks < len(self._chunks):
                offset, data = self._chunks[self.acked_chunks]
                self._send(p.FwChunk(offset, data), now_us)
            else:
                self._send(p.FwCommit(), now_us)
                self.step = Step.COMMITTING
        elif isinstance(message, p.FwCommit):
            # The pen restarts: no session, no state; greet the new firmware.
            self.step = Step.RESTARTING
            self._link = LinkState()
            self._decoder = p.Decoder()
            self.device = None
            self._connect_us = now_us
            self._restart_us = now_us
            self._hello(now_us)

    def _on_nack(self, message: p.Message, status: int, now_us: int) -> None:
        running = version_text(self.device.fw_version) if self.device else "?"
        texts: dict[int, str] = {
            p.Nack.BAD_IMAGE: "the pen refused the image (BAD_IMAGE): its CRC, format, hardware "
            f"id, version or signature did not pass the pen's checks; it still runs {running}",
            p.Nack.AUTH: "the pen requires a signed link and refused the command (AUTH)",
            p.Nack.BAD_STATE: f"the pen cannot take {message.TYPE.name} in its state (BAD_STATE)",
            p.Nack.BAD_ARG: f"the pen refused {message.TYPE.name}'s arguments (BAD_ARG): "
            "the image is empty or over 1 MiB",
            p.Nack.FAULT_ACTIVE: "the pen's fault persists (FAULT_ACTIVE); fix its cause first",
        }
        if isinstance(message, p.FwCommit):
            self._send(p.FwAbort(), now_us)  # leave UPDATING; nothing was changed
        self._fail(texts.get(status, f"the pen refused {message.TYPE.name} (NACK code {status})"))

    def _settle_restart(self) -> None:
        """No FW_UPDATED or FW_ROLLBACK came: judge by the version the pen reports."""
        if self.running_version == self.image.fw_version:
            self.step = Step.DONE
        else:
            self._fail("the pen restarted without reporting the new firmware; it runs "
                       f"{version_text(self.running_version or 0)}")

    def _on_restart_event(self, ev: p.Event) -> None:
        """The restarted pen's word, unsigned (it has no session): believed only with
        the DEVICE_INFO answering our HELLO, which comes first, naming the same version."""
        if self.running_version is None:
            return
        if ev.event == p.PenEvent.FW_UPDATED:
            if self.running_version == self.image.fw_version:
                self.step = Step.DONE
            else:
                self._fail(f"the pen reported firmware {self.image.version_text} installed but "
                           f"runs {version_text(self.running_version)}")
        elif ev.event == p.PenEvent.FW_ROLLBACK:
            running = version_text(self.running_version) if self.running_version else "?"
            self._fail(f"firmware {self.image.version_text} failed its self-test at its first "
                       f"start; the pen rolled back and runs {running}")
