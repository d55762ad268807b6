"""`devicectl wire decode|encode|spy` with the revision 1.1 frames: AUTH and FW messages
by name, signed frames with "counter" and "tag_ok"."""

from __future__ import annotations

import json

import pytest

from devicectl.cli import main
from devicectl.commands.link_cmd import TagChecker, decode_events, event_to_dict, spy_line
from devicectl.protocol import Decoder

K_S = "0a7a540d8855d6d3e065fd18aa6a4f0427398796488c18c45ee9bc8eb7920f2b"
HEARTBEAT = "07 01 02 05 02 e8 03 01 02 01 01 01 0b ef 8c b5 e1 b2 b7 a1 03 bd 7d 00"
PEN_ACK = "07 01 40 09 02 06 06 02 01 01 01 0b f5 cb 85 89 f5 ad b2 9e 5a 7c 00"
AUTH_CONFIRM = "17 01 0a 04 01 64 61 4b cc c5 64 5a 41 f2 d4 76 bd d0 af 45 b7 9e 79 00"


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_decode_with_the_session_key_checks_both_directions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["wire", "decode", "--session-key", K_S, HEARTBEAT, PEN_ACK]) == 0
    out = lines(capsys)
    assert [(d["type"], d["counter"], d["tag_ok"]) for d in out] == [
        ("HEARTBEAT", 1, True), ("ACK", 1, True)]


def test_decode_with_a_wrong_key_says_tag_not_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wire", "decode", "--session-key", "00" * 32, HEARTBEAT]) == 0
    assert lines(capsys)[0]["tag_ok"] is False


def test_decode_without_a_key_shows_the_counter_and_tag_ok_null(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["wire", "decode", HEARTBEAT, AUTH_CONFIRM]) == 0
    signed, confirm = lines(capsys)
    assert signed["counter"] == 1 and signed["tag_ok"] is None
    assert confirm == {"type": "AUTH_CONFIRM", "seq": 4, "flags": 1,
                       "host_proof": "64614bccc5645a41f2d476bdd0af45b7"}


def test_encode_fw_chunk_with_hex_data_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wire", "encode", "FW_CHUNK", "offset=40", "data=" + "ab" * 40]) == 0
    wire = capsys.readouterr().out.strip()
    assert main(["wire", "decode", wire]) == 0
    assert lines(capsys)[0] == {"type": "FW_CHUNK", "seq": 0, "flags": 1, "offset": 40,
                                "data": "ab" * 40}


def test_spy_line_shows_counter_and_tag_ok() -> None:
    events = list(decode_events(Decoder(), bytes.fromhex(PEN_ACK)))
    tags = TagChecker(K_S)
    assert "counter=1 tag_ok=True" in spy_line(0.5, events[0], tags)
    assert event_to_dict(events[0], tags)["tag_ok"] is True


def test_a_session_key_of_the_wrong_length_is_one_sentence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["wire", "decode", "--session-key", "abcd", HEARTBEAT]) == 1
    assert "32 (64 hex digits)" in capsys.readouterr().err
