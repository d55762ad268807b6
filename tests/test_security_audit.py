"""docs/security.md read as an attacker would, tested against the real thing: real
firmware files, a real record tampered with as someone with write access would, the
authenticated link between the real controller and the simulated pen, the keyring.
The live page's part is tests/test_security_audit_web.py.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pg_support import raw_connect
from test_chain import records_before_the_chain, sim_run, tamper
from test_secure_session import REQUIRED, make_pen, session

from devicectl import crash
from devicectl import protocol as p
from devicectl.cli import main
from devicectl.commands import firmware_cmd
from devicectl.commands.firmware_cmd import drive_virtual
from devicectl.controller import State
from devicectl.firmware import Image, load_image
from devicectl.fw_update import Step, Updater
from devicectl.keys import KeyPolicy, Keyring, KeyringError
from devicectl.messages import FaultBit
from devicectl.signing import HOST, SecureSession, sim_device_key
from devicectl.store import EventRecord, Store
from firmware_sim.physics import PenParams

IMAGES = Path(__file__).parent.parent / "firmware_sim" / "images"
GOOD = IMAGES / "pen-1.2.penf"

# --- firmware ---------------------------------------------------------------------------


def test_firmware_update_sends_the_bytes_whose_signature_it_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/security.md: "the host checks the signature first (`firmware info`, `firmware
    update`)". commands/firmware_cmd.py:run_update checked one reading of IMAGE, then
    _update_sim/_update_port read the file again and sent that: a file replaced between
    the two (here by a tampered copy, right after the host's first read) reached the pen
    unchecked. The host must send exactly what it checked."""
    image = tmp_path / "pen.penf"
    image.write_bytes(GOOD.read_bytes())
    tampered = bytearray(GOOD.read_bytes())
    tampered[20] ^= 0x01  # in the payload: the signature no longer holds
    reads: list[bytes] = []

    def read_then_swap(path: str | Path) -> Image:
        got = load_image(path)
        reads.append(got.data)
        image.write_bytes(bytes(tampered))  # the attacker swaps the file after each read
        return got

    monkeypatch.setattr(firmware_cmd, "load_image", read_then_swap)
    code = main(["firmware", "update", str(image), "--sim"])
    assert reads == [GOOD.read_bytes()]  # read once: what was checked is what was sent
    assert code == 0


