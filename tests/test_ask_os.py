"""What the pen process asks the OS for (issue 12 item 3), and that it says what it got:
real-time scheduling for the loop's thread alone where permitted, nice where not, and
never required. Real threads, a real pen process on a pseudo-terminal, a real
unprivileged process for the refusal; no root needed (the one assertion that needs
the privilege says so and is skipped without it)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_penproc import PATIENT, _recipe, _wait, records_db
from test_virtual_session import MAP

import devicectl
from devicectl import os_grants
from devicectl.commands.run_pen import set_cores, share_cores
from devicectl.controller_core import COVERAGE_CELL_MM, StartFacts
from devicectl.link import open_pty
from devicectl.penproc import LinkSettings, MapRaster, PenProcess, SessionSettings
from firmware_sim.__main__ import SIM_RT_PRIORITY

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_RESET_ON_FORK"),
                                reason="real-time scheduling is asked for on Linux only")

RT = (getattr(os, "SCHED_FIFO", -1), getattr(os, "SCHED_RR", -1))
FLAG = getattr(os, "SCHED_RESET_ON_FORK", 0)


def _policy(tid: int) -> int:
    return os.sched_getscheduler(tid) & ~FLAG


@pytest.fixture
def idle_thread() -> Iterator[threading.Thread]:
    """A thread that waits (a loop stand-in); ended, and its policy with it, after."""
    done = threading.Event()
    thread = threading.Thread(target=done.wait, name="stand-in loop")
    thread.start()
    yield thread
    done.set()
    thread.join(5)


def _permitted() -> bool:
    """Whether this process may make a thread SCHED_FIFO at RT_PRIORITY (root,
    CAP_SYS_NICE or RLIMIT_RTPRIO, and a control group with a real-time budget)."""
    done = threading.Event()
    probe = threading.Thread(target=done.wait)
    probe.start()
    try:
        assert probe.native_id is not None
        os.sched_setscheduler(probe.native_id, os.SCHED_FIFO,
                              os.sched_param(os_grants.RT_PRIORITY))
        return True
    except PermissionError:
        return False
    finally:
        done.set()
        probe.join(5)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real-time scheduling switched on (it is opt-in); spawned pen processes inherit it."""
    monkeypatch.setenv(os_grants.RT_ENV, "1")


def test_only_the_loop_thread_is_real_time_and_threads_it_starts_are_not(
    idle_thread: threading.Thread, asked: None,
) -> None:
    """Granted where permitted: the thread asked for, no other; a thread it starts
    afterwards (as the loop starts the cartridge claim's) is normal again."""
    if not _permitted():
        pytest.skip("this process may not use real-time scheduling (not root, no "
                    "CAP_SYS_NICE, RLIMIT_RTPRIO 0, or no real-time budget): the refusal "
                    "is tested in test_a_refusal_is_said_and_the_loop_runs_at_nice")
    tid = idle_thread.native_id
    assert tid is not None
    data: dict[str, object] = {}
    words = os_grants.ask_real_time(tid, True, data)
    assert _policy(tid) == os.SCHED_FIFO
    assert os.sched_getparam(tid).sched_priority == os_grants.RT_PRIORITY
    assert data["realtime"] == f"SCHED_FIFO {os_grants.RT_PRIORITY}"
    assert data["realtime_refused"] is None and data["realtime_threads"] == [tid]
    assert "loop thread real-time" in words and "µs of every" in words
    assert _policy(threading.get_native_id()) not in RT  # the caller (the door) is not
    # SCHED_RESET_ON_FORK: what the real-time thread starts runs normally.
    seen: list[int] = []

    def child() -> None:
        seen.append(_policy(threading.get_native_id()))

    ready = threading.Event()

    def start_child() -> None:  # made real-time first, then it starts a thread
        ready.wait()
        t = threading.Thread(target=child)
        t.start()
        t.join()

    starter = threading.Thread(target=start_child)
    starter.start()
    assert starter.native_id is not None
    os_grants.ask_real_time(starter.native_id, True, {})
    ready.set()
    starter.join(5)
    assert seen == [os.SCHED_OTHER]


