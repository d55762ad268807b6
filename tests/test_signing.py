"""The authenticated link against spec revision 1.1: its vectors byte for byte, both
directions; round trips of signed frames; and the receiving rules (replay, forged
tag, wrong key, stale counter, unsigned frame) dropped and counted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl import signing
from devicectl.protocol import (
    MAX_PACKET,
    MESSAGE_CLASSES,
    Ack,
    AuthBegin,
    AuthConfirm,
    AuthProof,
    Decoder,
    Discard,
    Heartbeat,
    Stop,
    Telemetry,
    encode,
)
from devicectl.signing import HOST, PEN, Drop, SecureSession

SERIAL = 4242
K_DEV = bytes.fromhex("6d3cc92572d381590f5ec214d07530545f66c15197b85eb659aa277a3a117a34")
HOST_RANDOM = bytes(range(16))
PEN_RANDOM = bytes(range(16, 32))
PEN_PROOF = bytes.fromhex("bba32bbd480f02ad52e0bcf31a4882f4")
K_S = bytes.fromhex("0a7a540d8855d6d3e065fd18aa6a4f0427398796488c18c45ee9bc8eb7920f2b")
HOST_PROOF = bytes.fromhex("64614bccc5645a41f2d476bdd0af45b7")

UNSIGNED_VECTORS = [
    (AuthBegin(HOST_RANDOM), 3,
     "04 01 09 03 01 12 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 65 dc 00"),
    (AuthProof(PEN_RANDOM, PEN_PROOF), 7,
     "04 01 45 07 23 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f bb a3 2b bd 48 0f 02 ad "
     "52 e0 bc f3 1a 48 82 f4 8a 7c 00"),
    (AuthConfirm(HOST_PROOF), 4,
     "17 01 0a 04 01 64 61 4b cc c5 64 5a 41 f2 d4 76 bd d0 af 45 b7 9e 79 00"),
]
# (message, seq, counter, sender, wire)
SIGNED_VECTORS = [
    (Heartbeat(1000), 5, 1, HOST,
     "07 01 02 05 02 e8 03 01 02 01 01 01 0b ef 8c b5 e1 b2 b7 a1 03 bd 7d 00"),
    (Stop(), 6, 2, HOST, "06 01 06 06 03 02 01 01 0b c3 aa c5 59 ea 69 da 7d 1a df 00"),
    (Ack(6, 0x06, 0), 9, 1, PEN,
     "07 01 40 09 02 06 06 02 01 01 01 0b f5 cb 85 89 f5 ad b2 9e 5a 7c 00"),
]


def _other(side: bytes) -> bytes:
    return PEN if side == HOST else HOST


def test_sim_key_derivation_matches_the_spec() -> None:
    assert signing.sim_device_key(SERIAL) == K_DEV


def test_handshake_values_match_the_spec() -> None:
    assert signing.pen_proof(K_DEV, HOST_RANDOM, PEN_RANDOM, SERIAL) == PEN_PROOF
    assert signing.session_key(K_DEV, HOST_RANDOM, PEN_RANDOM) == K_S
    assert signing.host_proof(K_S) == HOST_PROOF


@pytest.mark.parametrize(("message", "seq", "wire"), UNSIGNED_VECTORS)
def test_auth_vectors_encode_and_decode_byte_for_byte(message: Any, seq: int, wire: str) -> None:
    assert encode(message, seq) == bytes.fromhex(wire)
    frames = Decoder().feed(bytes.fromhex(wire))
    assert [(f.seq, f.message, f.signed) for f in frames] == [(seq, message, False)]


@pytest.mark.parametrize(("message", "seq", "counter", "sender", "wire"), SIGNED_VECTORS)
def test_signed_vectors_seal_byte_for_byte(
    message: Any, seq: int, counter: int, sender: bytes, wire: str
) -> None:
    session = SecureSession(K_S, sender)
    session.tx_counter = counter - 1
    assert session.seal(message, seq) == bytes.fromhex(wire)


@pytest.mark.parametrize(("message", "seq", "counter", "sender", "wire"), SIGNED_VECTORS)
def test_signed_vectors_decode_and_are_accepted_by_the_other_side(
    message: Any, seq: int, counter: int, sender: bytes, wire: str
) -> None:
    frames = Decoder().feed(bytes.fromhex(wire))
    assert [(f.seq, f.message, f.counter) for f in frames] == [(seq, message, counter)]
    receiver = SecureSession(K_S, _other(sender))
    assert receiver.accept(frames[0]) and receiver.rx_counter == counter


def test_signed_telemetry_is_43_bytes_and_the_fast_path_equals_seal() -> None:
    """The spec says "(TELEMETRY: 44)", but 4 + 25 + 12 + 2 is 43: 44 is the COBS frame
    before its delimiter. Both are checked, so a change to either shows up here."""
    values = (123456, 3, 0, 1500, 1498, 1000, 42, 125, -340, 1, 3, 3900)
    a, b = SecureSession(K_S, PEN), SecureSession(K_S, PEN)
    wire = a.seal(Telemetry(*values), 9)
    assert b.seal_telemetry(9, values) == wire
    frame = Decoder().feed(wire)[0]
    assert len(frame.head) + 12 + 2 == 43 and len(wire) == 44 + 1


def _pair() -> tuple[SecureSession, SecureSession]:
    return SecureSession(K_S, HOST), SecureSession(K_S, PEN)


def _decode_one(wire: bytes) -> Any:
    frames = Decoder().feed(wire)
    assert len(frames) == 1
    return frames[0]


def test_replayed_frame_is_dropped_and_counted() -> None:
    host, pen = _pair()
    wire = host.seal(Stop(), 1)
    assert pen.accept(_decode_one(wire))
    assert not pen.accept(_decode_one(wire))
    assert pen.dropped[Drop.OLD_COUNTER] == 1


def test_stale_counter_is_dropped_even_with_a_good_tag() -> None:
    host, pen = _pair()
    older = host.seal(Heartbeat(1), 1)
    newer = host.seal(Heartbeat(2), 2)
    assert pen.accept(_decode_one(newer))
    assert not pen.accept(_decode_one(older))
    assert pen.dropped[Drop.OLD_COUNTER] == 1 and pen.rx_counter == 2


def test_forged_tag_is_dropped_and_does_not_move_the_counter() -> None:
    host, pen = _pair()
    wire = _decode_one(host.seal(Stop(), 1))
    forged = type(wire)(wire.seq, wire.flags, wire.message, 1000, bytes(8), wire.head)
    assert not pen.accept(forged)
    assert pen.dropped[Drop.BAD_TAG] == 1 and pen.rx_counter == 0
    assert pen.accept(wire)  # the genuine counter 1 is still new


def test_frame_sealed_with_a_wrong_key_is_dropped() -> None:
    stranger = SecureSession(bytes(32), HOST)
    _, pen = _pair()
    assert not pen.accept(_decode_one(stranger.seal(Stop(), 1)))
    assert pen.dropped[Drop.BAD_TAG] == 1


def test_altered_body_with_recomputed_crc_is_dropped() -> None:
    host, pen = _pair()
    frame = _decode_one(host.seal(Heartbeat(1000), 1))
    altered = type(frame)(frame.seq, frame.flags, Heartbeat(999), frame.counter, frame.tag,
                          frame.head[:4] + (999).to_bytes(4, "little"))
    assert not pen.accept(altered)


def test_frame_signed_for_the_other_direction_is_dropped() -> None:
    """A pen frame reflected back at the pen: same key, wrong direction."""
    _, pen = _pair()
    other_pen = SecureSession(K_S, PEN)
    assert not pen.accept(_decode_one(other_pen.seal(Ack(1, 6, 0), 1)))


def test_unsigned_frame_on_a_secure_link_is_dropped_and_counted() -> None:
    _, pen = _pair()
    assert not pen.accept(_decode_one(encode(Stop(), 1)))
    assert pen.dropped[Drop.UNSIGNED] == 1 and pen.dropped_total == 1


def test_signed_flag_with_the_unsigned_length_is_a_length_discard() -> None:
    from devicectl.protocol import encode_raw

    decoder = Decoder()
    assert decoder.feed(encode_raw(0x02, bytes(4), 0, 0x02)) == []
    assert decoder.discarded[Discard.LENGTH] == 1


def _fields(draw: st.DrawFn, cls: Any) -> dict[str, Any]:
    from devicectl.protocol import field_names, field_ranges, field_sizes

    ranges, sizes = field_ranges(cls), field_sizes(cls)
    return {
        n: draw(st.integers(*ranges[n])) if n in ranges
        else draw(st.binary(min_size=sizes[n], max_size=sizes[n]))
        for n in field_names(cls)
    }


@st.composite
def messages(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from(MESSAGE_CLASSES))
    return cls(**_fields(draw, cls))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(messages(), st.integers(0, 255), st.integers(0, 1)), min_size=1,
                max_size=8), st.integers(1, 40))
def test_signed_frames_round_trip_in_any_chunking(
    items: list[tuple[Any, int, int]], chunk: int
) -> None:
    sender, receiver = _pair()
    stream = b"".join(sender.seal(m, seq, flags) for m, seq, flags in items)
    decoder = Decoder()
    frames = [f for i in range(0, len(stream), chunk) for f in decoder.feed(stream[i:i + chunk])]
    assert [(f.seq, f.flags, f.message) for f in frames] == [
        (seq, flags | 0x02, m) for m, seq, flags in items
    ]
    assert [f.counter for f in frames] == list(range(1, len(items) + 1))
    assert all(receiver.accept(f) for f in frames) and receiver.dropped_total == 0
    assert all(len(f.head) + 14 <= MAX_PACKET for f in frames)


@settings(max_examples=200, deadline=None)
@given(messages(), st.integers(0, 255), st.data())
def test_any_single_bit_flip_of_a_signed_frame_is_never_obeyed_as_another(
    message: Any, seq: int, data: st.DataObject
) -> None:
    sender, receiver = _pair()
    wire = bytearray(sender.seal(message, seq))
    bit = data.draw(st.integers(0, len(wire) * 8 - 1), label="bit")
    wire[bit // 8] ^= 1 << (bit % 8)
    for frame in Decoder().feed(bytes(wire) + b"\x00"):
        if receiver.accept(frame):
            assert (frame.seq, frame.message) == (seq, message)
