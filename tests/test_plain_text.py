"""Text is never markup: what came from the pen, a profile, a patient reference or
the records is printed as written, control characters escaped. Through the real
CLI, on real records files, with the simulated pen."""

from __future__ import annotations

import binascii
from pathlib import Path

import pytest
from clinic_support import GATE
from cobs import cobs
from hypothesis import given
from hypothesis import strategies as st

from devicectl import protocol as p
from devicectl.cli import main
from devicectl.plain import escape_controls
from devicectl.store import Store

DATA = Path(__file__).parent / "data"
#: Markup that crashes rich, and an escape sequence that would clear the screen.
NASTY = "[/]\x1b[2J"
SHOWN = "[/]\\x1b[2J"


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def run(db: Path, patient: str, *extra: str) -> int:
    return main(["run", "--profile", str(DATA / "short-frontal.yaml"), "--patient", patient,
                 "--sim", "--yes", "--speed", "0", "--seed", "21", "--db", str(db), *GATE,
                 *extra])


def test_a_patient_reference_with_markup_is_refused_in_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    assert run(db, NASTY) == 1  # not a pseudonymous code: refused before a record is made
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "patient reference" in captured.err
    assert not db.exists() or Store(db).sessions() == []


def test_records_holding_markup_list_and_show_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records written before references were checked (or by hand) still print as text."""
    db = tmp_path / "r.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref=NASTY, profile_name=NASTY, profile_hash="0" * 64,
                                   profile_text="", started_at="2026-01-01T00:00:00+00:00",
                                   operator=NASTY)
    assert main(["sessions", "list", "--db", str(db)]) == 0
    listed = capsys.readouterr().out
    assert SHOWN in listed and "\x1b" not in listed
    assert main(["sessions", "show", str(sid), "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert SHOWN in shown and "\x1b" not in shown


def unknown_frame(body: bytes, type_code: int = 0x7E) -> bytes:
    packet = bytes([p.PROTO_VERSION, type_code, 0, 0]) + body
    crc = binascii.crc_hqx(packet, p.CRC_INIT)
    return cobs.encode(packet + crc.to_bytes(2, "little")) + b"\x00"


def test_an_unknown_frame_with_markup_from_the_pen_is_printed_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The simulator's misbehaving pen sends frames of an unknown type whose bodies
    # read as markup and escapes ("[/]", "\e[2J"), once it stamps.
    db = tmp_path / "r.db"
    assert run(db, "P-1", "--misbehave", "markup-frames") == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "unexpected frame" in x)
    assert "[/]" in line and "\x1b" not in out
    with Store(db) as store:
        sid = store.sessions()[0].id
    assert main(["sessions", "show", str(sid), "--db", str(db)]) == 0
    assert "unexpected frame" in capsys.readouterr().out


def test_a_profile_named_with_markup_shows_and_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (DATA / "short-frontal.yaml").read_text()
    name_line = next(x for x in text.splitlines() if x.startswith("name:"))
    profile = tmp_path / "p.yaml"
    profile.write_text(text.replace(name_line, 'name: "[bold]Frontal[/] [/]"'))
    assert main(["profile", "show", str(profile)]) == 0
    assert "[bold]Frontal[/] [/]" in capsys.readouterr().out
    db = tmp_path / "r.db"
    assert main(["run", "--profile", str(profile), "--patient", "P-2", "--sim", "--yes",
                 "--speed", "0", "--seed", "22", "--db", str(db), *GATE]) == 0
    assert main(["sessions", "list", "--db", str(db)]) == 0
    assert "[bold]Frontal[/] [/]" in capsys.readouterr().out


@given(st.text())
def test_escaped_text_has_no_control_characters_and_keeps_the_rest(text: str) -> None:
    shown = escape_controls(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    if not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):
        assert shown == text


def test_control_characters_in_a_profile_and_an_error_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (DATA / "short-frontal.yaml").read_text()
    name_line = next(x for x in text.splitlines() if x.startswith("name:"))
    profile = tmp_path / "p.yaml"
    profile.write_text(text.replace(name_line, 'name: "\\e]0;owned\\a Frontal"'))
    assert main(["profile", "validate", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;owned\\x07 Frontal" in out and "\x1b" not in out
    missing = tmp_path / "gone\x1b[2J.yaml"
    assert main(["run", "--profile", str(missing), "--patient", "P-0103", "--sim", "--yes",
                 "--db", str(tmp_path / "r.db"), *GATE]) != 0
    err = capsys.readouterr().err
    assert "gone\\x1b[2J.yaml" in err and "\x1b" not in err
