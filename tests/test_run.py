"""`devicectl run --sim`: whole sessions in virtual time, through the real CLI.

The simulated pen, the in-memory pipe, the real codec, the controller on its
loop thread, and a real SQLite file: each test reads the outcome from the exit
code and the record, as a technician or an auditor would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clinic_support import GATE

from devicectl.cli import main
from devicectl.store import Store

DATA = Path(__file__).parent / "data"
SHORT = DATA / "short-frontal.yaml"
DEEP = DATA / "short-two-zones.yaml"


def run(db: Path, *extra: str, profile: Path = SHORT, patient: str = "P-001") -> int:
    return main(
        ["run", "--profile", str(profile), "--patient", patient, "--sim", "--yes",
         "--speed", "0", "--db", str(db), *GATE, *extra]
    )


def only_session(db: Path, index: int = -1) -> tuple[int, Store]:
    store = Store(db)
    return store.sessions()[index].id, store


def test_a_simulated_session_completes_and_the_record_says_so(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "11") == 0
    sid, store = only_session(db)
    rec = store.session(sid)
    assert rec.outcome == "complete" and rec.patient_ref == "P-001"
    assert rec.device_serial is not None and rec.cartridge_id not in (None, 0)
    assert [z.name for z in rec.zones] == ["frontal"] and rec.zones[0].done
    kinds = [e.kind for e in store.events(sid)]
    assert kinds.index("ZONE_STARTED") < kinds.index("ZONE_DONE")
    assert store.coverage_state(sid)  # resumable state was saved


def test_two_zones_run_in_profile_order_at_the_cap(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "12", profile=DEEP) == 0
    sid, store = only_session(db)
    done = [e.zone_id for e in store.events(sid) if e.kind == "ZONE_DONE"]
    assert done == [3, 2]  # vertex, then mid-scalp, as the profile orders them
    sent = [e for e in store.events(sid) if e.kind == "SENT"]
    assert sent, "the record lists the commands sent"


def test_a_cartridge_seen_before_refuses_the_next_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "5") == 0
    capsys.readouterr()
    assert run(db, "--seed", "5", patient="P-002") == 1  # same seed: the same cartridge
    out = capsys.readouterr().out
    assert "NO-GO" in out and "used in an earlier session" in out
    sid, store = only_session(db, 0)
    assert store.session(sid).outcome == "refused"


def test_deep_zone_inside_its_interval_is_refused_without_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "21", profile=DEEP) == 0
    capsys.readouterr()
    assert run(db, "--seed", "22", profile=DEEP) == 1
    assert "NO-GO" in capsys.readouterr().out


def test_interval_override_with_a_reason_starts_and_is_recorded(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "31", profile=DEEP) == 0
    reason = "protocol amendment 7, approved by Dr. Example"
    assert run(db, "--seed", "32", "--override-interval", reason, "--clinician", "DR-EX",
               profile=DEEP) == 0
    sid, store = only_session(db, 0)
    overrides = [e for e in store.events(sid) if e.kind == "OVERRIDE"]
    assert overrides and overrides[0].data["reason"] == reason


def test_a_different_patient_is_not_held_to_another_patients_interval(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "41", profile=DEEP, patient="PA-1") == 0
    assert run(db, "--seed", "42", profile=DEEP, patient="PB-1") == 0


def test_overshoot_with_the_firmware_limit_off_is_stopped_by_the_host(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "51", "--scenario", "overshoot-no-limit") == 3
    sid, store = only_session(db)
    events = store.events(sid)
    estops = [e for e in events if e.kind == "ESTOP"]
    assert estops and estops[0].safety
    assert store.session(sid).outcome == "fault"
    assert "depth" in estops[0].text
    # The ESTOP command itself is in the record, before any fault the pen reports.
    kinds = [e.kind for e in events]
    sent_estop = next(i for i, e in enumerate(events) if e.kind == "SENT"
                      and e.data.get("type") == "ESTOP")
    assert "PEN_FAULT" not in kinds[:sent_estop]


def test_a_used_cartridge_is_refused_before_start(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "61", "--scenario", "used-cartridge") == 1
    sid, store = only_session(db)
    assert store.session(sid).outcome == "refused"
    assert not [e for e in store.events(sid) if e.kind == "ZONE_STARTED"]


def test_without_a_terminal_a_run_needs_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--profile", str(SHORT), "--patient", "X-1", "--sim",
                 "--db", str(tmp_path / "r.db")])
    assert code == 1
    assert "pass --yes" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()  # nothing was recorded


def test_a_bad_profile_is_one_located_message_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHORT.read_text().replace("depth_mm: 0.5", "depth_mm: 1.6"))
    assert run(tmp_path / "r.db", profile=bad) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:" in err and "depth_mm" in err and "Traceback" not in err


def test_a_port_that_does_not_exist_is_refused_before_start_and_leaves_no_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    code = main(["run", "--profile", str(SHORT), "--patient", "X-1", *GATE, "--port",
                 "/dev/ttyNOPE9", "--yes", "--db", str(db), "--new-records"])
    assert code == 1  # refused before start (the README's exit codes), not 4: no link was lost
    err = capsys.readouterr().err
    assert "/dev/ttyNOPE9" in err and "nothing was started" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert Store(db).sessions() == []


def test_only_an_interrupted_session_can_be_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "71") == 0
    sid, _ = only_session(db)
    code = main(["run", "--resume", str(sid), *GATE, "--sim", "--yes", "--speed", "0",
                 "--db", str(db)])
    assert code == 1
    assert "only an interrupted session" in capsys.readouterr().err


def test_resume_after_a_lost_link_continues_in_a_new_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    assert run(db, "--seed", "5", "--scenario", "disconnect", profile=DEEP) == 4
    sid, store = only_session(db)
    lost = store.session(sid)
    assert lost.outcome == "link_lost" and not all(z.done for z in lost.zones)
    capsys.readouterr()
    code = main(["run", "--resume", str(sid), *GATE, "--sim", "--yes", "--speed", "0",
                 "--seed", "5", "--db", str(db)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"continues session {sid}" in out
    new_id, store = only_session(db, 0)  # the newest
    assert new_id != sid
    rec = store.session(new_id)
    assert rec.outcome == "complete" and rec.patient_ref == lost.patient_ref
    assert rec.profile_hash == lost.profile_hash
    first = store.events(new_id)[0]  # its first record says what it continues
    assert first.kind == "CONTINUES" and first.data["session_id"] == sid
    vertex_before = next(z for z in lost.zones if z.name == "vertex")
    vertex_after = next(z for z in rec.zones if z.name == "vertex")
    assert vertex_after.strokes >= vertex_before.strokes  # the coverage came along
    assert store.session(sid).outcome == "link_lost"  # the record of the loss is kept
    # Continued once: a second resume of the lost session is refused.
    code = main(["run", "--resume", str(sid), *GATE, "--sim", "--yes", "--speed", "0",
                 "--seed", "5", "--db", str(db)])
    assert code == 1
    assert f"already continued in session {new_id}" in capsys.readouterr().err


def test_a_running_session_is_listed_running_and_cannot_be_resumed(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import time

    from devicectl.liveness import is_running

    db = tmp_path / "r.db"
    longer = tmp_path / "longer.yaml"
    longer.write_text(SHORT.read_text(encoding="utf-8")
                      .replace("target_fraction: 0.04", "target_fraction: 0.5"), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devicectl.cli", "run", "--profile", str(longer), "--patient",
         "P-0042", *GATE, "--sim", "--yes", "--speed", "1", "--db", str(db)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (db.exists() and Store(db).sessions() and is_running(db, 1)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        listed = subprocess.run(
            [sys.executable, "-m", "devicectl.cli", "sessions", "list", "--db", str(db)],
            capture_output=True, text=True, timeout=60)
        assert re.search(r"│ running\s+│", listed.stdout), listed.stdout
        assert "interrupted" not in listed.stdout
        resumed = subprocess.run(
            [sys.executable, "-m", "devicectl.cli", "run", "--resume", "1", *GATE, "--sim", "--yes",
             "--db", str(db)], capture_output=True, text=True, timeout=60)
        assert resumed.returncode == 1
        assert "still running in another process" in resumed.stderr
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: the OS drops the lock with the process
        proc.wait(10)
    assert not is_running(db, 1)
    listed = subprocess.run(
        [sys.executable, "-m", "devicectl.cli", "sessions", "list", "--db", str(db)],
        capture_output=True, text=True, timeout=60)
    assert re.search(r"│ interrupted\s+│", listed.stdout), listed.stdout
    assert not re.search(r"│ running\s+│", listed.stdout)


#: Two signals to the CLI while its main thread is inside a send to the pen process
#: (its lock held): a handler that took the lock again would wait for ever.
_SIGNALS_WHILE_SENDING = """
import os, signal, threading, time
from devicectl.commands.run_signals import Interrupts

class Pen:  # the session as the CLI holds it: request_stop sends under a lock
    def __init__(self):
        self.lock, self.asked = threading.Lock(), []
    def request_stop(self, reason, **kw):
        with self.lock:
            self.asked.append(reason)

pen = Pen()
interrupts = Interrupts()
interrupts.install()
interrupts.watch(pen)
with pen.lock:  # the main thread inside a send
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # the handlers run here, on the main thread
end = time.monotonic() + 30
while len(pen.asked) < 2 and time.monotonic() < end:
    time.sleep(0.01)
print(sorted(pen.asked))
"""


def test_signals_while_the_main_thread_sends_to_the_pen_process_stop_it_and_never_hang() -> None:
    """Ctrl-C twice, or SIGTERM then SIGINT, while the main thread is sending a command
    to the pen process: both stops reach the pen once that send is over, and the CLI
    does not hang (found when a test run's SIGTERM met one: the CLI waited for ever on
    its own lock). In a process of its own, so that a hang fails the test."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SIGNALS_WHILE_SENDING], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['stopped by SIGINT', 'stopped by SIGTERM']"
