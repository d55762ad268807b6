"""The secure pen through the real CLI: firmware 1.1 to 1.2 and the next session records
1.2 (in virtual time, and over a pseudo-terminal between processes); a session with
AUTH_REQUIRED over the pty with the keyring, and refused without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clinic_support import GATE
from test_session_realtime import REALTIME_SHORT, SHORT, finish, pen

from devicectl.cli import main
from devicectl.signing import sim_device_key
from devicectl.store import Store
from firmware_sim.bootloader import IMAGES_DIR

GOOD = IMAGES_DIR / "pen-1.2.penf"
PY = sys.executable


def sim_run(db: Path, *extra: str, patient: str = "S-1") -> int:
    return main(["run", "--profile", str(SHORT), "--patient", patient, "--sim", "--yes",
                 "--speed", "0", "--db", str(db), *GATE, *extra])


def test_sim_update_then_the_next_session_records_firmware_1_2(tmp_path: Path) -> None:
    db, state = tmp_path / "r.db", tmp_path / "pen.json"
    assert sim_run(db, "--seed", "5", "--sim-state", str(state)) == 0
    assert main(["firmware", "update", str(GOOD), "--sim", "--sim-state", str(state)]) == 0
    assert sim_run(db, "--seed", "6", "--sim-state", str(state), patient="S-2") == 0
    versions = [r.fw_version for r in Store(db).sessions()]
    assert sorted(versions) == [0x0101, 0x0102]


def test_sim_session_with_auth_required_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sim_run(tmp_path / "r.db", "--seed", "7", "--sim-auth-required") == 0
    assert "test-only key" in capsys.readouterr().out


def keyring(tmp_path: Path, serial: int = 100042) -> Path:
    ring = tmp_path / "keyring.json"
    ring.write_text(json.dumps({"pens": {str(serial): sim_device_key(serial).hex()}}))
    ring.chmod(0o600)
    return ring


def cli(args: list[str], ring: Path, timeout_s: float = 90) -> tuple[int, str]:
    env = {**os.environ, "DEVICECTL_KEYRING": str(ring)}
    proc = subprocess.Popen([PY, "-m", "devicectl.cli", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return finish(proc, timeout_s)


@pytest.mark.realtime
def test_over_a_pty_auth_required_update_then_session_records_1_2(tmp_path: Path) -> None:
    db, state, ring = tmp_path / "r.db", tmp_path / "pen.json", keyring(tmp_path)
    with pen("--seed", "201", "--auth-required", "--state", str(state)) as port:
        code, out = cli(["firmware", "update", str(GOOD), "--port", port, "--test-key"], ring)
        assert code == 0 and "now runs firmware 1.2" in out, out
    assert json.loads(state.read_text())["active"] == "B"
    # The pen is switched off and on (a new serve process): its new firmware stays.
    with pen("--seed", "202", "--auth-required", "--state", str(state)) as port:
        code, out = cli(["run", "--port", port, "--yes", "--db", str(db), *GATE, "--new-records",
                         "--profile", str(REALTIME_SHORT), "--patient", "RT-S1"], ring)
        assert code == 0, out
    rec = Store(db).sessions()[0]
    assert rec.outcome == "complete" and rec.fw_version == 0x0102


@pytest.mark.realtime
def test_over_a_pty_a_pen_whose_key_the_keyring_lacks_is_refused(tmp_path: Path) -> None:
    db, ring = tmp_path / "r.db", keyring(tmp_path, serial=1)
    with pen("--seed", "203", "--auth-required") as port:
        code, out = cli(["run", "--port", port, "--yes", "--db", str(db), *GATE,
                         "--new-records", "--profile", str(SHORT), "--patient", "RT-K1"], ring)
    assert code == 1 and "devicectl keys add 100042" in out, out


def test_firmware_1_2_visibly_fixes_the_overshoot_no_limit_bug(tmp_path: Path) -> None:
    """On 1.1 the broken firmware check leaves the host's ESTOP to stop the overshoot;
    on 1.2 the pen's own OVERDEPTH check holds and the pen reports the fault itself."""
    def pen_faults(db: Path) -> list[str]:
        with Store(db) as store:
            sid = store.sessions()[-1].id
            return [e.text for e in store.events(sid) if e.kind in ("PEN_FAULT", "ESTOP")]

    old_db, new_db, state = tmp_path / "old.db", tmp_path / "new.db", tmp_path / "pen.json"
    assert sim_run(old_db, "--seed", "51", "--scenario", "overshoot-no-limit") == 3
    assert not any("OVERDEPTH" in t for t in pen_faults(old_db))
    assert main(["firmware", "update", str(GOOD), "--sim", "--sim-state", str(state)]) == 0
    assert sim_run(new_db, "--seed", "51", "--scenario", "overshoot-no-limit",
                   "--sim-state", str(state)) == 3
    assert any("OVERDEPTH" in t for t in pen_faults(new_db))