def test_not_asked_in_virtual_time_or_unless_switched_on(
    idle_thread: threading.Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid = idle_thread.native_id
    assert tid is not None
    monkeypatch.setenv(os_grants.RT_ENV, "1")
    data: dict[str, object] = {}
    words = os_grants.ask_real_time(tid, False, data)
    assert "not real-time (not asked: virtual time" in words
    assert data["realtime"] is None and data["realtime_threads"] == []
    for value in ("0", None):  # off by default, and when switched off
        if value is None:
            monkeypatch.delenv(os_grants.RT_ENV)
        else:
            monkeypatch.setenv(os_grants.RT_ENV, value)
        data = {}
        words = os_grants.ask_real_time(tid, True, data)
        assert f"not asked: off unless {os_grants.RT_ENV}=1" in words
        assert data["realtime"] is None
        assert _policy(tid) == os.SCHED_OTHER


def test_without_the_kernels_throttle_the_loop_does_not_ask(
    idle_thread: threading.Thread, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    asked: None,
) -> None:
    """sched_rt_runtime_us -1 (no throttle): a loop that spun would own its core."""
    unlimited = tmp_path / "sched_rt_runtime_us"
    unlimited.write_text("-1\n")
    monkeypatch.setattr(os_grants, "RT_RUNTIME_PATH", str(unlimited))
    tid = idle_thread.native_id
    assert tid is not None
    data: dict[str, object] = {}
    words = os_grants.ask_real_time(tid, True, data)
    assert "does not throttle real-time threads" in words and data["realtime"] is None
    assert _policy(tid) == os.SCHED_OTHER


REFUSED = """
import json, os, threading
from devicectl import os_grants
done = threading.Event()
loop = threading.Thread(target=done.wait); loop.start()
words, data = os_grants.ask_os()
words += ", " + os_grants.ask_real_time(loop.native_id, True, data)
policy = os.sched_getscheduler(loop.native_id)
done.set(); loop.join()
print(json.dumps([words, data, policy]))
"""
#: linux/prctl.h and linux/capability.h
PR_CAPBSET_DROP = 24
CAP_SYS_NICE = 23


def _unprivileged() -> None:
    """In the child before it runs Python: RLIMIT_RTPRIO 0, and for root, no
    CAP_SYS_NICE (dropped from the bounding set, so the exec'd program has none)."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_SYS_NICE)")


def test_a_refusal_is_said_and_the_loop_runs_at_nice() -> None:
    """No privilege (RLIMIT_RTPRIO 0, no CAP_SYS_NICE): real-time and nice are both
    refused by the kernel itself, the words say so and why, and nothing fails."""
    root = Path(devicectl.__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", REFUSED], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root),
                                        os_grants.RT_ENV: "1"},
                         timeout=60, check=False, preexec_fn=_unprivileged)
    assert out.returncode == 0, out.stderr
    words, data, policy = json.loads(out.stdout)
    assert policy == os.SCHED_OTHER
    assert data["realtime"] is None and data["realtime_threads"] == []
    assert data["realtime_refused"].startswith("not permitted: RLIMIT_RTPRIO 0")
    assert "loop thread not real-time (not permitted: RLIMIT_RTPRIO 0" in words
    assert "priority not raised (not permitted)" in words and "heap frozen" in words


@contextlib.contextmanager
def pen_on_a_pty(tmp_path: Path, nonce: int) -> Iterator[tuple[PenProcess, Path, int]]:
    """The real pen process on a pty, its session begun (nobody answers: the loop waits
    for its HELLO's answer), with its four threads running; closed after. Yields the
    pen, the records' file and the session's id (its PEN_PROCESS record: `grant_record`)."""
    db, sid = records_db(tmp_path)
    with open_pty() as port:
        pen = PenProcess.open(LinkSettings(port=port.slave_path))
        try:
            pen.begin(SessionSettings(
                recipe=_recipe(), raster=MapRaster.of(MAP, COVERAGE_CELL_MM),
                facts=StartFacts(PATIENT, frozenset()), db_path=db, session_id=sid,
                nonce=nonce, started_wall=datetime.now(UTC)))
            assert pen.wait_started(60) and pen.pid is not None
            tasks = Path(f"/proc/{pen.pid}/task")
            # the door, the records' writer, the loop and the publisher
            _wait(lambda: len(list(tasks.iterdir())) >= 4)
            yield pen, db, sid
        finally:
            pen.close()


def grant_record(db: Path, sid: int) -> tuple[str, dict[str, Any]]:
    """The PEN_PROCESS record's text and data."""
    with sqlite3.connect(db) as conn:
        text, data_json = conn.execute(
            "SELECT text, data FROM events WHERE session_id = ? AND kind = 'PEN_PROCESS'",
            (sid,)).fetchone()
    return text, json.loads(data_json)


def test_the_pen_process_on_a_port_says_what_its_loop_was_granted(
    tmp_path: Path, asked: None
) -> None:
    """The real pen process on a pty (nobody answers: the loop waits for its HELLO's
    answer): its words and its PEN_PROCESS record say what the loop got, and seen from
    outside, no thread but the loop's is real-time (the records' writer, the door and
    the publisher stay normal)."""
    permitted = _permitted()
    with pen_on_a_pty(tmp_path, 0x5EB) as (pen, db, sid):
        tasks = Path(f"/proc/{pen.pid}/task")
        real_time = sorted(int(t.name) for t in tasks.iterdir() if _policy(int(t.name)) in RT)
        grants = pen.grants
    text, data = grant_record(db, sid)
    assert text == grants
    assert data["realtime_threads"] == real_time
    if permitted:
        assert real_time == [data["loop_tid"]], "a thread other than the loop's is real-time"
        assert data["realtime"] == f"SCHED_FIFO {os_grants.RT_PRIORITY}"
        assert "loop thread real-time (SCHED_FIFO" in grants
    else:  # the refusal, said (its reason is tested with RLIMIT_RTPRIO 0 above)
        assert real_time == [] and data["realtime"] is None
        assert "loop thread not real-time (" in grants


def test_the_simulated_pen_asks_for_real_time_only_when_told() -> None:
    """`firmware_sim serve --realtime` (a stand-in for the pen's own microcontroller):
    its loop at SCHED_FIFO where permitted, or says it was refused; without the flag,
    normal, as before."""
    permitted = _permitted()
    root = Path(devicectl.__file__).resolve().parent.parent
    for flag in (["--realtime"], []):
        proc = subprocess.Popen([sys.executable, "-m", "firmware_sim", "serve", *flag],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        try:
            assert proc.stdout is not None and proc.stdout.readline().startswith("PORT ")
            policy = _policy(proc.pid)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        if not flag:
            assert policy == os.SCHED_OTHER and "real-time" not in err and "SCHED" not in err
        elif permitted:
            assert policy == os.SCHED_FIFO
            assert f"the simulated pen at SCHED_FIFO {SIM_RT_PRIORITY}" in err
        else:
            assert policy == os.SCHED_OTHER and "real-time refused" in err


# --- the loop's short time slice (EEVDF's custom slice, Linux 6.12 and later) -----------

OFFERED = os_grants.thread_slice_ns(threading.get_native_id()) not in (None, 0)


def test_a_short_slice_is_kept_for_that_thread_alone_and_given_back(
    idle_thread: threading.Thread,
) -> None:
    """Asked for one thread: the kernel keeps SLICE_US for it and for no other thread;
    0 gives its default back. Where the kernel keeps no slice for normal threads, the
    words say so and nothing changes."""
    tid = idle_thread.native_id
    assert tid is not None
    me = threading.get_native_id()
    mine = os_grants.thread_slice_ns(me)
    before = os_grants.thread_slice_ns(tid)
    why = os_grants.set_thread_slice(tid, os_grants.SLICE_US)
    if not OFFERED:
        assert why is not None and "not offered" in why
        return
    assert why is None
    assert os_grants.thread_slice_ns(tid) == os_grants.SLICE_US * 1000
    assert before != os_grants.SLICE_US * 1000
    assert os_grants.thread_slice_ns(me) == mine  # the asker's own slice is untouched
    assert os_grants.set_thread_slice(tid, 0) is None
    assert os_grants.thread_slice_ns(tid) == before


def test_the_slice_is_not_asked_in_virtual_time_nor_for_a_real_time_loop(
    idle_thread: threading.Thread,
) -> None:
    tid = idle_thread.native_id
    assert tid is not None
    before = os_grants.thread_slice_ns(tid)
    data: dict[str, object] = {}
    words = os_grants.ask_short_slice(tid, False, data)
    assert "not asked: virtual time" in words and data["slice_us"] is None
    data = {"realtime": f"SCHED_FIFO {os_grants.RT_PRIORITY}"}
    words = os_grants.ask_short_slice(tid, True, data)
    assert "not asked: the loop is real-time" in words and data["slice_us"] is None
    assert os_grants.thread_slice_ns(tid) == before


def test_the_pen_process_on_a_port_gives_its_loop_alone_a_short_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real-time scheduling off (the default): the real pen process on a pty gives the
    loop's thread the short slice, seen from outside, and no other thread; its words and
    its PEN_PROCESS record say so."""
    monkeypatch.delenv(os_grants.RT_ENV, raising=False)
    with pen_on_a_pty(tmp_path, 0x5EC) as (pen, db, sid):
        slices = {int(t.name): os_grants.thread_slice_ns(int(t.name))
                  for t in Path(f"/proc/{pen.pid}/task").iterdir()}
        grants = pen.grants
    _text, data = grant_record(db, sid)
    assert data["realtime"] is None
    short = sorted(t for t, ns in slices.items() if ns == os_grants.SLICE_US * 1000)
    if OFFERED:
        assert data["slice_us"] == os_grants.SLICE_US and data["slice_refused"] is None
        assert short == [data["loop_tid"]], slices
        assert f"loop thread's time slice {os_grants.SLICE_US} µs" in grants
    else:
        assert short == [] and data["slice_us"] is None
        assert "loop thread's time slice the kernel's default (not offered" in grants


# --- the cores: the views keep off the pen process's ------------------------------------


def test_the_views_keep_off_the_pen_processs_own_core_and_get_their_cores_back(
    tmp_path: Path,
) -> None:
    """A pen process on a port says which cores the views keep to: with three cores or
    more, all but the one it is pinned to, and this process then keeps to them, every
    thread and what it starts afterwards, and gets its cores back at the end; with
    fewer it is not pinned, and the views keep every core."""
    cpus = os.sched_getaffinity(0)
    with pen_on_a_pty(tmp_path, 0x5ED) as (pen, _db, _sid):
        assert pen.pid is not None
        views = pen.grant_data["views_cores"]
        pens = os.sched_getaffinity(pen.pid)
        previous = share_cores(pen)
        try:
            seen: list[set[int]] = []
            later = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
            later.start()
            later.join(5)
            mine = os.sched_getaffinity(0)
        finally:
            set_cores(previous)
        grants = pen.grants
    assert os.sched_getaffinity(0) == cpus  # given back
    if len(cpus) < os_grants.MIN_CORES_TO_PIN:
        assert views is None and previous is None and mine == seen[0] == cpus
        assert pens == cpus and f"{len(cpus)} core(s): shared, none pinned" in grants
        return
    last = max(cpus)
    assert views == sorted(cpus - {last}) and previous == cpus
    assert mine == seen[0] == cpus - {last}  # this thread, and a thread started after
    assert pens == {last} and f"core {last} to itself" in grants


def test_a_slice_for_a_thread_that_has_ended_is_refused_in_words() -> None:
    """Never required: the loop's thread gone by the time it is asked for gives words,
    not an exception that would end the pen process's start. The thread is one whose
    id no thread can have (above the kernel's pid_max): an ended thread's own id may be
    given to a new thread at once on a busy machine (seen: the suite's other threads
    took it, and the slice was granted to one of them)."""
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    data: dict[str, object] = {}
    words = os_grants.ask_short_slice(gone, True, data)
    assert "loop thread's time slice the kernel's default (refused: " in words
    assert data["slice_us"] is None and str(data["slice_refused"]).startswith("refused: ")
