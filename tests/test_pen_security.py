"""The simulated pen's authenticated link (spec 1.1): the handshake, the receiving
rules (replay, forged tag, wrong key, unsigned command -> NACK AUTH, unsigned ESTOP
obeyed, AUTH_REQUIRED), through real frames, in virtual time."""

from __future__ import annotations

from dataclasses import replace

from devicectl.protocol import (
    Ack,
    AuthBegin,
    AuthConfirm,
    AuthProof,
    Capability,
    Decoder,
    DeviceInfo,
    Estop,
    FaultBit,
    Frame,
    Heartbeat,
    Hello,
    Message,
    Nack,
    PenState,
    SetTarget,
    Start,
    Stop,
    Telemetry,
    encode,
)
from devicectl.signing import (
    HOST,
    SecureSession,
    host_proof,
    pen_proof,
    session_key,
    sim_device_key,
)
from firmware_sim.firmware import Firmware
from firmware_sim.physics import PenParams, Physics

SERIAL = 100042
AUTH = int(Capability.POSITION | Capability.CONTACT | Capability.AUTH)
REQUIRED = AUTH | int(Capability.AUTH_REQUIRED)


class SecureBench:
    """A host that speaks to a Firmware through real frames, signed once secure."""

    def __init__(self, capabilities: int = AUTH) -> None:
        pen = replace(PenParams(), serial_number=SERIAL, capabilities=capabilities)
        self.fw = Firmware(pen, Physics(pen), entropy=lambda n: bytes(range(32, 32 + n)))
        self.decoder = Decoder()
        self.now_us = 0
        self.seq = 0
        self.session: SecureSession | None = None
        self.frames: list[Frame] = []
        self.fw.tick(0)

    def wire(self, msg: Message, *, signed: bool | None = None) -> tuple[bytes, int]:
        seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        sign = self.session is not None if signed is None else signed
        assert self.session is not None or not sign
        return (self.session.seal(msg, seq) if sign and self.session else encode(msg, seq)), seq

    def push(self, data: bytes) -> list[Frame]:
        out = self.decoder.feed(self.fw.receive_data(data, self.now_us))
        self.frames += out
        return out

    def send(self, msg: Message, *, signed: bool | None = None) -> list[Frame]:
        return self.push(self.wire(msg, signed=signed)[0])

    def ack(self, msg: Message, *, signed: bool | None = None) -> Frame:
        data, seq = self.wire(msg, signed=signed)
        acks = [f for f in self.push(data) if isinstance(f.message, Ack)
                and f.message.acked_seq == seq]
        assert acks, f"no ACK for {msg!r}"
        return acks[-1]

    def run(self, dt_us: int) -> None:
        end = self.now_us + dt_us
        while self.now_us < end:
            self.now_us += 1000
            self.frames += self.decoder.feed(self.fw.tick(self.now_us))
            if self.now_us % 20_000 == 0:
                self.send(Heartbeat(self.now_us // 1000))

    def authenticate(self, k_dev: bytes | None = None) -> Frame:
        k_dev = k_dev if k_dev is not None else sim_device_key(SERIAL)
        self.send(Hello(1, 7))
        host_random = bytes(16)
        proof = next(f.message for f in self.send(AuthBegin(host_random))
                 if isinstance(f.message, AuthProof))
        assert proof.pen_proof == pen_proof(k_dev, host_random, proof.pen_random, SERIAL)
        k_s = session_key(k_dev, host_random, proof.pen_random)
        confirm = self.ack(AuthConfirm(host_proof(k_s)), signed=False)
        self.session = SecureSession(k_s, HOST)
        return confirm


def test_auth_confirm_is_acked_with_the_pens_first_signed_frame() -> None:
    b = SecureBench()
    ack = b.authenticate()
    assert ack.counter == 1 and b.session is not None and b.session.accept(ack)
    assert ack.message == Ack(ack.message.acked_seq, 0x0A, Nack.OK)  # type: ignore[union-attr]


def test_after_auth_every_pen_frame_is_signed_and_verifies() -> None:
    b = SecureBench()
    b.authenticate()
    assert b.session is not None
    mark = len(b.frames)
    b.run(50_000)
    later = b.frames[mark:]
    assert any(isinstance(f.message, Telemetry) for f in later)
    assert all(b.session.accept(f) for f in later)


def test_wrong_host_proof_gets_nack_auth_and_no_session() -> None:
    b = SecureBench()
    b.send(Hello(1, 7))
    b.send(AuthBegin(bytes(16)))
    ack = b.ack(AuthConfirm(bytes(16)))
    assert ack.message.status == Nack.AUTH and not ack.signed  # type: ignore[union-attr]
    assert b.fw.auth is not None and b.fw.auth.session is None


def test_a_pen_proof_from_a_wrong_key_does_not_verify() -> None:
    b = SecureBench()
    b.send(Hello(1, 7))
    answer = b.send(AuthBegin(bytes(16)))
    proof = next(f.message for f in answer if isinstance(f.message, AuthProof))
    assert proof.pen_proof != pen_proof(bytes(32), bytes(16), proof.pen_random, SERIAL)


def test_auth_begin_while_stamping_is_nacked_bad_state() -> None:
    """Signed (once secure an unsigned one is NACK AUTH, whatever the state)."""
    b = SecureBench()
    b.authenticate()
    assert b.ack(SetTarget(800, 1000, 2)).message.status == Nack.OK  # type: ignore[union-attr]
    assert b.ack(Start()).message.status == Nack.OK  # type: ignore[union-attr]
    b.run(100_000)
    acks = [f.message for f in b.send(AuthBegin(bytes(16)))
            if isinstance(f.message, Ack)]
    assert acks and acks[0].status == Nack.BAD_STATE and b.fw.state is PenState.STAMPING


def test_unsigned_command_in_secure_mode_is_nacked_auth_and_not_obeyed() -> None:
    b = SecureBench()
    b.authenticate()
    ack = b.ack(SetTarget(800, 1000, 2), signed=False)
    assert ack.message.status == Nack.AUTH and not ack.signed  # type: ignore[union-attr]
    assert b.fw.target is None and b.fw.state is PenState.IDLE


def test_unsigned_estop_is_always_obeyed() -> None:
    b = SecureBench()
    b.authenticate()
    b.ack(SetTarget(800, 1000, 2))
    b.ack(Start())
    b.run(100_000)
    b.send(Estop(1), signed=False)
    assert b.fw.state is PenState.FAULT and b.fw.fault_flags & (1 << FaultBit.ESTOP)
    strokes = b.fw.physics.strokes
    b.run(50_000)
    assert b.fw.physics.strokes == strokes  # the motor is off


def test_unsigned_hello_is_answered_with_an_unsigned_device_info_in_secure_mode() -> None:
    b = SecureBench()
    b.authenticate()
    infos = [f for f in b.send(Hello(1, 99), signed=False) if isinstance(f.message, DeviceInfo)]
    assert len(infos) == 1 and not infos[0].signed and infos[0].message.nonce == 99  # type: ignore[union-attr]


def test_replayed_signed_command_is_dropped_and_counted_as_a_bad_frame() -> None:
    b = SecureBench()
    b.authenticate()
    data, seq = b.wire(Stop())
    first = b.push(data)
    assert any(isinstance(f.message, Ack) and f.message.acked_seq == seq for f in first)
    again = b.push(data)
    assert not any(isinstance(f.message, Ack) for f in again)
    assert b.fw.auth is not None and b.fw.auth.dropped_total == 1


def test_forged_tag_is_dropped_and_not_obeyed() -> None:
    b = SecureBench()
    b.authenticate()
    assert b.session is not None
    forger = SecureSession(bytes(32), HOST)
    forger.tx_counter = b.session.tx_counter + 5
    b.push(forger.seal(SetTarget(800, 1000, 2), 40))
    assert b.fw.target is None and b.fw.auth is not None and b.fw.auth.dropped_total == 1


def test_many_forged_frames_latch_link_like_any_bad_frames() -> None:
    b = SecureBench()
    b.authenticate()
    forger = SecureSession(bytes(32), HOST)
    b.push(b"".join(forger.seal(Heartbeat(i), i) for i in range(12)))
    assert b.fw.fault_flags & (1 << FaultBit.LINK)


def test_auth_required_nacks_unsigned_commands_before_a_session() -> None:
    b = SecureBench(REQUIRED)
    b.send(Hello(1, 7))
    ack = b.ack(SetTarget(800, 1000, 2))
    assert ack.message.status == Nack.AUTH and b.fw.target is None  # type: ignore[union-attr]
    b.send(Estop(3))
    assert b.fw.state is PenState.FAULT


def test_auth_required_pen_obeys_signed_commands_after_the_handshake() -> None:
    b = SecureBench(REQUIRED)
    b.authenticate()
    assert b.ack(SetTarget(800, 1000, 2)).message.status == Nack.OK  # type: ignore[union-attr]
    assert b.fw.state is PenState.READY


def test_pen_without_auth_obeys_unsigned_commands_as_in_1_0() -> None:
    b = SecureBench(int(Capability.POSITION | Capability.CONTACT))
    b.send(Hello(1, 7))
    assert b.ack(SetTarget(800, 1000, 2)).message.status == Nack.OK  # type: ignore[union-attr]
