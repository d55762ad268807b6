"""Columnar decoding gives the JSON objects of the per-frame decoder (hypothesis)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl import cli, columnar
from devicectl.columnar import decode_chunks, decode_recorded, decode_stream
from devicectl.commands.link_cmd import decode_events, event_to_dict
from devicectl.commands.sessions_cmd import frame_lines
from devicectl.flight import SLOT_BYTES, FlightRecorder, pack
from devicectl.protocol import (
    MESSAGE_CLASSES,
    AuthProof,
    Decoder,
    Event,
    Fault,
    Heartbeat,
    SetTarget,
    Telemetry,
    encode,
    encode_raw,
    field_names,
    field_ranges,
    field_sizes,
    frame_of_packet,
)
from devicectl.records import EventRecord
from devicectl.signing import HOST, PEN, SecureSession
from tests.test_protocol_properties import messages

SETTINGS = settings(max_examples=80, deadline=None)
_KEY = bytes(range(32))


def reference(data: bytes) -> list[dict[str, Any]]:
    """What `wire decode` prints for `data`, one dict per frame or discard."""
    return [event_to_dict(e) for e in decode_events(Decoder(), data)]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame on the wire: good, signed, unknown type, odd length, or damaged."""
    kind = draw(st.sampled_from(["good", "good", "good", "signed", "unknown", "raw", "damaged"]))
    seq = draw(st.integers(0, 255))
    if kind == "good":
        return encode(draw(messages()), seq, draw(st.integers(0, 255)) & ~0x02)
    if kind == "signed":
        side = SecureSession(_KEY, draw(st.sampled_from([HOST, PEN])))
        side.tx_counter = draw(st.integers(0, 2**32 - 2))
        return side.seal(draw(messages()), seq)
    if kind == "unknown":
        return encode_raw(draw(st.integers(0x20, 0xFF)), draw(st.binary(max_size=40)), seq,
                          draw(st.integers(0, 255)))
    if kind == "raw":  # a known type with a body of the wrong length, or any flags
        cls = draw(st.sampled_from(MESSAGE_CLASSES))
        return encode_raw(int(cls.TYPE), draw(st.binary(max_size=60)), seq,
                          draw(st.integers(0, 255)))
    wire = bytearray(encode(draw(messages()), seq))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(wire) - 1))
        wire[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        wire[draw(st.integers(0, len(wire) - 1)):] = draw(st.binary(max_size=80))
    return bytes(wire)


#: Repeating a few frames makes groups big enough for the columnar path.
captures = st.lists(frames(), min_size=1, max_size=12).flatmap(
    lambda pool: st.lists(st.sampled_from(pool), min_size=0, max_size=120)
).map(b"".join)


@SETTINGS
@given(captures, st.binary(max_size=20))
def test_stream_gives_the_per_frame_decoders_objects(capture: bytes, tail: bytes) -> None:
    data = capture + tail
    want = reference(data)
    every = decode_stream(data, min_group=1)  # every well-formed chunk through numpy
    assert every.events == want
    assert every.lines() == [json.dumps(e) for e in want]
    assert decode_stream(data).events == want


@SETTINGS
@given(st.lists(frames(), min_size=1, max_size=12).flatmap(
    lambda pool: st.lists(st.sampled_from(pool), max_size=80)))
def test_recorded_frames_give_each_a_fresh_decoders_objects(raws: list[bytes]) -> None:
    want = [reference(r) for r in raws]
    assert decode_recorded(raws, min_group=1) == want
    assert decode_recorded(raws) == want


def test_a_large_capture_takes_the_columnar_path_and_prints_the_same_json() -> None:
    pen = SecureSession(_KEY, PEN)
    good = [encode(m, i % 256) for i, m in enumerate(_sample_messages(400, Telemetry))]
    signed = [pen.seal(m, i % 256) for i, m in enumerate(_sample_messages(100, AuthProof))]
    bad = [b"\x05\x01\x02\x03\x04\x00", encode_raw(0x77, b"ab", 1, 0)]
    data = b"".join(good + signed + bad)
    got = decode_stream(data)
    assert got.per_frame == len(bad)  # only the damaged and the unknown went frame by frame
    assert got.lines() == [json.dumps(e) for e in reference(data)]
    assert [json.dumps(e) for e in got.events] == got.lines()
    assert got.events[-1] == {"type": "0x77", "seq": 1, "flags": 0, "body": "6162"}


def test_chunks_must_be_the_bytes_between_delimiters() -> None:
    with pytest.raises(ValueError, match="0x00"):
        decode_chunks([b"\x01\x00\x02"])
    with pytest.raises(ValueError, match="empty"):
        decode_chunks([b""])


def _sample_messages(n: int, cls: Any) -> list[Any]:
    rng = random.Random(17)
    ranges, sizes = field_ranges(cls), field_sizes(cls)
    return [
        cls(**{f: rng.randint(*ranges[f]) if f in ranges else rng.randbytes(sizes[f])
               for f in field_names(cls)})
        for _ in range(n)
    ]


def test_wire_decode_from_a_capture_file_prints_what_hex_decoding_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pen = SecureSession(_KEY, PEN)
    frames_ = [encode(m, i % 256) for i, m in enumerate(_sample_messages(300, Telemetry))]
    frames_ += [pen.seal(m, 7) for m in _sample_messages(20, AuthProof)]
    frames_ += [b"\x05\x01\x02\x03\x04\x00", encode_raw(0x77, b"ab", 1, 0), b"\x03\x01"]
    data = b"".join(frames_)  # the last frame has no delimiter: the end of the file ends it
    capture = tmp_path / "capture.bin"
    capture.write_bytes(data)
    assert cli.main(["wire", "decode", "--from", str(capture)]) == 0
    from_file = capsys.readouterr().out
    assert cli.main(["wire", "decode", data.hex()]) == 0
    from_hex = capsys.readouterr().out
    assert from_file == from_hex and from_file.count("\n") == 323
    # with a session key, tags are checked (frame by frame): the pen's tags are good
    assert cli.main(["wire", "decode", "--from", str(capture), "--session-key", _KEY.hex()]) == 0
    keyed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["tag_ok"] for e in keyed if "counter" in e] == [True] * 20


