"""Round 12's audit of the everyday tool: Ctrl-C in every part of `devicectl run`, and
the bad inputs of the commands that were left.

The Ctrl-C tests run `devicectl run --sim` as a real subprocess and send SIGINT when
it has printed a given line (never after a sleep): wherever the signal lands, the
answer is the documented one (README "Exit codes"), the records hold everything and
the simulated pen ends stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clinic_support import GATE
from test_bad_input import typed_in_a_terminal

from devicectl.store import Store

DATA = Path(__file__).parent / "data"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("DEVICECTL_DB", None)
    return env


def devicectl(tmp_path: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devicectl.cli", *argv], input=stdin,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=_env(tmp_path))


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


# --- Ctrl-C -------------------------------------------------------------------------

def _longer_profile(tmp_path: Path) -> Path:
    """The short test profile with more to do (a session that runs until it is stopped)
    and an adjunct (so that the end asks for, and records, its acknowledgement)."""
    path = tmp_path / "longer.yaml"
    path.write_text((DATA / "short-frontal.yaml").read_text(encoding="utf-8")
                    .replace("target_fraction: 0.04", "target_fraction: 0.5")
                    .replace("adjuncts: []", "adjuncts: [minoxidil]"), encoding="utf-8")
    return path


def interrupted_run(tmp_path: Path, triggers: list[tuple[str, int]], *extra: str,
                    speed: str = "1") -> tuple[int, str, str, Path]:
    """`devicectl run --sim` in a subprocess; at the first line of output containing each
    trigger's text (in order) it is sent that many SIGINTs; a trigger "records: KIND"
    waits instead for an event of that kind in the records file. Its exit code (a
    signal's death is negative), stdout, stderr and the records file."""
    db = tmp_path / "r.db"
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devicectl.cli", "run", "--profile",
             str(_longer_profile(tmp_path)), "--patient", "P-0042", *GATE, "--sim", "--yes",
             "--speed", speed, "--db", str(db), *extra],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp_path, env=_env(tmp_path))
        out = []
        pending = list(triggers)
        watcher: threading.Thread | None = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.append(line)
                if pending and pending[0][0] in line:
                    for _ in range(pending.pop(0)[1]):
                        proc.send_signal(signal.SIGINT)
                if watcher is None and pending and pending[0][0].startswith("records: "):
                    kind, count = pending.pop(0)
                    watcher = threading.Thread(target=_signal_at_record, daemon=True,
                                               args=(proc, db, kind.split()[1], count))
                    watcher.start()
            code = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not pending, f"never printed {pending[0][0]!r}:\n{''.join(out)}"
    if watcher is not None:
        watcher.join(5)
    return code, "".join(out), err_path.read_text(), db


def _signal_at_record(proc: subprocess.Popen[str], db: Path, kind: str, count: int) -> None:
    """SIGINT `count` times once the records hold an event of `kind` (read-only, polled:
    the signal follows the state, however fast or slow the machine)."""
    import sqlite3

    while proc.poll() is None:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            seen = conn.execute("SELECT 1 FROM events WHERE kind = ?", (kind,)).fetchone()
        except sqlite3.Error:
            seen = None
        finally:
            conn.close()
        if seen:
            for _ in range(count):
                proc.send_signal(signal.SIGINT)
            return
        time.sleep(0.002)


def _pen_ended_stopped(store: Store, sid: int) -> None:
    """Every START the host sent is followed by the pen seen stopped (PEN_STOPPED)."""
    events = store.events(sid)
    starts = [i for i, e in enumerate(events) if e.kind == "SENT"
              and e.data.get("type") == "START"]
    if starts:
        assert any(e.kind == "PEN_STOPPED" for e in events[starts[-1]:]), \
            [e.kind for e in events[-10:]]


