"""`devicectl wire decode|encode|spy` and `devicectl ports`, through the real CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any

import pytest

from devicectl import cli
from devicectl.protocol import Ack, Telemetry, encode, encode_raw, field_names

TELEMETRY_HEX = (
    "04 01 42 09 04 40 e2 01 02 03 01 08 dc 05 da 05 e8 03 2a 01 01 02 7d 09 ac fe "
    "01 03 3c 0f 40 4a 00"
)
# Only this module's commands: the others are other people's, and may be mid-build.
ONLY_LINK = ("devicectl.commands.link_cmd",)


@pytest.fixture(autouse=True)
def _only_link_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ONLY_LINK)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_decode_prints_one_json_object_with_spec_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "wire", "decode", *TELEMETRY_HEX.split())
    assert code == 0
    assert lines == [
        {
            "type": "TELEMETRY",
            "seq": 9,
            "flags": 0,
            "t_us": 123456,
            "state": 3,
            "fault_flags": 0,
            "depth_cmd_um": 1500,
            "depth_meas_um": 1498,
            "rate_meas_dhz": 1000,
            "stamp_count": 42,
            "x_dmm": 125,
            "y_dmm": -340,
            "contact": 1,
            "zone_id": 3,
            "battery_mv": 3900,
        }
    ]


@pytest.mark.parametrize(
    "text",
    [
        TELEMETRY_HEX.replace(" ", ""),
        TELEMETRY_HEX.replace(" ", ":"),
        " ".join("0x" + b for b in TELEMETRY_HEX.split()),
        TELEMETRY_HEX.replace(" 3c", "\n3c"),
        TELEMETRY_HEX[:-3],  # the end of the input ends the frame
    ],
    ids=["no-spaces", "colons", "0x-prefixes", "newline", "no-delimiter"],
)
def test_decode_accepts_any_hex_layout(capsys: pytest.CaptureFixture[str], text: str) -> None:
    code, lines, _ = run(capsys, "wire", "decode", text)
    assert code == 0 and [(d["type"], d["seq"]) for d in lines] == [("TELEMETRY", 9)]


def test_decode_reads_a_captured_stream_from_stdin_in_order(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = encode(Ack(3, 4, 2), 8) + b"\x11\x22\x00" + encode_raw(0x7F, b"\xab", 1, 1)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stream.hex(" ") + "\n"))
    code, lines, _ = run(capsys, "wire", "decode")
    assert code == 0
    assert lines == [
        {"type": "ACK", "seq": 8, "flags": 0, "acked_seq": 3, "acked_type": 4, "status": 2},
        {"discarded": "cobs"},
        {"type": "0x7f", "seq": 1, "flags": 1, "body": "ab"},
    ]


def test_decode_of_bad_crc_prints_discarded_crc(capsys: pytest.CaptureFixture[str]) -> None:
    broken = TELEMETRY_HEX.replace("40 4a 00", "40 4b 00")
    code, lines, _ = run(capsys, "wire", "decode", broken)
    assert code == 0 and lines == [{"discarded": "crc"}]


@pytest.mark.parametrize("text", ["04 01 zz", "0g", "041"])
def test_decode_of_non_hex_is_one_sentence_and_exit_1(
    capsys: pytest.CaptureFixture[str], text: str
) -> None:
    code, lines, err = run(capsys, "wire", "decode", text)
    assert code == 1 and lines == []
    assert err.startswith("devicectl: ") and err.count("\n") == 1 and "Traceback" not in err


def test_encode_prints_the_spec_vector(capsys: pytest.CaptureFixture[str]) -> None:
    fields = ["depth_um=1500", "rate_dhz=1000", "zone_id=3"]
    code = cli.main(["wire", "encode", "SET_TARGET", *fields, "--seq", "3"])
    assert code == 0
    assert capsys.readouterr().out.strip() == "0c 01 04 03 01 dc 05 e8 03 03 32 0d 00"


def test_encode_then_decode_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    fields = dict(zip(field_names(Telemetry), range(1, 13), strict=True))
    args = [f"{k}={v}" for k, v in fields.items()]
    assert cli.main(["wire", "encode", "telemetry", *args, "--seq", "200"]) == 0
    wire = capsys.readouterr().out.strip()
    _, lines, _ = run(capsys, "wire", "decode", wire)
    assert lines == [{"type": "TELEMETRY", "seq": 200, "flags": 0, **fields}]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["SET_TARGET", "depth_um=1500", "rate_dhz=70000", "zone_id=3"], "rate_dhz = 70000"),
        # a frame above the cap could be written to a pen's port: refused as the link does
        (["SET_TARGET", "depth_um=1501", "rate_dhz=1000", "zone_id=3"],
         "1501 µm is above the 1500 µm cap; it was refused, not sent"),
        (["ESTOP", "reason=-1"], "reason = -1"),
        (["ESTOP"], "missing field(s) reason"),
        (["ESTOP", "reason=1", "bogus=2"], "unknown field(s) bogus"),
        (["ESTOP", "reason=one"], "is not an integer"),
        (["WARP"], "unknown message type 'WARP'"),
    ],
)
def test_encode_mistake_is_one_sentence_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert cli.main(["wire", "encode", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and says in captured.err and captured.err.count("\n") == 1


def test_ports_lists_something_or_says_none(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ports"]) == 0
    assert capsys.readouterr().out.strip()


def test_spy_on_a_missing_port_is_exit_4_with_one_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["wire", "spy", "/dev/ttyUSB9", "--count", "1"]) == 4
    assert "port /dev/ttyUSB9 does not exist" in capsys.readouterr().err


def _spy(path: str, *extra: str) -> subprocess.Popen[str]:
    code = (
        "import sys; from devicectl import cli; "
        f"cli.COMMAND_MODULES = {ONLY_LINK!r}; sys.exit(cli.main(sys.argv[1:]))"
    )
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        [sys.executable, "-c", code, "wire", "spy", path, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )


def _write_when_opened(master: int, proc: subprocess.Popen[str], data: bytes) -> None:
    # The spy reads nothing before it has opened the port, and a loaded machine can take
    # seconds to start it: send the frames again and again until it has exited (its
    # --count or --duration ends it), so that no copy needs to be caught in time.
    os.set_blocking(master, False)
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(BlockingIOError):  # nobody read yet: the pty is full
            os.write(master, data)
        time.sleep(0.1)


@pytest.mark.realtime
def test_spy_decodes_live_frames_from_a_pseudo_terminal_as_json() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        proc = _spy(os.ttyname(slave), "--json", "--count", "2")
        frames = encode(Telemetry(5, 3, 0, 800, 790, 1000, 1, 0, 0, 1, 2, 3900), 9)
        _write_when_opened(master, proc, b"\x00garbage\x00" + frames + encode(Ack(3, 4, 0), 10))
        out, err = proc.communicate(timeout=20)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    frames_seen = [d for d in lines if "type" in d]
    assert [(d["type"], d["seq"]) for d in frames_seen] == [("TELEMETRY", 9), ("ACK", 10)]
    assert frames_seen[0]["depth_meas_um"] == 790 and frames_seen[0]["t_s"] >= 0


@pytest.mark.realtime
def test_spy_prints_readable_lines_and_stops_after_duration() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        proc = _spy(os.ttyname(slave), "--duration", "1.5")
        _write_when_opened(master, proc, encode(Ack(3, 4, 2), 8))
        out, err = proc.communicate(timeout=20)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    first = out.splitlines()[0].split()
    assert first[1:] == ["rx", "ACK", "seq=8", "flags=0", "acked_seq=3", "acked_type=4", "status=2"]
    assert "frames" in err
