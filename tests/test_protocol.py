"""The codec against the spec: test vectors byte for byte, the receiver's discard
rules, range errors at encode time, and the decoded objects themselves."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from devicectl import messages
from devicectl.errors import ProtocolError
from devicectl.protocol import (
    MAX_ENCODED,
    Ack,
    AuthBegin,
    Configure,
    Decoder,
    DeviceInfo,
    Discard,
    Estop,
    Event,
    Fault,
    Frame,
    FwChunk,
    Heartbeat,
    Hello,
    SetTarget,
    Start,
    Stop,
    Telemetry,
    Unknown,
    encode,
    encode_packet,
    encode_raw,
    encode_telemetry,
)

# The spec's test vectors: (message, seq, wire bytes).
VECTORS = [
    (Hello(1, 305419896), 0, "03 01 01 01 02 01 07 78 56 34 12 05 f0 00"),
    (Heartbeat(1000), 1, "04 01 02 01 03 e8 03 01 03 d7 0b 00"),
    (Configure(1000, 100), 2, "08 01 03 02 01 e8 03 64 03 e9 10 00"),
    (SetTarget(1500, 1000, 3), 3, "0c 01 04 03 01 dc 05 e8 03 03 32 0d 00"),
    (Start(), 4, "07 01 05 04 01 61 c5 00"),
    (Estop(1), 5, "08 01 07 05 01 01 90 22 00"),
    (Ack(3, 4, 0), 7, "04 01 40 07 03 03 04 03 ff d1 00"),
    (Ack(3, 4, 2), 8, "04 01 40 08 06 03 04 02 44 94 00"),
    (
        Telemetry(123456, 3, 0, 1500, 1498, 1000, 42, 125, -340, 1, 3, 3900),
        9,
        "04 01 42 09 04 40 e2 01 02 03 01 08 dc 05 da 05 e8 03 2a 01 01 02 7d 09 ac fe "
        "01 03 3c 0f 40 4a 00",
    ),
    (
        Telemetry(0, 2, 0, 0, 0, 0, 0, 32767, 32767, 0, 0, 4100),
        10,
        "04 01 42 0a 01 01 01 01 02 02 01 01 01 01 01 01 01 01 01 01 01 05 ff 7f ff 7f "
        "01 05 04 10 42 b4 00",
    ),
    (
        DeviceInfo(305419896, 1, 258, 100042, 2500, 200, 1600, 12, 3, 12648430, 0, 50),
        0,
        "03 01 41 01 06 78 56 34 12 01 06 02 01 ca 86 01 04 c4 09 c8 08 40 06 0c 03 ee "
        "ff c0 01 01 01 01 02 32 03 98 e4 00",
    ),
    (Fault(1, 0, 1612), 11, "04 01 43 0b 02 01 01 05 4c 06 ed 04 00"),
    (Event(3, 5000000), 12, "04 01 44 0c 05 03 40 4b 4c 03 34 7d 00"),
]
VECTOR_IDS = [f"{type(m).__name__}-{seq}" for m, seq, _ in VECTORS]


@pytest.mark.parametrize(("message", "seq", "wire"), VECTORS, ids=VECTOR_IDS)
def test_spec_vector_encodes_byte_for_byte(message: object, seq: int, wire: str) -> None:
    assert encode(message, seq) == bytes.fromhex(wire)  # type: ignore[arg-type]


@pytest.mark.parametrize(("message", "seq", "wire"), VECTORS, ids=VECTOR_IDS)
def test_spec_vector_decodes_to_its_message(message: object, seq: int, wire: str) -> None:
    decoder = Decoder()
    frames = decoder.feed(bytes.fromhex(wire))
    assert [(f.seq, f.message) for f in frames] == [(seq, message)]
    assert frames[0].flags == (1 if 0x03 <= message.TYPE <= 0x08 else 0)  # type: ignore[attr-defined]
    assert decoder.frames == 1 and decoder.bad_frames == 0


def test_crc_is_ccitt_false_with_spec_check_value() -> None:
    import binascii

    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1


def test_decoded_message_is_a_real_frozen_instance() -> None:
    """What the decoder returns is an ordinary frozen, slotted instance."""
    message, _seq, wire = VECTORS[8]
    frame = Decoder().feed(bytes.fromhex(wire))[0]
    assert type(frame.message) is Telemetry
    assert frame.message == message and hash(frame.message) == hash(message)
    assert repr(frame.message) == repr(message)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.message.depth_meas_um = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.seq = 0  # type: ignore[misc]
    assert not hasattr(frame.message, "__dict__")
    assert dataclasses.replace(frame.message, depth_meas_um=1) != message


def test_the_written_out_inits_keep_the_dataclass_api() -> None:
    """Telemetry and Frame write their `__init__` out (compiled speed); the rest is the
    dataclass's: keywords, defaults, equality by fields, hashing, repr, fields(),
    no attribute set or deleted after construction, pickling."""
    values = (1, 3, 0, 800, 780, 1000, 5, -600, 1600, 1, 2, 3900)
    names = [f.name for f in dataclasses.fields(Telemetry)]
    by_name = Telemetry(**dict(zip(names, values, strict=True)))
    assert by_name == Telemetry(*values) and hash(by_name) == hash(Telemetry(*values))
    assert [getattr(by_name, n) for n in names] == list(values)
    assert by_name != Telemetry(*values[:-1], 3901)
    assert repr(by_name) == "Telemetry(" + ", ".join(
        f"{n}={v}" for n, v in zip(names, values, strict=True)) + ")"
    frame = Frame(4, 1, by_name)
    assert (frame.counter, frame.tag, frame.head) == (None, b"", b"") and not frame.signed
    assert frame == Frame(4, 1, Telemetry(*values), None, b"", b"") and frame.ack_req
    assert hash(frame) == hash(Frame(4, 1, Telemetry(*values)))
    assert frame != Frame(4, 1, by_name, 7) and Frame(4, 1, by_name, 7).signed
    assert repr(frame) == (
        f"Frame(seq=4, flags=1, message={by_name!r}, counter=None, tag=b'', head=b'')")
    for obj, field in ((by_name, "x_dmm"), (frame, "message")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, 0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(obj, field)
        assert pickle.loads(pickle.dumps(obj)) == obj
    with pytest.raises(TypeError):
        Telemetry(*values[:-1])  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (SetTarget(70000, 1000, 3), "depth_um"),
        (Telemetry(-1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "t_us"),
        (Telemetry(0, 3, 0, 0, 0, 0, -5, 0, 0, 0, 0, 0), "stamp_count"),
        (Telemetry(0, 3, 0, 0, 0, 0, 0, 40000, 0, 0, 0, 0), "x_dmm"),
        (Estop(256), "reason"),
        (Heartbeat(2**32), "host_ms"),
    ],
)
def test_out_of_range_field_raises_protocol_error_naming_it(message: object, field: str) -> None:
    with pytest.raises(ProtocolError, match=rf"\.{field} = "):
        encode(message, 0)  # type: ignore[arg-type]


def test_a_float_field_never_reaches_the_wire() -> None:
    """Pure Python builds the message and `encode` names the field; compiled with
    mypyc (make compiled), the class enforces its `int` field at construction."""
    if messages.__file__ is not None and not messages.__file__.endswith(".py"):
        with pytest.raises(TypeError):
            Configure(1.5, 100)  # type: ignore[arg-type]
        return
    with pytest.raises(ProtocolError, match=r"\.telemetry_hz = "):
        encode(Configure(1.5, 100), 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(("seq", "flags"), [(256, 0), (-1, 0), (0, 256), (0, -1)])
def test_seq_or_flags_out_of_a_byte_raise_protocol_error(seq: int, flags: int) -> None:
    with pytest.raises(ProtocolError, match="seq"):
        encode(Start(), seq, flags)


def test_explicit_flags_override_spec_default() -> None:
    frame = Decoder().feed(encode(Heartbeat(5), 1, flags=1))[0]
    assert frame.flags == 1 and frame.ack_req


def _count(decoder: Decoder, reason: Discard) -> int:
    return decoder.discarded[reason]


def test_chunk_longer_than_66_bytes_is_discarded_as_too_long() -> None:
    decoder = Decoder()
    good = encode(Heartbeat(1), 0)
    assert decoder.feed(b"\x01" * (MAX_ENCODED + 1) + b"\x00" + good) == Decoder().feed(good)
    assert _count(decoder, Discard.TOO_LONG) == 1


def test_overlong_run_across_feeds_is_discarded_once_and_memory_stays_bounded() -> None:
    decoder = Decoder()
    for _ in range(100):
        assert decoder.feed(b"\x05" * 50) == []
        assert decoder.buffered <= MAX_ENCODED
    frames = decoder.feed(b"\x00" + encode(Heartbeat(7), 3))
    assert [f.message for f in frames] == [Heartbeat(7)]
    assert _count(decoder, Discard.TOO_LONG) == 1


def test_bad_cobs_is_discarded_as_cobs() -> None:
    decoder = Decoder()
    assert decoder.feed(b"\x09\x01\x02\x00") == []  # code byte points past the chunk
    assert _count(decoder, Discard.COBS) == 1


def test_bad_crc_is_discarded_as_crc() -> None:
    packet = bytearray(encode_packet(Heartbeat(1000), 1))
    packet[-1] ^= 0x01
    from cobs import cobs

    decoder = Decoder()
    assert decoder.feed(cobs.encode(bytes(packet)) + b"\x00") == []
    assert _count(decoder, Discard.CRC) == 1


def test_unknown_version_is_discarded_as_version() -> None:
    import binascii

    from cobs import cobs

    head = bytes([2, 0x02, 0, 0]) + (1000).to_bytes(4, "little")
    packet = head + binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "little")
    decoder = Decoder()
    assert decoder.feed(cobs.encode(packet) + b"\x00") == []
    assert _count(decoder, Discard.VERSION) == 1


@pytest.mark.parametrize("body", [b"", b"\x01\x02\x03", b"\x00" * 5])
def test_body_of_wrong_length_for_its_type_is_discarded_as_length(body: bytes) -> None:
    decoder = Decoder()
    assert decoder.feed(encode_raw(0x02, body, 0, 0)) == []  # HEARTBEAT is 4 bytes
    assert _count(decoder, Discard.LENGTH) == 1


def test_packet_shorter_than_header_and_crc_is_discarded_as_length() -> None:
    decoder = Decoder()
    assert decoder.feed(b"\x03\x01\x02\x00") == []
    assert _count(decoder, Discard.LENGTH) == 1


def test_unknown_type_with_valid_crc_comes_out_as_unknown_and_is_counted() -> None:
    decoder = Decoder()
    frames = decoder.feed(encode_raw(0x7F, b"\xaa\xbb", 5, 1))
    assert [(f.seq, f.flags, f.message) for f in frames] == [(5, 1, Unknown(0x7F, b"\xaa\xbb"))]
    assert decoder.unknown_type == 1 and decoder.bad_frames == 0


def test_empty_chunks_between_delimiters_are_skipped_not_counted() -> None:
    decoder = Decoder()
    frames = decoder.feed(b"\x00\x00" + encode(Start(), 4) + b"\x00\x00")
    assert [f.message for f in frames] == [Start()]
    assert decoder.bad_frames == 0


def test_receiver_resynchronises_at_next_delimiter_after_garbage() -> None:
    decoder = Decoder()
    stream = b"\xde\xad\xbe\xef" + encode(Heartbeat(1), 0) + b"\x13\x37\x00" + encode(Stop(), 1)
    assert [f.message for f in decoder.feed(stream)] == [Stop()]
    assert decoder.bad_frames == 2


@pytest.mark.parametrize(
    "values",
    [
        (123456, 3, 0, 1500, 1498, 1000, 42, 125, -340, 1, 3, 3900),
        (0, 2, 0, 0, 0, 0, 0, 32767, 32767, 0, 0, 4100),
        (0xFFFF_FFFF, 5, 0x1FF, 0xFFFF, 0, 0xFFFF, 0xFFFF_FFFF, -32768, 32767, 1, 255, 0),
    ],
)
def test_encode_telemetry_gives_the_same_bytes_as_encode(values: tuple[int, ...]) -> None:
    for seq in (0, 9, 255):
        assert encode_telemetry(seq, values) == encode(Telemetry(*values), seq)


def test_encode_telemetry_out_of_range_raises_the_same_located_error() -> None:
    with pytest.raises(ProtocolError, match=r"TELEMETRY\.x_dmm = 40000"):
        encode_telemetry(0, (0, 3, 0, 0, 0, 0, 0, 40000, 0, 0, 0, 0))


def test_signed_flag_without_a_session_is_refused_at_encode() -> None:
    with pytest.raises(ProtocolError, match="SIGNED"):
        encode(Heartbeat(5), 1, flags=2)


def test_byte_string_field_of_the_wrong_length_is_refused_not_padded() -> None:
    with pytest.raises(ProtocolError, match=r"AUTH_BEGIN\.host_random .* exactly 16 bytes"):
        encode(AuthBegin(bytes(15)), 0)
    with pytest.raises(ProtocolError, match=r"FW_CHUNK\.data .* exactly 40 bytes"):
        encode(FwChunk(0, bytes(41)), 0)


@pytest.mark.parametrize("type_code", [0x7F, 0x02, 0x42])
def test_packet_longer_than_64_bytes_is_a_length_discard_whatever_its_type(
    type_code: int,
) -> None:
    # 4 header + 59 body + 2 CRC = 65 bytes: its COBS form (66) passes the size check.
    frame = encode_raw(type_code, b"\xaa" * 59, 0, 1)
    assert len(frame) - 1 <= MAX_ENCODED
    decoder = Decoder()
    assert decoder.feed(frame) == []
    assert _count(decoder, Discard.LENGTH) == 1 and decoder.unknown_type == 0


def test_packet_of_64_bytes_of_an_unknown_type_still_comes_out_as_unknown() -> None:
    decoder = Decoder()
    (frame,) = decoder.feed(encode_raw(0x7F, b"\xaa" * 58, 0, 1))
    assert frame.message == Unknown(0x7F, b"\xaa" * 58)