def test_ctrl_c_while_the_pen_process_opens_refuses_in_one_sentence(tmp_path: Path) -> None:
    """README "Exit codes": 1 refused before start. Ctrl-C while `run` opened the pen
    process (run_cmd.py:217, PenProcess.open, before the signal handlers of
    run_cmd.py:280) ended it with "devicectl: interrupted" and exit 130, an exit code
    the README does not give, and left the pen process to multiprocessing's exit."""
    code, _out, err, db = interrupted_run(
        tmp_path, [("test-only key is derived", 1)], "--sim-auth-required")
    assert code == 1, (code, err)
    assert "SIGINT" in err and "nothing was started" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert Store(db).sessions() == []  # nothing recorded


def test_ctrl_c_between_the_records_and_the_pen_start_ends_the_session(
        tmp_path: Path) -> None:
    """Ctrl-C once the session is recorded, as `run` begins the pen process
    (run_cmd.py:261-280: the session's line printed, the pen begun, the handlers not yet
    installed): it ended with exit 130 and the session left open ("interrupted") instead
    of closed with an outcome and its documented exit code."""
    code, _out, err, db = interrupted_run(tmp_path, [("session 1 ·", 1)])
    store = Store(db)
    (rec,) = store.sessions()
    assert rec.outcome is not None, (code, err)
    assert code == {"refused": 1, "aborted": 2}[rec.outcome], (code, rec.outcome, err)
    assert "Traceback" not in err and "interrupted" not in err, err
    _pen_ended_stopped(store, rec.id)


@pytest.mark.parametrize("triggers", [
    [("READY -> STAMPING", 2)],                                   # twice, while it runs
    [("READY -> STAMPING", 1), ("STOP_REQUESTED", 1)],            # again during the end
    [("READY -> STAMPING", 1), ("records: PEN_STOPPED", 1)],      # as the records close
    [("READY -> STAMPING", 1), ("session 1 · aborted", 1)],       # again in the summary
    [("READY -> STAMPING", 1), ("Adjunct instructions", 1)],      # again as the end records
], ids=["twice", "in-the-end", "in-the-records-flush", "in-the-summary",
        "in-the-acknowledgement"])
def test_ctrl_c_while_stamping_aborts_and_another_changes_nothing(
        tmp_path: Path, triggers: list[tuple[str, int]]) -> None:
    """README: exit 2 aborted; docs/safety.md "The end of a session (... SIGINT ...): STOP
    ... the loop ends only once telemetry shows the pen stopped". A second Ctrl-C once
    the pen had ended (run_cmd.py:310 put the default handler back before the summary,
    the records banner and the adjunct acknowledgement's note, run_cmd.py:316-334) ended
    `run` with exit 130 and the acknowledgement never recorded."""
    code, out, err, db = interrupted_run(tmp_path, triggers)
    store = Store(db)
    (rec,) = store.sessions()
    assert code == 2 and rec.outcome == "aborted", (code, rec.outcome, err)
    assert "Traceback" not in err and "interrupted" not in err, err
    _pen_ended_stopped(store, rec.id)
    notes = store.conn.execute("SELECT text FROM notes WHERE session_id = ?",
                               (rec.id,)).fetchall()
    assert len(notes) == 1 and "adjunct instructions given" in notes[0][0], notes
    assert "aborted · session id 1" in out


#: A real SIGINT while `devicectl` builds its parser (importing a command's modules takes
#: most of a second: numpy, rich, pydantic), then a second one while it says so.
_CTRL_C_AT_START = """
import os, signal, sys
from devicectl import cli

real_build, real_print = cli.build_parser, print

def build_parser(load):
    os.kill(os.getpid(), signal.SIGINT)
    return real_build(load)

def print_twice(*args, **kw):
    cli.print = real_print
    os.kill(os.getpid(), signal.SIGINT)
    real_print(*args, **kw)

cli.build_parser = build_parser
cli.print = print_twice
sys.exit(cli.main(["sessions", "list"]))
"""


