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
from devicectl.controller_auth import LinkAuth
from devicectl.firmware import Image, chunks, version_text
from devicectl.linkstate import LinkLost, LinkState

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
        #: who must prove a key, and the filter once secure: the controller's own rules
        #: (controller_auth.py), its `previous` session included, with which the AUTH_BEGIN
        #: of an attempt after a dropped link is signed to a pen that still holds it
        self._auth = LinkAuth(key_for, entropy)
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
        frames = self._decoder.feed(data)
        auth, attempt = self._auth, self.attempt
        if auth.session is not None:
            if self._session_forgotten(frames, now_us):
                return self._flush()
            frames = auth.filter(frames)  # once secure: signed frames that hold, only
            if auth.confirmed and self._link.secure is None:
                self._link.secure = auth.session  # the pen signs: our frames are signed now
        for frame in frames:
            if self.done or self.attempt != attempt:
                break  # the rest of the batch belongs to the attempt that ended
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
        self._auth.reset()  # the session so far becomes `previous`
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

    def _session_forgotten(self, frames: list[p.Frame], now_us: int) -> bool:
        """Our frames are signed and the pen answers one, unsigned, with NACK AUTH: it
        has no session any more (restarted). Begin again at once, not after the resends."""
        if self._link.secure is None:
            return False
        for frame in frames:
            message = frame.message
            if (not frame.signed and isinstance(message, p.Ack)
                    and message.status == p.Nack.AUTH
                    and message.acked_type != p.MsgType.HEARTBEAT):
                self._lost(now_us, "the pen no longer knows our secure session")
                return True
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
                self._auth_begin_refused(now_us)
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
        decision = self._auth.decide(info)
        if isinstance(decision, str):
            self._fail(decision)
        elif decision is not None:
            self.step = Step.AUTHENTICATING
            self._send(decision, now_us)  # unsigned: AUTH_PROOF answers it
        else:
            self.step = Step.PREPARING

    def _on_proof(self, proof: p.AuthProof, now_us: int) -> None:
        if self.step is not Step.AUTHENTICATING:
            return
        answer = self._auth.proof(proof)
        if isinstance(answer, str):
            self._fail(answer)
        elif answer is not None:
            # Unsigned, and so is what follows until its ACK, the pen's first signed frame
            # (spec): a resend of it after a loss must reach a pen that has no session yet.
            self._send(answer, now_us)

    def _auth_begin_refused(self, now_us: int) -> None:
        """NACK AUTH to our unsigned AUTH_BEGIN: the pen still holds a secure session.
        After a dropped link it is this update's own: the same AUTH_BEGIN goes again,
        signed with it (spec: a signed AUTH_BEGIN starts a new session, ending the old).
        One this updater never held (another connection's) cannot be continued."""
        session = self._auth.begin_signed()
        begun = self._auth.begun
        if isinstance(session, str) or begun is None:
            self._fail("the pen holds a secure session this updater never held and refuses "
                       "a new one unsigned: switch it off and on, then `devicectl firmware "
                       "update` again")
            return
        self.notes.append("the pen still holds the dropped link's secure session: "
                          "AUTH_BEGIN again, signed with it")
        self._link.secure = session
        self._send(begun, now_us)
        self._link.secure = None  # the pen's answers and our AUTH_CONFIRM go unsigned

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
            self._auth = LinkAuth(self._key_for, self._entropy)  # the restart ended every session
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