@pytest.mark.parametrize("argv", [
    ["firmware", "info", "/dev/zero"],
    ["firmware", "sign", "/dev/zero", "--version", "1.9", "--test-key", "--out", "OUT"],
], ids=["info", "sign"])
def test_an_endless_file_as_image_or_payload_is_one_sentence(
    argv: list[str], tmp_path: Path
) -> None:
    """Every bad input has a defined answer (a user's wrong path among them); an image
    is at most 1 MiB (firmware.py:read_image). firmware.py:load_image and
    firmware_cmd.run_sign read the whole file before looking at its size: /dev/zero (or
    any huge file) was read until memory ran out, then a crash report. They read at
    most 1 MiB and one byte. Run in a child process held to 2 GiB of address space."""
    argv = [str(tmp_path / "out.penf") if a == "OUT" else a for a in argv]
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30));"
            "from devicectl.cli import main; sys.exit(main(sys.argv[1:]))")
    env = os.environ | {"XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                          text=True, timeout=120, env=env, cwd=Path(__file__).parent.parent)
    assert done.returncode == 1, done.stderr
    assert "1 MiB" in done.stderr and "bug" not in done.stderr, done.stderr


def test_firmware_update_to_a_port_takes_a_test_signed_image_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/security.md: what the simulator's test key signs is "trusted only by
    simulated pens and by a host that asks for it (`--sim`, `run --sim-auth-required`,
    `firmware sign --test-key`)". firmware.py:KNOWN_PUBLIC_KEYS holds the test key for
    every command, so `firmware update IMAGE --port PORT` (a real pen's port) checked a
    test-signed image as good and set out to send it, unasked. Without --sim or
    --test-key it is refused before the port is opened."""
    code = main(["firmware", "update", str(GOOD), "--port", str(tmp_path / "no-such-port"),
                 "--keyring", str(tmp_path / "ring.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert "test key" in err and "--test-key" in err and "no-such-port" not in err, err


class _ForgesUpdated:
    """A simulated pen with something on the link that, once the pen restarts into its
    new image, sends an unsigned EVENT FW_UPDATED ahead of whatever the pen says."""

    def __init__(self, pen: Any, updater: Updater) -> None:
        self.pen, self.updater, self.sent = pen, updater, False

    def receive_data(self, data: bytes, now_us: int) -> None:
        self.pen.receive_data(data, now_us)

    def advance(self, now_us: int) -> bytes:
        out: bytes = self.pen.advance(now_us)
        if not self.sent and self.updater.step is Step.RESTARTING:
            self.sent = True
            return p.encode(p.Event(int(p.PenEvent.FW_UPDATED), 0), 0) + out
        return out


def test_an_update_is_done_only_when_the_pen_runs_the_new_version() -> None:
    """docs/security.md: an image that fails its first start's self-test is rolled back;
    `firmware update` then fails ("the pen rolled back and runs 1.1"). The restarted pen
    has no session, so its EVENT is unsigned: fw_update.py:_on_restart_event took any
    FW_UPDATED as success, before or against the DEVICE_INFO that says which firmware
    runs. The host verifies: done only when the pen reports the image's version."""
    updater = Updater(load_image(IMAGES / "pen-1.3-bad.penf"), key_for=lambda _s: None,
                      now_us=0)
    drive_virtual(updater, _ForgesUpdated(make_pen(), updater), 0)
    assert updater.step is Step.FAILED, (updater.step, updater.running_version)
    assert updater.running_version == 0x0101


# --- the records' hash chain -----------------------------------------------------------


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real record of two sessions, the first ended by the host's ESTOP."""
    db = tmp_path_factory.mktemp("audit-chain") / "records.db"
    assert sim_run(db, "--scenario", "overshoot-no-limit") == 3
    assert sim_run(db, seed=6, patient="P-H2") == 0
    return db


def _copy(db: Path, tmp_path: Path) -> Path:
    out = tmp_path / "records.db"
    out.write_bytes(db.read_bytes())
    return out


def _verify(db: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["sessions", "verify", "--db", str(db)])
    return code, capsys.readouterr().out


def test_raising_the_chain_origin_does_not_switch_the_check_off(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md ("sessions verify"): it catches an edited event "whatever the
    triggers said at the time"; sessions recorded before the chain existed are reported
    as such, not failed. chain.py:verify_session took "before the chain" from one row,
    chain_origin.first_session_id: raised (its trigger dropped and put back, as the
    other tampering in tests/test_chain.py), every session became "recorded before the
    records kept a hash chain; not checked" and an edited ESTOP passed with exit 0. A
    session whose rows carry hashes was recorded with the chain: it is checked."""
    db = _copy(two_sessions, tmp_path)
    conn = raw_connect(db)
    (estop,) = conn.execute(
        "SELECT id FROM events WHERE session_id = 1 AND kind = 'ESTOP' LIMIT 1").fetchone()
    conn.close()
    tamper(db, "chain_origin_fixed", "UPDATE chain_origin SET first_session_id = 1000")
    tamper(db, "events_no_update", "UPDATE events SET text = 'a routine stop' WHERE id = ?",
           estop)
    code, out = _verify(db, capsys)
    assert code == 1, out
    assert f"event row {estop} " in out


def test_raising_the_chain_origin_does_not_hide_a_deleted_session(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md: it catches "a deleted session". chain.py:verify_all looked for
    missing ids only from chain_origin up: with the origin raised past them, session 1
    deleted (its rows with it) went unnoticed. The chained sessions still present say
    where the chain began."""
    db = _copy(two_sessions, tmp_path)
    tamper(db, "chain_origin_fixed", "UPDATE chain_origin SET first_session_id = 2")
    conn = raw_connect(db)
    for table in ("events", "zone_coverage", "coverage_state", "notes", "refusals"):
        (create,) = conn.execute(
            "SELECT group_concat(sql, ';') FROM sqlite_master WHERE type = 'trigger'"
            " AND tbl_name = ?", (table,)).fetchone()
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                    " AND tbl_name = ?", (table,)).fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute(f"DELETE FROM {table} WHERE session_id = 1")
        if create:
            conn.executescript(create + ";")
    conn.close()
    tamper(db, "sessions_no_delete", "DELETE FROM sessions WHERE id = 1")
    code, out = _verify(db, capsys)
    assert code == 1, out
    assert "session 1 is missing" in out


def test_a_session_begun_before_the_chain_and_closed_after_it_still_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The other side of checking sessions below chain_origin that carry hashes: one
    begun before the records kept a chain (its first events unhashed) and finished
    after the upgrade (`records replay` of its unsaved tail: hashed events, a closure)
    holds, as records.insert_events chained it (from the genesis, after the unhashed
    rows); an edit in its hashed part is still named."""
    db = tmp_path / "old.db"
    conn = records_before_the_chain(db)
    conn.execute("INSERT INTO events (session_id, t_us, wall, kind, text, data, safety)"
                 " VALUES (1, 0, '2025-01-01T00:00:01+00:00', 'STATE', 'before the chain',"
                 " '{}', 0)")
    conn.close()
    assert sim_run(db, seed=8) == 0  # migrated; session 2 is chained
    with Store(db) as store:
        store.append_events(1, [EventRecord(1000, "2025-01-01T00:00:02+00:00", "STATE",
                                            "after the upgrade", None, {}, False)])
        store.close_session(1, "aborted", "2025-01-01T00:00:03+00:00")
    code, out = _verify(db, capsys)
    assert code == 0, out
    tamper(db, "events_no_update", "UPDATE events SET text = 'edited' WHERE id = 2")
    code, out = _verify(db, capsys)
    assert code == 1 and "event row 2 " in out, out


def test_a_deleted_last_adverse_event_note_is_caught(
    two_sessions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md: notes (adverse events among them) "are append-only" and "chain the
    same way from the header"; `sessions verify` catches "an edited, removed or
    inserted event". chain.py:_verify_notes checks each note against the one before
    it, and nothing anchors the last one (the closure covers the events only): the
    session's last adverse event, deleted with its trigger dropped and put back, left
    a chain that holds, exit 0. Each note is now anchored across the records
    (note_anchor.py); this one, the newest, is missing from the count of notes."""
    db = _copy(two_sessions, tmp_path)
    assert main(["sessions", "note", "1", "--adverse", "infection", "--text",
                 "scalp infection at day 3", "--by", "DR-42", "--db", str(db)]) == 0
    tamper(db, "notes_no_delete", "DELETE FROM notes WHERE session_id = 1")
    code, out = _verify(db, capsys)
    assert code == 1, out


# --- the authenticated link ------------------------------------------------------------


def test_an_unsigned_device_info_injected_mid_session_changes_nothing_on_the_host() -> None:
    """docs/security.md: "Forged, altered or injected frames ... an injected TELEMETRY
    never reaches the host's safety checks or the record"; "HELLO is likewise answered
    unsigned (DEVICE_INFO) ... it changes nothing on the pen". On the host it does:
    controller_auth.py:LinkAuth.filter keeps every unsigned DEVICE_INFO once secure, and
    controller_connect.py:_on_device_info, outside CONNECTING, checks only the serial
    (the nonce is the session's one, sent in clear with every HELLO) and then replaces
    `device` and recomputes the cartridge problem from it: an attacker on the link can
    swap the cartridge the host believes is in (e.g. clear "used on another patient",
    a check only the host makes). Since round 11 the host drops every unsigned frame
    on a secure link, DEVICE_INFO too: it says HELLO only while it connects, with no
    session, so a DEVICE_INFO then is injected."""
    decoder = p.Decoder()
    seen: list[p.DeviceInfo] = []
    injected: list[p.DeviceInfo] = []

    def attacker(data: bytes, now: int) -> bytes:
        if not seen:
            seen.extend(f.message for f in decoder.feed(data)
                        if isinstance(f.message, p.DeviceInfo))
        if seen and not injected and now > 300_000:
            forged = replace(seen[0], cartridge_id=seen[0].cartridge_id + 1, cartridge_stamps=0)
            injected.append(forged)
            return data + p.encode(forged, 1)
        return data

    ctl = session(make_pen(REQUIRED), sim_device_key, to_host=attacker)
    assert injected and ctl.device is not None
    assert ctl.device.cartridge_id == seen[0].cartridge_id


@pytest.mark.parametrize("required", [True, False], ids=["require-on", "require-off"])
def test_a_device_in_the_cable_cannot_strip_auth_by_renaming_the_pen(required: bool) -> None:
    """docs/security.md's threat model: "a device spliced into the cable"; "Downgrade. A
    pen without AUTH whose serial number the keyring knows is refused". The rule is
    keyed by the serial the DEVICE_INFO claims, and that frame is unsigned: a device
    in the cable that clears AUTH and changes the serial (controller_auth.py:decide)
    makes the clinic's own pen an unknown 1.0 pen, accepted unauthenticated; the pen
    (AUTH without AUTH_REQUIRED) then obeys the unsigned commands, the session
    completes and the record names a pen that does not exist. With the keyring's rule
    that every pen must authenticate (`devicectl keys require on`, round 11) it is
    refused; without it (require-off) the limit stands, as docs/security.md says."""
    pending = [b""]
    renamed: list[int] = []

    def splice(data: bytes, now: int) -> bytes:
        pending[0] += data
        *whole, pending[0] = pending[0].split(b"\x00")
        out = b""
        for raw in whole:  # each frame as it came, but the DEVICE_INFO rewritten
            frames = p.Decoder().feed(raw + b"\x00")
            msg = frames[0].message if frames else None
            if isinstance(msg, p.DeviceInfo):
                msg = replace(msg, serial_number=msg.serial_number + 1,
                              capabilities=msg.capabilities & ~int(p.Capability.AUTH))
                renamed.append(msg.serial_number)
                out += p.encode(msg, frames[0].seq)
            else:
                out += raw + b"\x00"
        return out

    serial = PenParams().serial_number
    clinic_keyring = KeyPolicy({serial: sim_device_key(serial)}, require_auth=required)
    ctl = session(make_pen(int(p.Capability.AUTH)), clinic_keyring, to_host=splice)
    assert renamed
    if required:
        assert ctl.state is State.REFUSED, ctl.state
        assert any("requires every pen" in r for r in ctl.go_no_go), ctl.go_no_go
    else:
        assert ctl.state is State.COMPLETE, ctl.state  # the limit docs/security.md states


def test_a_signed_estop_the_pen_cannot_verify_is_still_obeyed() -> None:
    """docs/security.md, "Why an unsigned ESTOP is always obeyed": "The pen obeys ESTOP
    whether signed or not, in every state, secure or not"; stopping must never depend
    on "a desynchronised counter" or a lost session key (spec 1.1: "it always obeys
    ESTOP, signed or not"). firmware_sim/pen_auth.py:PenAuth.verdict dropped every
    signed frame its session did not accept, ESTOP included: an ESTOP sealed with
    another session's key left the needle stamping."""
    stop = SecureSession(bytes(range(32)), HOST).seal(p.Estop(1), 200)
    pen = make_pen(REQUIRED)
    injected: list[int] = []

    def hand(data: bytes, now: int) -> bytes:
        if not injected and pen.firmware.state is p.PenState.STAMPING:
            injected.append(now)
            return data + stop
        return data

    ctl = session(pen, sim_device_key, to_pen=hand, limit_us=60_000_000)
    assert injected
    assert pen.firmware.fault_flags & (1 << FaultBit.ESTOP), ctl.state


def test_a_signed_estop_reaches_a_pen_without_a_session() -> None:
    """The same claim when the pen holds no session (it restarted, or never had one)
    while the host still signs: pen_auth.py dropped a signed frame with no session to
    check it, ESTOP included."""
    pen = make_pen(REQUIRED)
    pen.receive_data(p.encode(p.Hello(p.PROTO_VERSION, 7), 0), 0)
    pen.advance(1000)
    pen.receive_data(SecureSession(bytes(range(32)), HOST).seal(p.Estop(1), 1), 1000)
    pen.advance(2000)
    assert pen.firmware.fault_flags & (1 << FaultBit.ESTOP)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o610])