def test_ctrl_c_while_the_command_loads_and_again_while_answered_is_one_line() -> None:
    """cli.py's docstring: "never a traceback"; a Ctrl-C's answer is "devicectl:
    interrupted" (cli.py:189-191). Before the command's `try` (cli.py:181-182: the parser
    imports the command) and inside its `except KeyboardInterrupt` a Ctrl-C escaped
    main(): a KeyboardInterrupt traceback, and the process killed by SIGINT."""
    done = subprocess.run([sys.executable, "-c", _CTRL_C_AT_START], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "devicectl: interrupted", done.stderr


# --- sessions show --kind -----------------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A records file holding one complete simulated session (session 1)."""
    from devicectl.cli import main

    db = tmp_path_factory.mktemp("recorded") / "r.db"
    assert main(["run", "--profile", str(DATA / "short-frontal.yaml"), "--patient", "P-001",
                 "--sim", "--yes", "--quiet", "--speed", "0", "--seed", "3", "--db", str(db),
                 *GATE]) == 0
    return db


def copy_of(recorded: Path, tmp_path: Path) -> Path:
    """The recorded file, for a test that may write to it."""
    import shutil

    return Path(shutil.copy(recorded, tmp_path / "copy.db"))


def test_sessions_show_an_unknown_kind_is_a_mistake_naming_the_kinds(
        tmp_path: Path, recorded: Path) -> None:
    """task: an unknown --kind is a user's mistake. `sessions show 1 --kind NOPE` said
    "no events match" with exit 0 (sessions_cmd.py:239, EventFilter.parse takes any
    word): a typo of ESTOP read as "no emergency stop in this session"."""
    proc = devicectl(tmp_path, "sessions", "show", "1", "--db", str(recorded),
                     "--kind", "ESTOP,NOPE")
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    assert "NOPE" in proc.stderr and "--kind" in proc.stderr and "ESTOP" in proc.stderr
    assert "CHECKLIST" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    # A kind that exists but is not in this session is still an empty answer, not a mistake.
    proc = devicectl(tmp_path, "sessions", "show", "1", "--db", str(recorded), "--kind", "estop")
    assert proc.returncode == 0 and "no events match" in proc.stdout, proc.stderr
    for kind in ("all", "CHECKLIST,consent", "SAMPLE", "PEN_PROCESS"):
        proc = devicectl(tmp_path, "sessions", "show", "1", "--db", str(recorded), "--kind", kind)
        assert proc.returncode == 0, (kind, proc.stderr)


# --- control characters in recorded text --------------------------------------------

#: (NUL cannot be passed in argv: exec takes C strings.)
_CONTROLS = ["1\x1b[2J\x1b[H", "ok\rforged line", "a\x07b", "two\nlines", "\x9b31m"]


@pytest.mark.parametrize("text", _CONTROLS, ids=["ansi", "cr", "bel", "newline", "csi-c1"])
@pytest.mark.parametrize("option", ["--room", "--operator", "--clinician",
                                    "--override-interval"])
def test_run_refuses_control_characters_in_recorded_text(
        tmp_path: Path, option: str, text: str) -> None:
    """task: a recorded text must not be able to rewrite the technician's terminal.
    `--room` (run_cmd.py:130, utf8_text: commands/__init__.py:67) took ESC, CR and BEL
    into the records, from where every view, export and report shows it again.
    (NUL cannot come through argv: exec takes C strings.)"""
    argv = {"--room": "1", "--operator": "OP-1", "--clinician": "DR-1",
            "--override-interval": "flare review, decided at the visit"}
    argv[option] = ("reason " * 2) + text if option == "--override-interval" else text
    db = tmp_path / "r.db"
    proc = devicectl(tmp_path, "run", "--profile", str(DATA / "short-frontal.yaml"),
                     "--patient", "P-1", "--sim", "--yes", "--speed", "0", "--db", str(db),
                     "--checklist", str(DATA / "checklist-no.yaml"), "--consent",
                     "--ack-adjuncts", *(x for kv in argv.items() for x in kv))
    assert proc.returncode == 1, proc.stdout[-500:]
    no_traceback(proc)
    last = proc.stderr.strip().splitlines()[-1]
    assert option in last and "control character" in last, proc.stderr
    assert not db.exists() or Store(db).sessions() == []  # nothing recorded


@pytest.mark.parametrize("option", ["--text", "--by"])
def test_a_note_refuses_control_characters(tmp_path: Path, recorded: Path, option: str) -> None:
    """The same for `sessions note` (patients_cmd.py:63-66): a note is shown by `patients
    show`, the report and the exports."""
    argv = {"--text": "fine", "--by": "DR-1"}
    argv[option] = "x\x1b]0;owned\x07y"
    recorded = copy_of(recorded, tmp_path)
    proc = devicectl(tmp_path, "sessions", "note", "1", "--db", str(recorded),
                     *(x for kv in argv.items() for x in kv))
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    last = proc.stderr.strip().splitlines()[-1]
    assert option in last and "control character" in last, proc.stderr
    assert Store(recorded).conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0


# --- a --db in a folder that does not exist ------------------------------------------

def _sim_run(tmp_path: Path, *db: str, env_db: str | None = None,
             new_records: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devicectl.cli", "run", "--profile",
            str(DATA / "short-frontal.yaml"), "--patient", "P-1", "--sim", "--yes", "--quiet",
            "--speed", "0", *GATE, *db, *(["--new-records"] if new_records else [])]
    env = _env(tmp_path)
    if env_db is not None:
        env["DEVICECTL_DB"] = env_db
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)


