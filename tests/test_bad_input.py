"""Every bad input has a defined answer: a clear sentence, a non-zero exit, no traceback.

Each test runs `devicectl` as a real subprocess (python -m devicectl.cli) with a
throwaway HOME, as a technician's or clinician's mistake would meet it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"


def devicectl(tmp_path: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("DEVICECTL_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "devicectl.cli", *argv], input=stdin, capture_output=True,
        text=True, timeout=120, cwd=tmp_path, env=env,
    )


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_profile_show_prints_each_problem_on_its_own_line(tmp_path: Path) -> None:
    """docs/profiles.md "Errors": "Every problem is one line, `file:line:column: field:
    why`, and all problems of a file are reported at once". `profile show` (and `run
    --profile`, `checklist show --items`) printed a ProfileError's problems as one line
    joined by a literal backslash-n (cli.py:179, escape_controls of the joined message)."""
    bad = tmp_path / "wrong.yaml"
    bad.write_text("name: x\nzones: 5\n")
    proc = devicectl(tmp_path, "profile", "show", str(bad))
    assert proc.returncode == 1
    no_traceback(proc)
    lines = proc.stderr.splitlines()
    assert "\\n" not in proc.stderr, proc.stderr
    assert any(line.endswith("wrong.yaml:1:1: version: required, but missing") for line in lines)
    assert any(line.endswith("wrong.yaml:2:8: zones: 5 must be a list") for line in lines)


def test_run_with_a_broken_profile_prints_each_problem_on_its_own_line(tmp_path: Path) -> None:
    """The same rule through `run --profile` (cli.py:179): one problem a line."""
    bad = tmp_path / "wrong.yaml"
    bad.write_text("name: x\nzones: 5\n")
    proc = devicectl(tmp_path, "run", "--profile", str(bad), "--patient", "P-1", "--sim",
                     "--yes", "--speed", "0", "--operator", "OP-1", "--db",
                     str(tmp_path / "r.db"))
    assert proc.returncode == 1
    no_traceback(proc)
    assert "\\n" not in proc.stderr, proc.stderr
    assert sum("wrong.yaml:" in line for line in proc.stderr.splitlines()) >= 2


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_web_port_out_of_range_is_refused_in_one_sentence(tmp_path: Path, port: str) -> None:
    """Every bad input has a defined answer (task_common; cli.py's docstring: "never a
    traceback"). `monitor --web-port 99999` printed uvicorn's thread traceback
    (OverflowError: bind(): port must be 0-65535) and then blamed a port in use
    (monitor_cmd.py:32, run_cmd.py:167 take any int)."""
    db = tmp_path / "r.db"
    from devicectl.store import Store

    Store(db).close()
    proc = devicectl(tmp_path, "monitor", "--db", str(db), "--web-port", port)
    assert proc.returncode != 0
    no_traceback(proc)
    assert "--web-port" in proc.stderr and "65535" in proc.stderr, proc.stderr
    for command in (["demo"], ["run", "--sim"]):
        proc = devicectl(tmp_path, *command, "--web-port", port, "--db", str(db))
        assert proc.returncode != 0 and "65535" in proc.stderr, proc.stderr
        no_traceback(proc)


@pytest.mark.parametrize("speed", ["-1", "nan", "inf", "-inf"])
def test_a_simulator_speed_that_is_not_a_speed_is_refused(tmp_path: Path, speed: str) -> None:
    """README: "`--speed 0` runs it as fast as the machine can"; run --help: "times real
    time (0 = as fast as possible)". A negative, NaN or infinite speed ran a session
    (run_cmd.py:113 and :153 take any float; nan printed "0.4× real time instead of the
    nan× asked for")."""
    for command in (["demo", "--no-web"], ["run", "--sim"]):
        proc = devicectl(tmp_path, *command, "--speed", speed, "--db", str(tmp_path / "r.db"))
        assert proc.returncode != 0, proc.stdout
        no_traceback(proc)
        assert "--speed" in proc.stderr, proc.stderr
    assert not (tmp_path / "r.db").exists(), "refused before any record"


def test_a_missing_port_is_refused_in_one_sentence_that_says_it_once(tmp_path: Path) -> None:
    """README: "A port that does not exist is refused before anything starts (exit 1)."
    The sentence said what to do twice: "...; run `devicectl ports` to list ports;
    nothing was started (`devicectl ports` lists the ports)" (link.py:143 and
    penloop.py:83 each added the hint)."""
    proc = devicectl(tmp_path, "run", "--profile", str(DATA / "short-frontal.yaml"),
                     "--patient", "P-1", "--yes", "--port", str(tmp_path / "ttyNOPE"),
                     "--db", str(tmp_path / "r.db"), "--new-records", "--operator", "OP-1",
                     "--checklist", str(DATA / "checklist-no.yaml"), "--consent")
    assert proc.returncode == 1
    no_traceback(proc)
    assert "does not exist" in proc.stderr and "nothing was started" in proc.stderr
    assert proc.stderr.count("devicectl ports") == 1, proc.stderr


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_sessions_list_refuses_a_limit_that_is_not_a_count(tmp_path: Path, limit: str) -> None:
    """`sessions list --limit N`: "how many". --limit 0 answered "no records yet" about
    records that hold sessions, and --limit -1 listed every one (sessions_cmd.py:70
    takes any int; SQLite's LIMIT -1 is no limit)."""
    db = tmp_path / "r.db"
    from devicectl.store import Store

    Store(db).close()
    proc = devicectl(tmp_path, "sessions", "list", "--db", str(db), "--limit", limit)
    assert proc.returncode != 0, proc.stdout
    no_traceback(proc)
    assert "--limit" in proc.stderr and "no records yet" not in proc.stdout


@pytest.mark.parametrize("serial", ["-5", "4294967296"])
def test_keys_add_refuses_a_serial_no_pen_can_have(tmp_path: Path, serial: str) -> None:
    """docs/pen-protocol.md DEVICE_INFO: serial_number is `I` (u32). `keys add -5` and
    `keys add 4294967296` stored a key no pen can ever use and said so as a success
    (keys_cmd.py:26 takes any int)."""
    ring = tmp_path / "keyring.json"
    proc = devicectl(tmp_path, "keys", "--keyring", str(ring), "add", "--", serial,
                     stdin="ab" * 32 + "\n")
    assert proc.returncode != 0, proc.stdout
    no_traceback(proc)
    assert "SERIAL" in proc.stderr or "serial" in proc.stderr
    assert not ring.exists()


NOT_UTF8 = b"reason \xff long enough".decode("utf-8", "surrogateescape")  # as argv gives it


def _first_session(tmp_path: Path) -> Path:
    db = tmp_path / "r.db"
    proc = devicectl(tmp_path, "run", "--profile", str(DATA / "short-frontal.yaml"),
                     "--patient", "P-1", "--sim", "--yes", "--speed", "0", "--seed", "3",
                     "--db", str(db), "--operator", "OP-1", "--checklist",
                     str(DATA / "checklist-no.yaml"), "--consent", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return db


@pytest.mark.parametrize("option", [
    ["--room", NOT_UTF8],
    ["--override-interval", NOT_UTF8, "--clinician", "DR-1"],
    ["--override-interval", "flare review at the visit", "--clinician", NOT_UTF8],
])
def test_run_refuses_text_that_is_not_utf8_before_anything_starts(
    tmp_path: Path, option: list[str]
) -> None:
    """Every bad input has a defined answer, nothing lost (task_common). Text given as
    bytes that are not UTF-8 (argv's surrogate escapes) was taken as is: --room crashed
    in store.create_session and then in crash.py:46 writing the crash file (a double
    traceback, exit 1), and an --override-interval reason or --clinician ID killed the
    records' writer thread (chain.py:29 encodes UTF-8) while the session went on to
    'complete', exit 0, with 2 events recorded and the treatment unrecorded."""
    db = _first_session(tmp_path)
    proc = devicectl(tmp_path, "run", "--profile", str(DATA / "short-frontal.yaml"),
                     "--patient", "P-1", "--sim", "--yes", "--speed", "0", "--seed", "4",
                     "--db", str(db), "--operator", "OP-1", "--checklist",
                     str(DATA / "checklist-no.yaml"), "--consent", "--quiet", *option)
    assert proc.returncode != 0, proc.stdout
    no_traceback(proc)
    assert "UTF-8" in proc.stderr, proc.stderr
    from devicectl.store import Store

    with Store(db) as store:
        assert len(store.sessions()) == 1, "refused before a record is made"


@pytest.mark.parametrize("option", [["--text", NOT_UTF8], ["--text", "fine", "--by", NOT_UTF8]])
def test_sessions_note_refuses_text_that_is_not_utf8(tmp_path: Path, option: list[str]) -> None:
    """docs/clinic.md "Adverse events and notes". A note whose --text or --by is not UTF-8
    crashed (the note's chain hash encodes UTF-8), and crash.py:46 crashed in turn."""
    db = _first_session(tmp_path)
    proc = devicectl(tmp_path, "sessions", "note", "1", "--db", str(db), *option)
    assert proc.returncode != 0
    no_traceback(proc)
    assert "UTF-8" in proc.stderr, proc.stderr


def test_web_host_that_is_not_utf8_is_refused_in_one_sentence(tmp_path: Path) -> None:
    """`monitor --web-host` with bytes that are not UTF-8: uvicorn's thread traceback
    (monitor_cmd.py:34, run_cmd.py's --web-host take any text)."""
    db = _first_session(tmp_path)
    proc = devicectl(tmp_path, "monitor", "--db", str(db), "--web-host", NOT_UTF8)
    assert proc.returncode != 0
    no_traceback(proc)
    assert "UTF-8" in proc.stderr, proc.stderr


def test_a_record_the_writer_cannot_encode_fails_the_records_not_its_thread(
    tmp_path: Path,
) -> None:
    """No treatment without a record (docs/architecture.md, record_writer.py: "on a
    failure sets `failure`"). A row the chain cannot hash (chain.py:29, a lone surrogate)
    raised out of RecordWriter._commit (record_writer.py:341 catches DB errors only):
    the writer's thread died with `failure` unset, so the session it served went on
    stamping, unrecorded, to 'complete'."""
    import time

    from devicectl.store import EventRecord, RecordWriter, Store

    path = tmp_path / "r.db"
    with Store(path) as store:
        sid = store.create_session(patient_ref="P-0001", profile_name="p", profile_hash="9f",
                                   profile_text="name: p\n",
                                   started_at="2026-03-01T09:00:00+00:00")
    writer = RecordWriter(path, sid, commit_interval_s=0.05)
    writer.start()
    wall = "2026-03-01T09:00:01+00:00"
    writer.events([EventRecord(1, wall, "OVERRIDE", "reason \udcff", None, {}, True)])
    end = time.monotonic() + 30.0
    while writer.failure is None and writer._thread.is_alive() and time.monotonic() < end:
        time.sleep(0.01)
    try:
        assert writer.failure is not None, "the records failed, and say so"
    finally:
        writer.close(None, None)
    kept = writer.unsaved_path.read_text(encoding="utf-8")
    assert "OVERRIDE" in kept and "reason \\udcff" in kept, "nothing lost: kept beside"


def test_the_crash_file_is_kept_whatever_bytes_the_command_line_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """cli.py's docstring: a bug is "one sentence too, exit 70, and the traceback kept in
    a file it names". With bytes that are not UTF-8 in argv (surrogate escapes), writing
    the file raised UnicodeEncodeError (crash.py:46) out of the handler itself: two
    tracebacks and exit 1."""
    from devicectl import crash

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    argv = ["sessions", "note", "1", "--text", NOT_UTF8]
    try:
        raise ValueError(f"bad {NOT_UTF8}")
    except ValueError as exc:
        assert crash.report(exc, argv) == crash.EXIT_BUG
    err = capsys.readouterr().err
    assert "a bug in devicectl" in err and "the details are in" in err
    kept = list((tmp_path / "devicectl" / "crashes").iterdir())
    assert len(kept) == 1 and "--text" in kept[0].read_text(encoding="utf-8")


def _in_a_terminal(tmp_path: Path, argv: list[str], key: bytes,
                   max_keys: int) -> tuple[int | None, str]:
    """`devicectl argv` on a pseudo-terminal, `key` typed at each of the first
    `max_keys` [y/n] questions: its exit code and what it printed (typed_in_a_terminal)."""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "COLUMNS": "200"}
    return typed_in_a_terminal(tmp_path, argv, [(b"[y/n]", key)] * max_keys, env)


def typed_in_a_terminal(tmp_path: Path, argv: list[str], steps: list[tuple[bytes, bytes]],
                        env: dict[str, str]) -> tuple[int | None, str]:
    """`devicectl argv` on a pseudo-terminal in `tmp_path`, each step's key typed once its
    text has been shown (in order, each after the one before); its exit code (None:
    still running after 120 s, then killed) and all it printed. Waits on the text and
    the child's exit, not on a clock; 120 s only bounds a hang."""
    import pty
    import select
    import signal
    import time

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "devicectl.cli", *argv], env)
    out, code, pending, seen = b"", None, list(steps), 0
    end = time.monotonic() + 120.0
    try:
        while code is None and time.monotonic() < end:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:  # the child closed the terminal: wait for its exit
                    time.sleep(0.05)
            if pending and pending[0][0] in out[seen:]:
                seen = out.index(pending[0][0], seen) + len(pending[0][0])
                os.write(fd, pending.pop(0)[1])
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        while select.select([fd], [], [], 0.2)[0]:  # what it printed before it exited
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
    return code, out.decode("utf-8", "replace")


def test_a_checklist_question_interrupted_is_unanswered_and_a_no_go(tmp_path: Path) -> None:
    """docs/clinic.md "Eligibility and consent": "an item left unanswered (null, missing,
    or a prompt interrupted) is a NO-GO ... The session is then recorded as refused and
    the pen is never started" (checklist_cmd.py:206, EOF or Ctrl-C is no answer). Ctrl-D
    here: a Ctrl-C on a pseudo-terminal also reaches the pen process's group, and one
    typed late (at a redrawn prompt) lands on the shutdown, which this does not test."""
    db = tmp_path / "r.db"
    code, out = _in_a_terminal(tmp_path, [
        "run", "--profile", str(DATA / "short-frontal.yaml"), "--patient", "P-1", "--sim",
        "--speed", "0", "--db", str(db), "--operator", "OP-1", "--no-web"],
        b"\x04", max_keys=2)  # Ctrl-D at the first question, then at the consent
    assert code == 1, out
    assert "Traceback" not in out
    assert "NO-GO: checklist item not answered" in out, out
    from devicectl.store import Store

    with Store(db) as store:
        (only,) = store.sessions()
        assert only.outcome == "refused"
        assert not any(e.kind == "ZONE_STARTED" for e in store.events(only.id))


def test_a_huge_file_given_as_a_firmware_image_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    """firmware.py: "an image is at most 1 MiB". `firmware info` of a 3 GiB file read all
    of it into memory first (firmware.py:118 read_bytes, then the size check): 3 GB of
    RAM and 14 s here, a MemoryError on a smaller machine, which the child meets here
    under a 2 GiB address-space limit (no clock involved)."""
    import resource

    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: no disk used
    env = {**os.environ, "HOME": str(tmp_path)}
    limit = 2 * 1024**3
    proc = subprocess.run(
        [sys.executable, "-m", "devicectl.cli", "firmware", "info", str(big)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    assert "at most 1 MiB" in proc.stderr, proc.stderr


@pytest.mark.parametrize("option", [["--duration", "nan"], ["--duration", "-1"],
                                    ["--count", "-1"], ["--baud", "-1"]])
def test_wire_spy_refuses_numbers_that_are_not_a_time_count_or_baud(
    tmp_path: Path, option: list[str]
) -> None:
    """`wire spy PORT` (README "The command"): --duration nan spied for ever (a NaN never
    compares past the end), --duration -1 and --count -1 stopped at once with "0
    frames", and --baud -1 blamed the port ("'loop://' is not a port"): link_cmd.py:76-78
    take any number."""
    proc = devicectl(tmp_path, "wire", "spy", "loop://", *option)
    assert proc.returncode != 0, proc.stdout
    no_traceback(proc)
    assert option[0] in proc.stderr, proc.stderr


@pytest.mark.parametrize("option", [["--patient", "P-9"],
                                    ["--profile", str(ROOT / "profiles/te-diffuse.yaml")]])
def test_resume_refuses_another_patient_or_profile_than_the_sessions(
    tmp_path: Path, option: list[str]
) -> None:
    """README: "`--resume` continues an interrupted session in its own record, and a
    session that lost its link in a new one that says which session it continues".
    `run --resume 1 --patient P-9` (or `--profile te-diffuse.yaml`) silently dropped
    the option and treated session 1's patient with session 1's profile, exit 0: the
    technician asked for P-9 and the record says P-1 (run_setup.py:42-63 never looks at
    --patient or --profile when resuming)."""
    db = tmp_path / "r.db"
    gate = ["--operator", "OP-1", "--checklist", str(DATA / "checklist-no.yaml"), "--consent"]
    first = devicectl(tmp_path, "run", "--profile", str(DATA / "short-frontal.yaml"),
                      "--patient", "P-1", "--sim", "--yes", "--speed", "0", "--seed", "1",
                      "--db", str(db), "--scenario", "disconnect", "--quiet", *gate)
    assert first.returncode == 4, first.stderr  # link lost: it may be continued
    proc = devicectl(tmp_path, "run", "--resume", "1", "--sim", "--yes", "--speed", "0",
                     "--db", str(db), "--quiet", *gate, *option)
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    assert "session 1" in proc.stderr and option[0] in proc.stderr, proc.stderr
    from devicectl.store import Store

    with Store(db) as store:
        assert len(store.sessions()) == 1, "nothing continued"


def test_a_huge_file_given_as_the_keyring_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    """keys.py: the keyring is "a 0600 JSON file" of 32-byte keys by serial. A 3 GiB file
    given as --keyring was read whole (keys.py:66 read_text) before json said it was
    not a keyring: a MemoryError (exit 70) under a 2 GiB address-space limit."""
    import resource

    ring = tmp_path / "keyring.json"
    with open(ring, "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: no disk used
    ring.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path)}
    limit = 2 * 1024**3
    proc = subprocess.run(
        [sys.executable, "-m", "devicectl.cli", "keys", "--keyring", str(ring), "list"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )
    no_traceback(proc)
    assert proc.returncode == 1, proc.stderr
    assert "keyring" in proc.stderr and "bug" not in proc.stderr, proc.stderr


def test_firmware_update_refuses_a_baud_that_is_not_one(tmp_path: Path) -> None:
    """`firmware update --baud -5` was taken (firmware_cmd.py:55, any int): ignored with
    --sim, and on a port pyserial's ValueError is reported as "... is not a port"."""
    image = ROOT / "firmware_sim/images/pen-1.2.penf"
    proc = devicectl(tmp_path, "firmware", "update", str(image), "--sim", "--baud", "-5")
    assert proc.returncode != 0, proc.stdout
    no_traceback(proc)
    assert "--baud" in proc.stderr, proc.stderr


def test_a_command_line_that_does_not_parse_exits_as_a_users_mistake(tmp_path: Path) -> None:
    """`devicectl --help` (cli.py:135): "Exit codes: 0 done, 1 refused or a user's mistake,
    2 aborted"; README: run's "2 aborted". `run --speed abc` exits 2 (argparse's usage
    error), which a script reads as a session that started and was aborted."""
    proc = devicectl(tmp_path, "run", "--sim", "--speed", "abc")
    assert "invalid" in proc.stderr or "not a speed" in proc.stderr
    assert proc.returncode == 1