def test_a_keyring_any_group_or_other_bit_is_refused(tmp_path: Path, mode: int) -> None:
    """docs/security.md: "the keyring readable by that account only (devicectl refuses
    a keyring others can read)"; keys.py refuses any group or other bit, not only
    world-read (tests/test_security_cli.py tries 0644 alone)."""
    ring = Keyring(tmp_path / "keyring.json")
    ring.add(100042, bytes(range(32)))
    ring.path.chmod(mode)
    with pytest.raises(KeyringError, match="can be read by others"):
        ring.key_for(100042)



# --- the keyring -------------------------------------------------------------------------


def test_writing_the_keyring_never_follows_a_planted_temporary_file(tmp_path: Path) -> None:
    """docs/security.md: the keyring is "readable by that account only"; keys.py: "Keys
    never leave this module except to the code that authenticates a pen". keys.py:
    Keyring._save wrote the keys into `keyring.json.tmp` opened with O_CREAT|O_TRUNC
    and no O_EXCL/O_NOFOLLOW: a symlink planted under that name (a keyring in a shared
    folder, $DEVICECTL_KEYRING) got every key written through it into a file of the
    planter's choosing, before the chmod that might fail on it."""
    ring_path = tmp_path / "keyring.json"
    elsewhere = tmp_path / "collected.txt"
    elsewhere.write_text("")
    elsewhere.chmod(0o666)
    (tmp_path / "keyring.json.tmp").symlink_to(elsewhere)
    key = bytes(range(32))
    with contextlib.suppress(KeyringError):  # refusing is fine too; leaking is not
        Keyring(ring_path).add(100042, key)
    assert key.hex() not in elsewhere.read_text()
    assert not ring_path.is_symlink()