def test_run_refuses_a_db_in_a_missing_folder_naming_it(tmp_path: Path) -> None:
    """task: a typo in --db's path silently started new records elsewhere: `run --sim`
    (records.py:231, open_database makes the folder) and `demo` (run_cmd.py:175) created
    the missing folder. The default location may be created; an explicit --db (or
    $DEVICECTL_DB) in a missing folder is refused naming it, unless asked."""
    typo = tmp_path / "recrods"
    proc = _sim_run(tmp_path, "--db", str(typo / "r.db"))
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    assert str(typo) in proc.stderr and "--new-records" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not typo.exists()
    proc = _sim_run(tmp_path, env_db=str(typo / "r.db"))  # the same typo in $DEVICECTL_DB
    assert proc.returncode == 1 and str(typo) in proc.stderr and not typo.exists()
    proc = devicectl(tmp_path, "demo", "--speed", "0", "--no-web", "--quiet", "--db",
                     str(typo / "r.db"))
    assert proc.returncode == 1, proc.stdout
    assert str(typo) in proc.stderr and not typo.exists(), proc.stderr
    # Asked for: --new-records starts them there, folder and all.
    proc = _sim_run(tmp_path, "--db", str(typo / "r.db"), new_records=True)
    assert proc.returncode == 0, proc.stderr
    assert Store(typo / "r.db").sessions()


