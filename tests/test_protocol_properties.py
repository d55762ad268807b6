"""Properties of the codec over whole field ranges and arbitrary input (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.errors import ProtocolError
from devicectl.protocol import (
    MAX_ENCODED,
    MESSAGE_CLASSES,
    Decoder,
    encode,
    field_names,
    field_ranges,
    field_sizes,
)

FAST = settings(max_examples=200, deadline=None)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """Any message of any type, each field anywhere in its wire range."""
    cls = draw(st.sampled_from(MESSAGE_CLASSES))
    return cls(**_fields(draw, cls))


def _fields(draw: st.DrawFn, cls: Any) -> dict[str, Any]:
    ranges = field_ranges(cls)
    sizes = field_sizes(cls)
    return {
        n: draw(st.integers(*ranges[n])) if n in ranges else draw(st.binary(min_size=sizes[n],
                                                                          max_size=sizes[n]))
        for n in field_names(cls)
    }


seqs = st.integers(0, 255)
#: Any flags an unsigned frame may carry (bit 1, SIGNED, needs a trailer: test_signing.py).
flag_values = st.integers(0, 255).map(lambda f: f & ~0x02)


@FAST
@given(messages(), seqs, flag_values)
def test_encode_then_decode_gives_back_every_message(message: Any, seq: int, flags: int) -> None:
    wire = encode(message, seq, flags)
    assert len(wire) <= MAX_ENCODED + 1 and wire.index(b"\x00") == len(wire) - 1
    frames = Decoder().feed(wire)
    assert [(f.seq, f.flags, f.message) for f in frames] == [(seq, flags, message)]


@FAST
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_raise_and_never_grow_memory(chunks: list[bytes]) -> None:
    decoder = Decoder()
    for chunk in chunks:
        decoder.feed(chunk)
        assert decoder.buffered <= MAX_ENCODED


@FAST
@given(st.binary(min_size=1, max_size=2000), st.integers(1, 97))
def test_arbitrary_stream_decodes_the_same_in_any_chunk_size(data: bytes, size: int) -> None:
    whole = Decoder()
    expected = whole.feed(data)
    pieces = Decoder()
    got = [f for i in range(0, len(data), size) for f in pieces.feed(data[i : i + size])]
    assert got == expected and pieces.discarded == whole.discarded


@FAST
@given(messages(), seqs, st.data())
def test_single_bit_flip_never_decodes_to_a_different_message(
    message: Any, seq: int, data: st.DataObject
) -> None:
    wire = encode(message, seq)
    bit = data.draw(st.integers(0, len(wire) * 8 - 1), label="bit")
    flipped = bytearray(wire)
    flipped[bit // 8] ^= 1 << (bit % 8)
    # A trailing delimiter ends whatever the flip left unterminated.
    frames = Decoder().feed(bytes(flipped) + b"\x00")
    assert all((f.seq, f.message) == (seq, message) for f in frames)
    assert len(frames) <= 1


def test_no_single_bit_flip_of_a_spec_vector_decodes_to_another_message() -> None:
    from test_protocol import VECTORS

    for message, seq, hex_wire in VECTORS:
        wire = bytes.fromhex(hex_wire)
        for bit in range(len(wire) * 8):
            flipped = bytearray(wire)
            flipped[bit // 8] ^= 1 << (bit % 8)
            frames = Decoder().feed(bytes(flipped) + b"\x00")
            assert all((f.seq, f.message) == (seq, message) for f in frames), (message, bit)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(messages(), seqs), min_size=1, max_size=6), st.data())
def test_frames_split_at_every_boundary_decode_the_same(
    items: list[tuple[Any, int]], data: st.DataObject
) -> None:
    stream = b"".join(encode(m, s) for m, s in items)
    expected = [(s, m) for m, s in items]
    cut = data.draw(st.integers(0, len(stream)), label="cut")
    decoder = Decoder()
    frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
    assert [(f.seq, f.message) for f in frames] == expected


def test_a_frame_split_at_every_possible_boundary_decodes_the_same() -> None:
    from test_protocol import VECTORS

    for message, seq, hex_wire in VECTORS:
        wire = bytes.fromhex(hex_wire)
        for cut in range(len(wire) + 1):
            decoder = Decoder()
            frames = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
            assert [(f.seq, f.message) for f in frames] == [(seq, message)], cut
        byte_by_byte = Decoder()
        frames = [f for b in wire for f in byte_by_byte.feed(bytes([b]))]
        assert [(f.seq, f.message) for f in frames] == [(seq, message)]


@st.composite
def out_of_range(draw: st.DrawFn) -> tuple[Any, str]:
    """A message with exactly one field just outside (or far outside) its range."""
    cls = draw(st.sampled_from([c for c in MESSAGE_CLASSES if field_ranges(c)]))
    ranges = field_ranges(cls)
    bad = draw(st.sampled_from(sorted(ranges)))
    lo, hi = ranges[bad]
    values = _fields(draw, cls)
    values[bad] = draw(st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)))
    return cls(**values), bad


@FAST
@given(out_of_range(), seqs)
def test_out_of_range_value_raises_protocol_error_naming_the_field(
    case: tuple[Any, str], seq: int
) -> None:
    message, bad = case
    try:
        encode(message, seq)
    except ProtocolError as exc:
        assert f".{bad} = " in str(exc)
    else:
        raise AssertionError(f"{message!r} encoded despite {bad} out of range")
