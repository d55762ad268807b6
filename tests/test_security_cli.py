"""`devicectl keys` and `devicectl firmware` as a user runs them: exit codes, one clear
sentence for each mistake, the keyring's permissions, images on disk."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clinic_support import GATE

from devicectl.cli import main
from devicectl.keys import Keyring
from firmware_sim.bootloader import IMAGES_DIR

KEY = "11" * 32
GOOD = IMAGES_DIR / "pen-1.2.penf"


def run(argv: list[str], stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv)


def test_keys_add_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring.json"
    assert run(["keys", "--keyring", str(ring), "add", "4242"], KEY + "\n", monkeypatch) == 0
    assert (ring.stat().st_mode & 0o777) == 0o600
    capsys.readouterr()
    assert run(["keys", "--keyring", str(ring), "list"]) == 0
    out = capsys.readouterr().out
    assert out.split() == ["4242"] and KEY not in out
    assert Keyring(ring).key_for(4242) == bytes.fromhex(KEY)
    assert run(["keys", "--keyring", str(ring), "remove", "4242"]) == 0
    assert Keyring(ring).serials() == []
    assert run(["keys", "--keyring", str(ring), "remove", "4242"]) == 1
    assert "has no key for pen 4242" in capsys.readouterr().err


def test_keyring_readable_by_others_is_refused_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring.json"
    run(["keys", "--keyring", str(ring), "add", "1"], KEY, monkeypatch)
    os.chmod(ring, 0o644)
    assert run(["keys", "--keyring", str(ring), "list"]) == 1
    err = capsys.readouterr().err
    assert "can be read by others" in err and "chmod 600" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["zz" * 32, "11" * 31, ""])
def test_keys_add_refuses_a_key_that_is_not_32_bytes_of_hex(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring.json"
    assert run(["keys", "--keyring", str(ring), "add", "7"], bad, monkeypatch) == 1
    assert "key" in capsys.readouterr().err and not ring.exists()


def test_firmware_info_of_the_shipped_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["firmware", "info", str(GOOD)]) == 0
    out = capsys.readouterr().out
    assert "version    1.2" in out and "hw id      1" in out and "valid: simulator test key" in out


def test_firmware_info_refuses_a_tampered_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = tmp_path / "t.penf"
    tampered.write_bytes(GOOD.read_bytes().replace(b"pass", b"PASS"))
    assert main(["firmware", "info", str(tampered)]) == 1
    captured = capsys.readouterr()
    assert "NOT VALID" in captured.out and "signature does not hold" in captured.err


@pytest.mark.parametrize(("data", "words"), [(b"", "too short"), (b"XXXX" + bytes(80), "PENF"),
                                            (GOOD.read_bytes()[:-1], "truncated")])
def test_firmware_info_names_what_is_wrong_with_a_malformed_image(
    data: bytes, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.penf"
    path.write_bytes(data)
    assert main(["firmware", "info", str(path)]) == 1
    assert words in capsys.readouterr().err


def test_firmware_sign_needs_test_key_and_makes_an_image_info_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new.penf"
    payload = IMAGES_DIR / "pen-1.2.yaml"
    assert main(["firmware", "sign", str(payload), "--version", "1.2", "-o", str(out)]) == 1
    assert "--test-key" in capsys.readouterr().err and not out.exists()
    assert main(["firmware", "sign", str(payload), "--version", "1.2", "-o", str(out),
                 "--test-key"]) == 0
    assert out.read_bytes() == GOOD.read_bytes()  # Ed25519 is deterministic


def test_firmware_update_sim_keeps_the_new_firmware_in_the_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "pen.json"
    assert main(["firmware", "update", str(GOOD), "--sim", "--sim-state", str(state)]) == 0
    assert "now runs firmware 1.2" in capsys.readouterr().out
    bad = IMAGES_DIR / "pen-1.3-bad.penf"
    assert main(["firmware", "update", str(bad), "--sim", "--sim-state", str(state)]) == 1
    assert "rolled back and runs 1.2" in capsys.readouterr().err


def test_firmware_update_refuses_a_tampered_image_before_the_pen_sees_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = tmp_path / "t.penf"
    tampered.write_bytes(GOOD.read_bytes().replace(b"pass", b"PASS"))
    assert main(["firmware", "update", str(tampered), "--sim"]) == 1
    assert "signature does not hold" in capsys.readouterr().err


def test_sim_key_command_prints_the_spec_key() -> None:
    out = subprocess.run([sys.executable, "-m", "firmware_sim", "key", "4242"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "6d3cc92572d381590f5ec214d07530545f66c15197b85eb659aa277a3a117a34"


def test_run_with_an_unsafe_keyring_is_refused_before_any_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text('{"pens": {}}')
    ring.chmod(0o644)
    monkeypatch.setenv("DEVICECTL_KEYRING", str(ring))
    db = tmp_path / "r.db"
    profile = Path(__file__).parent / "data" / "short-frontal.yaml"
    code = main(["run", "--port", str(tmp_path / "no-such-port"), "--yes", "--db", str(db),
                 *GATE, "--new-records", "--profile", str(profile), "--patient", "K-1"])
    assert code == 1 and "can be read by others" in capsys.readouterr().err
    from devicectl.store import Store

    assert not db.exists() or Store(db).sessions() == []


def test_keys_require_on_refuses_a_pen_without_auth_and_off_accepts_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`devicectl keys require on`: every pen must authenticate, whatever serial it
    claims (a pen without AUTH the keyring has no key for was accepted as a 1.0 pen); the
    keys stay; `list` says the rule; the firmware updater keeps it too."""
    from devicectl.commands.firmware_cmd import drive_virtual
    from devicectl.firmware import load_image
    from devicectl.fw_update import Step, Updater
    from firmware_sim.virtual import VirtualPen

    ring = tmp_path / "ring.json"
    assert run(["keys", "--keyring", str(ring), "add", "4242"], KEY + "\n", monkeypatch) == 0
    assert run(["keys", "--keyring", str(ring), "require", "on"]) == 0
    policy = Keyring(ring).policy()
    assert policy.require_auth and policy(4242) == bytes.fromhex(KEY)
    capsys.readouterr()
    assert run(["keys", "--keyring", str(ring), "list"]) == 0
    assert "every pen must authenticate" in capsys.readouterr().err
    updater = Updater(load_image(GOOD), key_for=policy, now_us=0)
    drive_virtual(updater, VirtualPen(seed=1), 0)  # the simulated pen: no AUTH
    assert updater.step is Step.FAILED and "requires every pen" in (updater.error or "")
    assert run(["keys", "--keyring", str(ring), "require", "off"]) == 0
    assert not Keyring(ring).policy().require_auth and Keyring(ring).serials() == [4242]
    updater = Updater(load_image(GOOD), key_for=Keyring(ring).policy(), now_us=0)
    drive_virtual(updater, VirtualPen(seed=1), 0)
    assert updater.step is Step.DONE, updater.error
    with pytest.raises(SystemExit) as bad:  # the usage line, exit 1: a user's mistake
        run(["keys", "--keyring", str(ring), "require", "maybe"])
    assert bad.value.code == 1


def test_a_keyring_whose_rule_is_not_true_or_false_is_refused_in_one_sentence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text('{"pens": {}, "require_auth": "yes"}')
    ring.chmod(0o600)
    assert run(["keys", "--keyring", str(ring), "list"]) == 1
    err = capsys.readouterr().err
    assert "not a devicectl keyring" in err and "Traceback" not in err