def test_the_default_records_location_is_created(tmp_path: Path) -> None:
    """The default places (XDG_DATA_HOME/devicectl, the demo's demo-out) are made when
    missing: nothing was typed there to be wrong."""
    proc = _sim_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Store(tmp_path / "data" / "devicectl" / "sessions.db").sessions()
    proc = devicectl(tmp_path, "demo", "--speed", "0", "--no-web", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert Store(tmp_path / "demo-out" / "sessions.db").sessions()


# --- the commands added last round, with bad inputs ---------------------------------

_HUGE_ID = "99999999999999999999999"


@pytest.mark.parametrize("argv", [
    ["sessions", "note", _HUGE_ID, "--text", "x"],
    ["sessions", "show", _HUGE_ID],
    ["sessions", "export", _HUGE_ID],
    ["sessions", "verify", _HUGE_ID],
    ["monitor", "--session", _HUGE_ID],
], ids=["note", "show", "export", "verify", "monitor"])
def test_a_session_id_too_large_for_the_records_is_a_mistake(
        tmp_path: Path, recorded: Path, argv: list[str]) -> None:
    """cli.py: a user's mistake is one sentence and exit 1, exit 70 only for a bug.
    `sessions note 99999999999999999999999` (patients_cmd.py:62, and every `type=int`
    session id in sessions_cmd.py, chain_cmd.py:32, monitor_cmd.py:32) ended with exit 70,
    "a bug in devicectl (OverflowError: Python int too large to convert to SQLite
    INTEGER)", and a crash file."""
    proc = devicectl(tmp_path, *argv, "--db", str(recorded))
    assert proc.returncode == 1, proc.stderr
    no_traceback(proc)
    assert "a bug in devicectl" not in proc.stderr and _HUGE_ID in proc.stderr, proc.stderr
    assert not (tmp_path / ".local" / "state" / "devicectl" / "crashes").exists()


def test_a_note_by_takes_an_id_as_operator_does(tmp_path: Path, recorded: Path) -> None:
    """docs/clinic.md: `--by DR-42`, who records a note, is recorded like the operator
    and the clinician, whose IDs are at most 64 printable characters (checklist_cmd.py:80,
    staff_id). `sessions note --by` (patients_cmd.py:66, 83) took any length."""
    recorded = copy_of(recorded, tmp_path)
    proc = devicectl(tmp_path, "sessions", "note", "1", "--db", str(recorded), "--text",
                     "fine", "--by", "D" * 200)
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    assert "--by" in proc.stderr and "64" in proc.stderr, proc.stderr
    assert Store(recorded).conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0


def test_firmware_update_sim_state_in_a_missing_folder_is_refused_first(tmp_path: Path) -> None:
    """task (item 4, for every typed path that is written): `firmware update --sim
    --sim-state nodir/state.json` sent the whole image, then ended with exit 70, a
    FileNotFoundError "bug" (firmware_cmd.py:190 writes the state where no folder is)."""
    image = tmp_path / "img.bin"
    (tmp_path / "pl.bin").write_bytes(b"payload")
    assert devicectl(tmp_path, "firmware", "sign", "pl.bin", "--version", "1.2", "--out",
                     str(image), "--test-key").returncode == 0
    state = tmp_path / "nodir" / "state.json"
    proc = devicectl(tmp_path, "firmware", "update", str(image), "--sim", "--sim-state",
                     str(state))
    assert proc.returncode == 1, proc.stderr
    no_traceback(proc)
    assert "a bug in devicectl" not in proc.stderr, proc.stderr
    assert str(state.parent) in proc.stderr and "sent" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("where", ["/dev/null", "a-folder"])
def test_a_keyring_that_is_not_a_file_is_named_so_and_never_chmod(
        tmp_path: Path, where: str) -> None:
    """keys.py's docstring: the keyring is "One JSON file". `keys --keyring /dev/null
    require on` answered "the keyring can be read by others (mode 666); refusing it: run
    `chmod 600 /dev/null`" (keys.py:84-88), advice that, taken as root, breaks the
    system; a folder was told the same."""
    (tmp_path / "a-folder").mkdir()
    proc = devicectl(tmp_path, "keys", "--keyring", where, "require", "on")
    assert proc.returncode == 1
    no_traceback(proc)
    assert "chmod" not in proc.stderr and "not a file" in proc.stderr, proc.stderr


def test_a_malformed_keyring_sentence_shows_the_format_balanced(tmp_path: Path) -> None:
    """keys.py:104-107: the format shown for a malformed keyring ended `false}})`, a
    brace too many (the second half of the sentence is not an f-string)."""
    ring = tmp_path / "ring.json"
    ring.write_text("not json")
    ring.chmod(0o600)
    proc = devicectl(tmp_path, "keys", "--keyring", str(ring), "list")
    assert proc.returncode == 1
    sentence = proc.stderr.strip()
    assert "not a devicectl keyring" in sentence, sentence
    assert sentence.count("{") == sentence.count("}"), sentence


def test_keys_require_on_in_a_missing_folder_is_refused_naming_it(tmp_path: Path) -> None:
    """task item 4's rule, for the keyring: `keys --keyring nodir/k.json require on`
    (keys.py:112 makes any folder) printed "every pen must now authenticate" into a new
    keyring nobody reads, while the clinic's stayed as it was. The default place may be
    made; a typed one in a missing folder is refused, naming the folder."""
    proc = devicectl(tmp_path, "keys", "--keyring", "nodir/k.json", "require", "on")
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    assert "nodir" in proc.stderr and "must now authenticate" not in proc.stdout
    assert not (tmp_path / "nodir").exists()
    proc = devicectl(tmp_path, "keys", "require", "on")  # the default place: made
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / ".config" / "devicectl" / "keyring.json").exists()