def test_wire_decode_from_a_missing_file_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.bin"
    assert cli.main(["wire", "decode", "--from", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read the capture {missing}" in err and err.count("\n") == 1
    assert cli.main(["wire", "decode", "--from", str(missing), "01 02"]) == 1
    assert "not both" in capsys.readouterr().err


def test_sessions_frames_prints_a_flight_recording_as_the_per_frame_decoder_would() -> None:
    ring = FlightRecorder(slots=512)
    pen = SecureSession(_KEY, PEN)
    wire = [encode(m, i % 256) for i, m in enumerate(_sample_messages(300, Telemetry))]
    wire += [pen.seal(m, 3) for m in _sample_messages(10, AuthProof)]
    wire += [b"\x05\x01\x02\x03\x04\x00", b"\x07" * 90 + b"\x00"]  # damaged; too long (cut)
    for t, w in enumerate(wire):
        ring.record(w[:7], t % 2, 1_000 + t)  # frames arrive in pieces
        ring.record(w[7:], t % 2, 1_000 + t)
    frames_ = ring.snapshot(1_000 + len(wire)).frames()
    record = EventRecord(5, "2026-11-29T22:00:00Z", "FLIGHT", "flight", None,
                         {"frames": pack(frames_), "trigger": "an emergency stop"})
    lines = frame_lines([record])
    want = []
    for f in frames_:
        where = {"recording": 1, "trigger": "an emergency stop",
                 "dir": ("rx", "tx")[f.direction], "host_t_us": f.t_us}
        events = ([{"discarded": "too_long", "length": f.length}] if f.length > SLOT_BYTES
                  else reference(f.raw))
        want += [json.dumps(where | e | {"hex": f.raw.hex(" ")}) for e in events]
    assert lines == want and len(lines) == len(wire)
    assert json.loads(lines[-1])["discarded"] == "too_long"


def _code_positions(chunk: bytes) -> list[int]:
    at, out = 0, []
    while at < len(chunk):
        out.append(at)
        at += chunk[at]
    return out


def test_code_bytes_that_jump_past_the_end_are_discarded_as_per_frame() -> None:
    """The COBS step keeps each row's next code position in a byte: a code byte that
    jumps past the end by more than 255 wraps around, and must still be a discard,
    never land on a later column or the end. Every code byte of good TELEMETRY
    chunks is set to every value that jumps past the end (wrapping or not)."""
    good = [encode(m, i % 256)[:-1] for i, m in enumerate(_sample_messages(4, Telemetry))]
    chunks = list(good)
    for chunk in good:
        for at in _code_positions(chunk):
            for value in range(len(chunk) - at + 1, 256):
                chunks.append(chunk[:at] + bytes([value]) + chunk[at + 1 :])
    data = b"\x00".join(chunks) + b"\x00"
    want = reference(data)
    assert sum("discarded" in e for e in want) == len(chunks) - len(good)
    got = decode_stream(data, min_group=1)
    assert got.per_frame == len(chunks) - len(good)  # the good ones went through numpy
    assert got.events == want


def test_field_columns_hold_the_decoded_values_whole_blocks_and_picked_rows() -> None:
    """A block of one layout, all good, keeps its columns whole; a block with a damaged
    frame in it picks the good rows. Both give each field's values in stream order."""
    messages_ = _sample_messages(50, Telemetry)
    wires = [encode(m, i % 256) for i, m in enumerate(messages_)]
    clean = decode_stream(b"".join(wires))
    flipped = wires[20][:5] + bytes([wires[20][5] ^ 0x10]) + wires[20][6:]  # a CRC discard
    damaged = [*wires[:20], flipped, *wires[21:]]
    mixed = decode_stream(b"".join(damaged))
    assert [t.picked is None for t in clean.tables] == [True]
    assert [t.picked is None for t in mixed.tables] == [False]
    for decoded, kept in ((clean, list(range(50))), (mixed, [i for i in range(50) if i != 20])):
        (table,) = decoded.tables
        assert table.where.tolist() == kept
        assert table.column("seq").tolist() == [i % 256 for i in kept]
        for name in field_names(Telemetry):
            assert table.column(name).tolist() == [getattr(messages_[i], name) for i in kept]


def _count_per_frame(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The chunks handed to the per-frame decoder from now on."""
    seen: list[bytes] = []
    per_frame = columnar._per_frame

    def counted(decoder: Decoder, chunk: bytes) -> dict[str, Any]:
        seen.append(chunk)
        return per_frame(decoder, chunk)

    monkeypatch.setattr(columnar, "_per_frame", counted)
    return seen


def test_one_length_of_several_kinds_gives_each_kind_its_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SET_TARGET, FAULT and EVENT packets are 11 bytes, a signed HEARTBEAT as long as
    AUTH_BEGIN: a block of one length may hold several kinds, in any order, the
    first row of another kind than the rest or damaged. Each kind is decoded by
    columns with its own layout, none by the per-frame decoder."""
    rng = random.Random(5)
    host = SecureSession(_KEY, HOST)
    kinds = [SetTarget, Fault, Event]
    pool = {cls: _sample_messages(40, cls) for cls in kinds}
    mixed = [encode(pool[Fault][0], 0)]  # the first row's kind is the rare one
    mixed += [encode(pool[rng.choice(kinds)][i], i) for i in range(1, 40)]
    broken = encode(pool[Event][1], 1)
    first_damaged = [bytes([0xFF, 0xFF]) + broken[2:], *mixed[1:]]  # a bad first row
    signed = [host.seal(Heartbeat(host_ms=i), i) for i in range(20)]
    signed.insert(7, encode_raw(0x09, bytes(range(1, 17)), 3, 0))  # AUTH_BEGIN, 22 bytes too
    seen = _count_per_frame(monkeypatch)
    for wires in (mixed, first_damaged, signed):
        data = b"".join(wires)
        got = decode_stream(data, min_group=1)
        assert got.events == reference(data)
        assert got.lines() == [json.dumps(e) for e in reference(data)]
    assert seen == []
    names = {t.layout.name for t in decode_stream(b"".join(mixed)).tables}
    assert names == {"SET_TARGET", "FAULT", "EVENT"}


def _version(wire: bytes, version: int, crc_ok: bool = True) -> bytes:
    """The frame of `wire`'s packet with another version byte, its CRC right or not."""
    packet = cobs.decode(wire[:-1])[:-2]
    out = frame_of_packet(bytes([version]) + packet[1:])
    if crc_ok:
        return out
    sent = bytearray(cobs.decode(out[:-1]))
    sent[-1] ^= 0x01
    return bytes(cobs.encode(bytes(sent))) + b"\x00"


def test_another_version_is_a_version_or_crc_discard_as_per_frame() -> None:
    """The CRC by columns takes the version byte as read when a packet's covered
    bytes are odd (TELEMETRY: 29): a packet of another version must still be a
    version discard when its CRC is right and a CRC discard when not, for odd and
    even (HEARTBEAT: 8) covered lengths alike."""
    for cls in (Telemetry, Heartbeat):
        wires = [encode(m, i) for i, m in enumerate(_sample_messages(30, cls))]
        wires[3] = _version(wires[3], 2)
        wires[9] = _version(wires[9], 0)
        wires[12] = _version(wires[12], 2, crc_ok=False)
        data = b"".join(wires)
        want = reference(data)
        assert [want[i] for i in (3, 9, 12)] == [
            {"discarded": "version"}, {"discarded": "version"}, {"discarded": "crc"}]
        assert decode_stream(data, min_group=1).events == want


def test_cobs_and_crc_discards_in_a_block_are_told_without_the_per_frame_decoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a block of one length, a chunk whose COBS chain misses the end is a COBS
    discard and one whose CRC is wrong a CRC discard, told by columns: as the
    per-frame decoder tells them, which sees none of them."""
    wires = [encode(m, i) for i, m in enumerate(_sample_messages(60, Telemetry))]
    for i in range(0, 60, 7):  # a flipped bit in the body or the CRC: a CRC discard
        at = 4 + i % 27
        wires[i] = wires[i][:at] + bytes([wires[i][at] ^ (1 << i % 8) or 1]) + wires[i][at + 1:]
    for i in (5, 33):  # the first code byte past the end: a COBS discard
        wires[i] = bytes([0xF0]) + wires[i][1:]
    data = b"".join(wires)
    want = reference(data)
    reasons = sorted({e["discarded"] for e in want if "discarded" in e})
    assert reasons == ["cobs", "crc"]
    seen = _count_per_frame(monkeypatch)
    got = decode_stream(data, min_group=1)
    assert got.events == want and seen == []
    assert got.per_frame == sum("discarded" in e for e in want)


def test_empty_chunks_and_lengths_left_to_the_per_frame_decoder() -> None:
    """Two 0x00 in a row make no chunk; the chunks of lengths too rare for numpy go
    frame by frame, whether there are a few such lengths or many."""
    wires = [encode(m, i) for i, m in enumerate(_sample_messages(40, Telemetry))]
    for lengths in ((9, 13), (9, 13, 17, 21, 25, 29, 40)):
        odd = [bytes(range(1, n + 1)) + b"\x00" for n in lengths]
        data = b"\x00\x00" + b"".join(wires[:20]) + b"\x00" + b"".join(odd) + b"".join(wires[20:])
        got = decode_stream(data)
        assert got.events == reference(data)
        assert got.per_frame == len(lengths) and got.count == 40 + len(lengths)


@SETTINGS
@given(captures, st.binary(max_size=20), st.sampled_from([1, 2, 7, 64]))
def test_zeros_found_a_slice_at_a_time_are_all_of_them(
    capture: bytes, tail: bytes, step: int
) -> None:
    """decode_stream looks for the 0x00s a slice of the capture at a time: with
    slices of a few bytes, delimiters fall on and around every slice's edge."""
    data = capture + tail
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columnar, "_ZEROS_SLICE", step)
        assert decode_stream(data, min_group=1).events == reference(data)
