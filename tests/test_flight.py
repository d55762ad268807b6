"""The flight recorder: a fixed ring of the frames on the wire, both ways, saved
into the record at an ESTOP, a pen fault and a bad end, and printed decoded by
`devicectl sessions frames`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clinic_support import GATE
from hypothesis import given
from hypothesis import strategies as st

from devicectl import protocol as p
from devicectl.cli import main
from devicectl.flight import RX, SLOT_BYTES, TX, WINDOW_US, FlightRecorder, pack, unpack
from devicectl.safety import OVERDEPTH_LIMIT_UM
from devicectl.store import Store

DATA = Path(__file__).parent / "data"


def frame(seq: int) -> bytes:
    return p.encode(p.Heartbeat(host_ms=seq), seq & 0xFF, 0)


def test_frames_split_across_reads_are_kept_whole_with_the_time_of_their_end() -> None:
    ring = FlightRecorder(slots=8)
    a, b = frame(1), frame(2)
    ring.record(a[:3], RX, 100)
    ring.record(a[3:] + b[:2], RX, 200)
    ring.record(frame(9), TX, 250)  # the other direction, in between
    ring.record(b[2:], RX, 300)
    got = ring.snapshot(300).frames()
    assert [(f.t_us, f.direction, f.raw) for f in got] == [(200, RX, a), (250, TX, frame(9)),
                                                           (300, RX, b)]


def test_the_ring_keeps_the_last_slots_and_the_last_ten_seconds() -> None:
    ring = FlightRecorder(slots=4)
    for i in range(10):
        ring.record(frame(i), TX, i * 1_000_000)
    assert [f.raw for f in ring.snapshot(9_000_000).frames()] == [frame(i) for i in range(6, 10)]
    ring = FlightRecorder(slots=64)
    for i in range(30):
        ring.record(frame(i), RX, i * 1_000_000)
    times = [f.t_us for f in ring.snapshot(29_000_000).frames()]
    assert times == [t * 1_000_000 for t in range(19, 30)]
    assert 29_000_000 - times[0] <= WINDOW_US


def test_an_overlong_chunk_is_cut_to_a_slot_and_remembers_its_length() -> None:
    ring = FlightRecorder(slots=4)
    ring.record(b"\x01" * 500 + b"\x00", RX, 5)
    (f,) = ring.snapshot(5).frames()
    assert f.length == 501 and len(f.raw) == SLOT_BYTES


def test_recording_does_not_grow_the_ring() -> None:
    ring = FlightRecorder(slots=16)
    sizes = (len(ring._ring), len(ring._stage[0]), len(ring._stage[1]))
    for i in range(1000):
        ring.record(frame(i)[:5], i % 2, i)
        ring.record(frame(i)[5:], i % 2, i)
        ring.record(b"\x01" * 300 + b"\x00", i % 2, i)
    assert (len(ring._ring), len(ring._stage[0]), len(ring._stage[1])) == sizes


@given(st.lists(st.tuples(st.binary(max_size=80), st.sampled_from([RX, TX])), max_size=30))
def test_pack_and_unpack_are_inverse(chunks: list[tuple[bytes, int]]) -> None:
    ring = FlightRecorder(slots=8)
    for t, (data, direction) in enumerate(chunks):
        ring.record(data + b"\x00", direction, 1_000 + t)
    frames = ring.snapshot(1_000 + len(chunks)).frames()
    back = unpack(pack(frames, 1_000))
    assert [(f.t_us + 1_000, f.direction, f.raw, f.length) for f in back] == [
        (f.t_us, f.direction, f.raw, f.length) for f in frames
    ]


def test_an_over_depth_estop_keeps_the_offending_telemetry_and_the_estop_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    code = main(["run", "--profile", str(DATA / "short-two-zones.yaml"), "--patient", "P-0102",
                 "--sim", "--yes", "--speed", "0", "--seed", "4", "--scenario",
                 "overshoot-no-limit", "--db", str(db), *GATE])
    assert code == 3  # fault
    with Store(db) as store:
        sid = store.sessions()[0].id
        kinds = [e.kind for e in store.events(sid)]
    assert kinds.count("FLIGHT") == 2  # at the ESTOP, and at the end in fault
    capsys.readouterr()
    assert main(["sessions", "frames", str(sid), "--db", str(db), "--recording", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines and {x["dir"] for x in lines} == {"rx", "tx"}
    assert all(x["recording"] == 1 and x["trigger"] == "an emergency stop" for x in lines)
    estop = next(i for i, x in enumerate(lines) if x["type"] == "ESTOP")
    assert lines[estop]["dir"] == "tx"
    before = [x for x in lines[:estop] if x["dir"] == "rx" and x["type"] == "TELEMETRY"]
    assert before[-1]["depth_meas_um"] > OVERDEPTH_LIMIT_UM  # the frame that caused it
    assert before[-1]["host_t_us"] <= lines[estop]["host_t_us"]
    assert lines[-1]["host_t_us"] - lines[0]["host_t_us"] <= WINDOW_US
    times = [x["host_t_us"] for x in lines]
    assert times == sorted(times)


def test_frames_of_a_session_without_recordings_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref="P", profile_name="p", profile_hash="h",
                                   profile_text="", started_at="2026-03-01T09:00:00+00:00")
    assert main(["sessions", "frames", str(sid), "--db", str(db)]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "no flight recording" in out.err
    assert main(["sessions", "frames", str(sid), "--db", str(db), "--recording", "2"]) == 1
    assert "has 0 flight recordings" in capsys.readouterr().err


@given(st.binary(max_size=400), st.lists(st.integers(1, 90), max_size=20))
def test_any_chunking_records_the_frames_between_delimiters(
    stream: bytes, cuts: list[int]
) -> None:
    ring = FlightRecorder(slots=512)
    pos = 0
    for cut in [*cuts, len(stream)]:
        ring.record(stream[pos : pos + cut], RX, pos)
        pos += cut
        if pos >= len(stream):
            break
    ring.record(stream[pos:], RX, pos)
    pieces = stream.split(b"\x00")[:-1]  # what follows the last delimiter is not a frame yet
    expected = [(x + b"\x00")[:SLOT_BYTES] for x in pieces if x]
    got = ring.snapshot(len(stream)).frames(window_us=10**9)
    assert [f.raw for f in got] == expected
    assert [f.length for f in got] == [len(x) + 1 for x in pieces if x]