def test_records_replay_refuses_a_db_in_a_missing_folder(tmp_path: Path) -> None:
    """The same rule for `records replay FILE --db PATH` (records_cmd.py, replay_records):
    the records were put back into a new file in a folder made for them (records.py:231),
    not into the clinic's."""
    from devicectl import unsaved as u

    header = {"patient_ref": "P-rec", "profile_name": "p", "profile_hash": "h",
              "profile_text": "name: p\n", "started_at": "2026-03-01T09:00:00+00:00"}
    spilled = tmp_path / "s.db.unsaved.jsonl"
    spilled.write_text(u.line("session", 1, base_events=0, **header) + "\n")
    typo = tmp_path / "recrods"
    proc = devicectl(tmp_path, "records", "replay", str(spilled), "--db", str(typo / "s.db"))
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    assert str(typo) in proc.stderr and not typo.exists(), proc.stderr


def _typed_at_prompt(tmp_path: Path, argv: list[str], prompt: bytes,
                     key: bytes) -> tuple[int | None, str]:
    """`devicectl argv` on a pseudo-terminal, `key` typed once `prompt` is shown."""
    return _typed_in_a_terminal(tmp_path, argv, [(prompt, key)])


def _typed_in_a_terminal(tmp_path: Path, argv: list[str],
                         steps: list[tuple[bytes, bytes]]) -> tuple[int | None, str]:
    """`devicectl argv` on a pseudo-terminal, each step's key typed once its text has been
    shown, in order (test_bad_input.typed_in_a_terminal)."""
    return typed_in_a_terminal(tmp_path, argv, steps, _env(tmp_path))


def test_ctrl_c_at_the_start_question_refuses_and_the_question_shows_its_default(
        tmp_path: Path) -> None:
    """README: `run` "asks to start unless --yes"; a no is a refusal (exit 1), the pen never
    started. The question (run_cmd.py, _confirm: `[bold]{question}[/] [y/N] `) printed
    without its `[y/N]`: rich took it for markup, so nothing said that Enter means no.
    And a Ctrl-C there both stopped the session (the handler) and answered no (the
    prompt): the outcome was whichever reached the pen process first, refused or aborted."""
    db = tmp_path / "r.db"
    code, out = _typed_at_prompt(tmp_path, [
        "run", "--profile", str(DATA / "short-frontal.yaml"), "--patient", "P-1", "--sim",
        "--speed", "0", "--db", str(db), "--no-web", *GATE], b"[y/N]", b"\x03")
    import re

    assert "Start the treatment? [y/N]" in re.sub(r"\x1b\[[0-9;]*m", "", out), out[-2000:]
    assert code == 1, out[-2000:]
    assert "Traceback" not in out
    store = Store(db)
    (rec,) = store.sessions()
    assert rec.outcome == "refused"
    assert not [e for e in store.events(rec.id) if e.kind == "SENT"
                and e.data.get("type") == "START"]