def test_keys_add_with_an_endless_stdin_is_one_sentence(tmp_path: Path) -> None:
    """`devicectl keys add SERIAL < key.hex` (docs/security.md); every bad input has a
    defined answer. commands/keys_cmd.py:run_add read stdin whole: `< /dev/zero` (a
    wrong redirection) was read until memory ran out. A key is 64 hex digits: it reads
    a few KiB at most. Run in a child process held to 2 GiB of address space."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30));"
            "from devicectl.cli import main; sys.exit(main(sys.argv[1:]))")
    env = os.environ | {"XDG_STATE_HOME": str(tmp_path / "state")}
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            [sys.executable, "-c", code, "keys", "--keyring", str(tmp_path / "ring.json"),
             "add", "100042"], stdin=zero, capture_output=True, text=True, timeout=120,
            env=env, cwd=Path(__file__).parent.parent)
    assert done.returncode == 1, done.stderr
    assert "bug" not in done.stderr and "key" in done.stderr, done.stderr
    assert not (tmp_path / "ring.json").exists()


def test_a_crash_report_is_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/clinic.md: "Records files are created owner-only (0600)". A crash report
    holds the command line (`--patient P-…`, the operator) and the traceback's text;
    crash.py:keep wrote it with the umask's mode (0644: readable by every account,
    also in the shared fallback folder under /tmp)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    old = os.umask(0o022)
    try:
        path = crash.keep(RuntimeError("boom"), ["run", "--patient", "P-0042"])
    finally:
        os.umask(old)
    assert path is not None and "P-0042" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