#: A terminal's Ctrl-C reaches the whole process group: here, the pen process and the
#: view process as soon as they exist, while they still boot (import their modules).
_CTRL_C_AS_THE_CHILDREN_BOOT = """
import os, signal
from devicectl.monitor.viewproc import ViewOptions, ViewProcess
from devicectl.penproc import LinkSettings, PenProcess, SimSettings
from devicectl.snapshot import Snapshot

signal.signal(signal.SIGINT, lambda *a: None)  # the CLI answers its own (run_signals.py)
pen = PenProcess(LinkSettings(sim=SimSettings(seed=1)))
os.kill(pen.pid, signal.SIGINT)
view = ViewProcess(ViewOptions("t", output=os.devnull, keys=False))
os.kill(view.pid, signal.SIGINT)
opened = pen._opened.wait(60)
print("pen", opened, pen._open_error, pen.report)
pen.close()
view.close(Snapshot().view_status(), [])
print("view", view._proc.exitcode)
"""


def test_ctrl_c_as_the_pen_and_view_processes_boot_neither_kills_them_nor_prints() -> None:
    """penproc.py:153 and viewproc.py:52: the children ignore the terminal's signals "(the
    CLI relays them)". They set SIG_IGN only once their modules were imported: a Ctrl-C
    in the second or so before killed the pen process with a KeyboardInterrupt traceback
    on the technician's terminal, and PenProcess.open then took the dead process for an
    opened link (no refusal: `_opened` is set when the reader meets the end)."""
    done = subprocess.run([sys.executable, "-c", _CTRL_C_AS_THE_CHILDREN_BOOT],
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.splitlines() == ["pen True None None", "view 0"], (done.stdout,
                                                                        done.stderr)


def test_records_migrate_refuses_simulator_runs_onto_clinical_records(
        tmp_path: Path, recorded: Path, pg_url: str) -> None:
    """README: "Simulator runs and clinical sessions never share a database" (a `--sim` run
    refuses a database holding clinical sessions, a clinical run one holding simulator
    runs: run_checks.check_records_kind). `records migrate --from demo-out/sessions.db
    --to` the clinic's server (migrate.py:69, no such check) copied the simulator runs
    among the clinic's sessions: from then on every room's clinical run was refused
    ("holds simulator runs")."""
    with Store(pg_url) as server:
        server.create_session(patient_ref="P-0042", profile_name="x", profile_hash="h",
                              profile_text="t", started_at="2026-03-02T09:00:00+00:00",
                              simulated=False)
    proc = devicectl(tmp_path, "records", "migrate", "--from", f"sqlite:{recorded}",
                     "--to", pg_url)
    assert proc.returncode == 1, proc.stdout
    no_traceback(proc)
    assert "simulator runs" in proc.stderr and "clinical" in proc.stderr, proc.stderr
    with Store(pg_url) as server:
        assert not server.holds_sessions(simulated=True)  # nothing copied


def test_ctrl_c_at_a_checklist_question_refuses_and_the_record_says_why(
        tmp_path: Path) -> None:
    """docs/clinic.md: "an item left unanswered (... or a prompt interrupted) is a NO-GO
    ... recorded as refused and the pen is never started"; the GO_NO_GO event names the
    signal too (checklist_cmd.eligibility_gate, run_signals.Interrupts)."""
    db = tmp_path / "r.db"
    code, out = _typed_at_prompt(tmp_path, [
        "run", "--profile", str(DATA / "short-frontal.yaml"), "--patient", "P-1", "--sim",
        "--speed", "0", "--db", str(db), "--no-web", "--operator", "OP-1", "--consent"],
        b"[y/n]", b"\x03")
    assert code == 1, out[-2000:]
    assert "Traceback" not in out and "NO-GO: checklist item not answered" in out
    store = Store(db)
    (rec,) = store.sessions()
    assert rec.outcome == "refused"
    (no_go,) = [e for e in store.events(rec.id) if e.kind == "GO_NO_GO"]
    assert "stopped by SIGINT before the start" in no_go.text, no_go.text
    assert not [e for e in store.events(rec.id) if e.kind == "SENT"]


#: The pen process killed as it starts (the OOM killer, a crash in its start-up).
_PEN_PROCESS_KILLED_AT_BIRTH = """
import os, signal
from devicectl.errors import RefusedError
from devicectl.penproc import LinkSettings, PenProcess, SimSettings

class KilledAtBirth(PenProcess):
    def __init__(self, link):
        super().__init__(link)
        os.kill(self.pid, signal.SIGKILL)

try:
    pen = KilledAtBirth.open(LinkSettings(sim=SimSettings(seed=1)))
except RefusedError as exc:
    print("refused:", exc)
else:
    print("opened", pen.report)
    pen.close()
"""


def test_a_pen_process_that_dies_before_it_opens_the_link_is_a_refusal() -> None:
    """penproc.py, PenProcess.open: "RefusedError when it cannot be opened". A pen
    process that died before it opened the link was taken for an opened one: the
    reader's end sets `_opened` (penproc.py:_read) with no error, so `run` went on to
    record a session, then met "no pen answered" and an internal error, exit 3."""
    done = subprocess.run([sys.executable, "-c", _PEN_PROCESS_KILLED_AT_BIRTH],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("refused: the pen process ended before it opened"), (
        done.stdout, done.stderr)


def test_ctrl_c_in_the_live_view_aborts_and_at_the_end_question_is_recorded_no(
        tmp_path: Path) -> None:
    """In a terminal, with the live view: "y" at the start question, Ctrl-C while it
    stamps (the view owns the terminal; the signal reaches the CLI), then Ctrl-C at the
    adjunct question at the end: aborted (exit 2), the pen seen stopped, and "NOT
    acknowledged" recorded (docs/clinic.md "Adjuncts"), with no traceback."""
    db = tmp_path / "r.db"
    code, out = _typed_in_a_terminal(tmp_path, [
        "run", "--profile", str(_longer_profile(tmp_path)), "--patient", "P-1", "--sim",
        "--speed", "1", "--db", str(db), "--no-web", "--operator", "OP-1", "--checklist",
        str(DATA / "checklist-no.yaml"), "--consent"],
        [(b"[y/N]", b"y\r"), (b"STAMPING", b"\x03"), (b"[y/n]", b"\x03")])
    assert code == 2, out[-2000:]
    assert "Traceback" not in out
    store = Store(db)
    (rec,) = store.sessions()
    assert rec.outcome == "aborted"
    _pen_ended_stopped(store, rec.id)
    (note,) = store.conn.execute("SELECT text FROM notes").fetchall()
    assert "NOT acknowledged (not given in the terminal)" in note[0], note


#: `devicectl run` as the program, and a Ctrl-C once it has answered, as the interpreter
#: exits (an atexit callback sends it: the exit's threads and callbacks take a while).
_CTRL_C_AS_DEVICECTL_EXITS = """
import atexit, os, signal, sys
from devicectl import cli

atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))
sys.argv = ["devicectl", *sys.argv[1:]]
sys.exit(cli.main())
"""


def test_ctrl_c_as_devicectl_exits_keeps_the_answer(tmp_path: Path) -> None:
    """README "Exit codes". Once `run` had answered (exit 0, complete), a Ctrl-C while the
    interpreter exited met Python's own handler again (run_cmd.run put it back): an
    "Exception ignored in atexit callback ... KeyboardInterrupt" traceback on the
    terminal."""
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AS_DEVICECTL_EXITS, "run", "--profile",
         str(DATA / "short-frontal.yaml"), "--patient", "P-1", "--sim", "--yes", "--quiet",
         "--speed", "0", "--db", str(tmp_path / "r.db"), *GATE],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_env(tmp_path))
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, \
        done.stderr
    assert done.returncode == 0, done.stderr
    assert "complete · session id 1" in done.stdout
