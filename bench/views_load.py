"""Benchmark: does anything a screen does slow the pen process? (issue 12, item 7)

This process is the pen: the simulated pen (firmware_sim VirtualPen, its
telemetry held at 1 kHz) served on a raw pseudo-terminal, as bench/latency.py
does; it raises its own priority where permitted (SCHED_FIFO, as `python -m
firmware_sim serve --realtime` does, or with `--sim nice` nice PEN_NICE), as the
pen's own microcontroller is not slowed by the host's load. A second process is
`devicectl run` as built for a port: the pen process (devicectl/penproc.py:
link, controller, records in SQLite) plus, under load, the terminal view (a
child drawing into /dev/null at VIEW_HZ) and the live page with 200 SSE clients
on /api/stream (a third process, bench/sse_clients.py: clients that read
everything, or clients that never read). Every configuration runs in the same
invocation, alternately (ROUNDS rounds of ESTOP trials, then one session each),
so the ratios compare like with like:

- ESTOP: a TELEMETRY with a new fault flag at random moments while stamping
  (the same first check as an over-depth, which spec H5 allows only twice a
  session); the time from its write to the read that brings the host's ESTOP.
- A real-time session of SESSION_S, counted from the first START, with no
  injections: telemetry-gap holds (SAFETY_STOP "telemetry stopped") in the
  records, and the pen process's CPU over those SESSION_S (utime + stime from
  /proc, every thread) as % of one core.

Each host's session ends while the pen still answers (the pen is served until
the host has exited), so the end's STOP is acknowledged and nothing is counted
as a lost link that the bench itself caused. A link lost during a run is
reported, and the technician reconnects so the trials can go on.

Every configuration runs once per arm in each round, the arms taking turns
(`--host-rt`, ARMS): "off", devicectl's default (the loop's short time slice,
os_grants.py; the CLI and its views kept off the pen process's core where it has one
of its own, three cores or more; the loop not real-time); "on", the loop real-time as
well (DEVICECTL_PEN_REALTIME=1, opt-in); "noslice" and "shared", the default without
one of its two; "before", without either; "all", every thread of the pen process
real-time (a diagnosis of the GIL).

Run: `.venv/bin/python bench/views_load.py [--trials N] [--session-s S] [--rounds R]
[--host-rt off,on,all] [--sim rt|nice]` (defaults 300, 60, 3, off,on, rt: about 20
minutes). `run_config(..., tree=DIR)` runs the host from another tree
(bench/before_after.py's `penproc`: the pen process before/after).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--tree" in sys.argv:  # `host --tree DIR`: the host and its pen process run DIR's devicectl
    sys.path.insert(0, sys.argv[sys.argv.index("--tree") + 1])

import procstat
import sched_trace  # bench/sched_trace.py: `--trace`
from latency import (  # the pen side and its constants, shared with bench/latency.py
    DELAY_US,
    ESTOP_TIMEOUT_S,
    INJECT_GAP_US,
    PROFILE,
    _open_pty,
    _pct,
)

from devicectl import protocol as p
from firmware_sim.virtual import VirtualPen

HERE = Path(__file__).resolve()
TELEMETRY_HZ = 1000
TRIALS = 300
ROUNDS = 3
SESSION_S = 60.0
CLIENTS = 200
#: The simulated pen's priority (this process only; its children get their own back).
PEN_NICE = -10
GOAL_RATIO = 1.2
GOAL_P99_US = 1000.0
GOAL_CPU_PCT = 5.0
#: How long a host may take to end its session and exit, the pen still answering.
HOST_EXIT_S = 30.0


# --- the host process: `devicectl run` for a port, with its views ---------------


def host_main(port: str, view: bool, clients: int, stalled: bool, *, shared: bool = False,
              noslice: bool = False) -> int:
    from devicectl.commands.run_cmd import VIEW_HZ
    from devicectl.commands.run_pen import share_cores
    from devicectl.controller_core import COVERAGE_CELL_MM, StartFacts
    from devicectl.monitor.terminal import FULL_MIN_SIZE
    from devicectl.monitor.viewproc import ViewOptions, ViewProcess
    from devicectl.penproc import LinkSettings, MapRaster, PenProcess, SessionSettings
    from devicectl.profile import load_profile
    from devicectl.profile_plan import plan_recipe
    from devicectl.store import Store
    from devicectl.transitions import Command, State
    from devicectl.zones import load_zone_map

    tmp = Path(tempfile.mkdtemp(prefix="devicectl-bench-"))
    db = tmp / "records.db"
    with Store(db) as store:
        sid = store.create_session(
            patient_ref="BENCH", profile_name="bench", profile_hash="ab" * 32,
            profile_text="", started_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
    zone_map = load_zone_map()
    pen = PenProcess.open(LinkSettings(port=port))
    pen.begin(SessionSettings(
        recipe=plan_recipe(load_profile(PROFILE), zone_map),
        raster=MapRaster.of(zone_map, COVERAGE_CELL_MM), facts=StartFacts("BENCH", frozenset()),
        db_path=db, session_id=sid, nonce=random.getrandbits(32),
        started_wall=datetime.now(UTC)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pen.wait_started(30)
    pen_pid = pen.pid
    assert pen_pid is not None
    if not shared:  # as `devicectl run` does: this process and its views keep off the pen's core
        share_cores(pen)
    if noslice:  # the loop's time slice given back (an arm of the comparison)
        from devicectl.os_grants import set_thread_slice

        set_thread_slice(pen.grant_data["loop_tid"], 0)
    reconnects = 0

    def technician() -> None:
        nonlocal reconnects
        last: dict[Command, float] = {}
        while not stop.wait(0.005):
            snap = pen.snapshot
            cmd = {State.FAULT: Command.CLEAR_FAULT, State.PAUSED: Command.RESUME,
                   State.ZONE_DONE: Command.NEXT_ZONE,
                   State.LINK_LOST: Command.RECONNECT}.get(snap.state)
            if snap.state is State.READY and not snap.go_no_go:
                cmd = Command.START
            if cmd is not None and time.monotonic() - last.get(cmd, 0.0) > 0.05:
                last[cmd] = time.monotonic()
                reconnects += cmd is Command.RECONNECT
                pen.submit(cmd)

    threading.Thread(target=technician, daemon=True).start()
    helpers: list[subprocess.Popen[str]] = []
    web = None
    if view:
        # the size of the least terminal the full layout is drawn at, as a technician's
        # (rich takes it from COLUMNS and LINES; /dev/null alone would give 80 columns,
        # the compact layout, which no terminal of that size gets)
        os.environ["COLUMNS"], os.environ["LINES"] = map(str, FULL_MIN_SIZE)
        tv = ViewProcess(ViewOptions("bench", output=os.devnull, keys=False))

        def feed() -> None:
            while not stop.wait(1 / VIEW_HZ):
                tv.push(pen)
            tv.close(pen.snapshot.view_status(), [])

        threading.Thread(target=feed, daemon=True).start()
    else:
        threading.Thread(target=lambda: [pen.drain_events() for _ in iter(
            lambda: stop.wait(0.1), True)], daemon=True).start()
    if clients:
        from devicectl.web.server import start_web

        web = start_web(pen, "127.0.0.1", 0, "bench-token-123", zone_map=zone_map,
                        header={"session_id": sid, "patient_ref": "BENCH", "profile": "bench"},
                        db_path=db, session_id=sid)
        helper = subprocess.Popen(
            [sys.executable, str(HERE.parent / "sse_clients.py"), str(web.port), str(clients)]
            + (["--stalled"] if stalled else []), stdout=subprocess.PIPE, text=True)
        helpers.append(helper)
        assert helper.stdout is not None
        helper.stdout.readline()  # "CONNECTED": the load is on before anything is measured
    print(f"READY {pen_pid}", flush=True)
    while not stop.wait(0.1) and not pen.wait(0):
        pass
    snap = pen.snapshot
    stop_at_us = snap.now_us - snap.t0_us  # session time: what comes after is the bench's end
    for h in helpers:
        h.terminate()
        h.wait(5)
    pen.request_stop("bench over")
    pen.wait(HOST_EXIT_S - 5)
    pen.close()
    if web is not None:
        web.stop()
    with sqlite3.connect(db) as conn:
        holds = conn.execute(
            "SELECT count(*) FROM events WHERE session_id = ? AND kind = 'SAFETY_STOP' "
            "AND text LIKE '%telemetry stopped%'", (sid,)).fetchone()[0]
        lost = conn.execute(
            "SELECT t_us, kind, text FROM events WHERE session_id = ? AND kind IN "
            "('LINK_LOST', 'PEN_FAULT', 'STOP_UNVERIFIED') ORDER BY id", (sid,)).fetchall()
    kept = None
    if any(t / 1e6 <= stop_at_us / 1e6 for t, _, _ in lost):  # kept to be read: what happened
        kept = str(db)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    report = pen.report
    print("HOST " + json.dumps({
        "gap_holds": holds, "reconnects": reconnects, "stop_at_s": stop_at_us / 1e6,
        "lost": [f"{t / 1e6:.2f} s {kind}: {text}" for t, kind, text in lost],
        "outcome": report.outcome.value if report is not None else None,
        "grants": pen.grants, "kept": kept}), flush=True)
    return 0


_threads = procstat.threads  # bench/procstat.py


def threads_text(pid: int, before: dict[int, tuple[float, int]],
                 after: dict[int, tuple[float, int]], seconds: float) -> str:
    """The pen process's threads over a window: % of a core and wake-ups a second; the
    busiest is the loop, the main thread the door (commands in), the others the records'
    writer and the publisher."""
    rows = []
    for tid, (cpu, vol) in after.items():
        cpu0, vol0 = before.get(tid, (0.0, 0))
        rows.append((100 * (cpu - cpu0) / seconds, (vol - vol0) / seconds, tid))
    rows.sort(reverse=True)
    parts = []
    for i, (pct, wakes, tid) in enumerate(rows):
        if pct == 0 and wakes < 1:
            continue
        name = "door" if tid == pid else "loop" if i == 0 else "thread"
        parts.append(f"{name} {pct:.1f} % ({wakes:.0f} wake-ups/s)")
    return ", ".join(parts)


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, every thread, in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the pen (this process) -------------------------------------------------------


def _fault_frame(pen: VirtualPen, now_us: int) -> bytes:
    """The pen's normal frame with a new fault flag (a stalled motor): the host answers
    ESTOP on the same first check as an over-depth (safety.telemetry_verdict), and
    a technician may clear it, where a second over-depth would end the session (H5)."""
    fw = pen.firmware
    t = fw.target
    assert t is not None
    tlm = p.Telemetry(
        (now_us - (fw._boot_us or 0)) & 0xFFFF_FFFF, int(fw.state), 1 << p.FaultBit.STALL,
        t.depth_um, t.depth_um, pen.physics.rate_meas_dhz, pen.physics.strokes & 0xFFFF_FFFF,
        fw.x_dmm, fw.y_dmm, fw.contact, t.zone_id, pen.physics.battery_mv,
    )
    return p.encode(tlm, 0)


class PenSide:
    """The simulated pen on the pty's master end, talking at TELEMETRY_HZ whatever it is
    told, and the host's stdout read as it comes (never blocking the pen)."""

    def __init__(self, master: int, host: subprocess.Popen[bytes]) -> None:
        self.master = master
        self.host = host
        assert host.stdout is not None
        self._out_fd = host.stdout.fileno()
        os.set_blocking(self._out_fd, False)
        self.out = b""
        self.pen = VirtualPen(seed=3)
        self.fw = self.pen.firmware
        self.overruns = 0
        self._watch = p.Decoder()

    def lines(self) -> list[str]:
        return self.out.decode(errors="replace").splitlines()

    def pen_pid(self) -> int | None:
        for line in self.lines():
            if line.startswith("READY "):
                return int(line.split()[1])
        return None

    @property
    def stamping(self) -> bool:
        return self.fw.state is p.PenState.STAMPING and self.fw.fault_flags == 0

    def step(self, until_us: int | None = None) -> int | None:
        """Wait for the host or the next frame (or `until_us`), answer, send what is due;
        the perf_counter_ns of a read that brought an ESTOP, else None."""
        fw = self.fw
        now_us = time.monotonic_ns() // 1000
        wait_us = fw._next_tlm_us - now_us if fw.greeted else 1000
        if until_us is not None:
            wait_us = min(wait_us, until_us - now_us)
        fds = [self.master] + ([self._out_fd] if self._out_fd >= 0 else [])
        ready, _, _ = select.select(fds, [], [], min(max(wait_us, 0), 1000) / 1e6)
        read_ns = time.perf_counter_ns()
        now_us = time.monotonic_ns() // 1000
        estop_ns = None
        if self._out_fd in ready:
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(self._out_fd, 65536)
                self.out += chunk
                if not chunk:
                    self._out_fd = -1
        if self.master in ready:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                data = b""
            if data:
                # The ESTOP is looked for in the bytes themselves: the pen's fault flags
                # can be cleared again by a CLEAR_FAULT in the same read.
                if any(type(f.message) is p.Estop for f in self._watch.feed(data)):
                    estop_ns = read_ns
                self.pen.receive_data(data, now_us)
                fw.telemetry_hz = TELEMETRY_HZ  # the pen talks at 1 kHz whatever it was told
        data = self.pen.advance(now_us)
        if data:
            try:
                os.write(self.master, data)
            except BlockingIOError:
                self.overruns += 1  # the host is not reading: bytes lost, as on a serial line
        return estop_ns

    def finish(self) -> None:
        """End the host (SIGTERM): the pen answers until it has exited, so the session's
        end is acknowledged as it would be by a real pen."""
        self.host.send_signal(signal.SIGTERM)
        end = time.monotonic() + HOST_EXIT_S
        while self.host.poll() is None and time.monotonic() < end:
            self.step()
        if self.host.poll() is None:
            self.host.kill()
        self.host.wait()
        assert self.host.stdout is not None
        os.set_blocking(self._out_fd if self._out_fd >= 0 else self.host.stdout.fileno(), True)
        self.out += self.host.stdout.read() or b""


@dataclass
class Run:
    """One host's run: ESTOP latencies (ns) or the session's CPU, and the host's report."""

    latencies: list[int] = field(default_factory=list)
    misses: int = 0
    cpu_pct: float | None = None
    #: the CLI process's own CPU (its threads: the handle's reader, the page, the view's
    #: feed; not the view's or the clients' processes), over the same window
    cli_pct: float | None = None
    #: the session's stamping time over which the CPU was measured (short if it ended early)
    session_s: float = 0.0
    asked_s: float = 0.0
    overruns: int = 0
    host: dict[str, Any] = field(default_factory=dict)
    #: the pen process's threads over the same window (threads_text)
    threads: str = ""
    #: `--trace`: the scheduler's wake-up delays by role over the trials (sched_trace)
    sched: list[str] = field(default_factory=list)


#: This process's priority as started, before main raises it for the pen.
_NICE0 = os.getpriority(os.PRIO_PROCESS, 0)


def _nice_back() -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, _NICE0)


def raise_pen_priority() -> str:
    """This process (the simulated pen) at nice PEN_NICE where permitted; says which."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PEN_NICE)
    except OSError:
        return "nice not raised (not permitted)"
    return f"nice {PEN_NICE}"


def raise_pen_real_time() -> str:
    """This process (the simulated pen) at SCHED_FIFO where permitted (its children
    normal again: SCHED_RESET_ON_FORK), else nice PEN_NICE; says which."""
    from firmware_sim.__main__ import ask_real_time

    got = ask_real_time()
    return got if got.startswith("SCHED_") else f"{got}; {raise_pen_priority()}"


#: `--host-rt all` (a diagnosis, not what devicectl does): the pen process's other
#: threads (door, writer, publisher) at this SCHED_FIFO priority, below the loop's, so
#: that none is preempted by normal tasks while it holds the GIL the loop waits for.
OTHERS_RT_PRIORITY = 5


def others_real_time(pid: int) -> None:
    """Every normal thread of process `pid` at SCHED_FIFO OTHERS_RT_PRIORITY."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            if os.sched_getscheduler(int(tid)) & ~os.SCHED_RESET_ON_FORK == os.SCHED_OTHER:
                os.sched_setscheduler(int(tid), os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                                      os.sched_param(OTHERS_RT_PRIORITY))


def _roles(host_pid: int, pen_pid: int) -> dict[int, str]:
    """Every thread of the processes in a run, to its role (sched_trace): the pen
    process's loop is its thread with the most wake-ups."""
    pids: dict[str, list[int]] = {"simulated pen": [os.getpid()], "CLI and page": [host_pid]}
    children: list[int] = []
    for tid in os.listdir(f"/proc/{host_pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{host_pid}/task/{tid}/children") as f:
            children += [int(c) for c in f.read().split()]
    for child in children:
        if child == pen_pid:
            continue
        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as f:
            role = "page's clients" if b"sse_clients" in f.read() else "terminal view"
            pids.setdefault(role, []).append(child)
    roles = sched_trace.threads_of(pids)
    threads = _threads(pen_pid)
    loop = max(threads, key=lambda t: threads[t][1])
    for tid in threads:
        roles[tid] = "pen process: loop" if tid == loop else "pen process: other threads"
    return roles


def run_config(trials: int, session_s: float, *, view: bool = False, clients: int = 0,
               stalled: bool = False, tree: Path | None = None, host_rt: str = "off",
               trace: bool = False) -> Run:
    """`trials` ESTOP trials (if any), else a plain session of `session_s`; the host
    from `tree` (a source tree; None: this one); `host_rt`: the arm (ARMS), by default
    "off", as devicectl runs (its loop not real-time: DEVICECTL_PEN_REALTIME=0)."""
    master, slave, path = _open_pty()
    args = ["host", path] + (["--view"] if view else []) + ["--clients", str(clients)]
    if stalled:
        args.append("--stalled")
    if tree is not None:
        args += ["--tree", str(tree)]
    if host_rt in ("shared", "before"):
        args.append("--shared")
    if host_rt in ("noslice", "before"):
        args.append("--noslice")
    env = {**os.environ, "DEVICECTL_PEN_REALTIME": "1" if host_rt in ("on", "all") else "0"}
    host = subprocess.Popen([sys.executable, str(HERE), *args], stdout=subprocess.PIPE,
                            env=env, preexec_fn=_nice_back)  # the host at its own priority
    side = PenSide(master, host)
    run = Run(asked_s=session_s)
    rng = random.Random(1)  # the same moments in every configuration
    inject_at_us: int | None = None
    sent_ns: int | None = None
    end = time.monotonic() + (60 + trials * 1.0 if trials else session_s + 60)
    pen_pid: int | None = None
    session_end: float | None = None
    first = last = (0.0, 0.0, 0.0)  # (time, pen process CPU s, CLI process CPU s)
    threads0: dict[int, tuple[float, int]] = {}
    rec: sched_trace.Recording | None = None
    try:
        while time.monotonic() < end and host.poll() is None:
            if trials and len(run.latencies) >= trials:
                break
            estop_ns = side.step(inject_at_us if sent_ns is None else None)
            if pen_pid is None:
                pen_pid = side.pen_pid()
                if pen_pid is not None and host_rt == "all":
                    others_real_time(pen_pid)
                if pen_pid is not None and trials and trace:
                    rec = sched_trace.Recording()
                continue  # nothing is measured before the host's views are loaded
            stamping = side.stamping
            if not trials:
                now = time.monotonic()
                if session_end is None and stamping:  # counted from the first START
                    session_end = now + session_s
                    first = last = (now, _cpu_s(pen_pid), _cpu_s(host.pid))
                    threads0 = _threads(pen_pid)
                if session_end is not None and (now >= session_end or now - last[0] > 0.5):
                    # Sampled twice a second: a session that ends early (a lost link,
                    # a FAULT) still has its CPU over the time it ran.
                    try:
                        last = (now, _cpu_s(pen_pid), _cpu_s(host.pid))
                        run.threads = threads_text(pen_pid, threads0, _threads(pen_pid),
                                                   last[0] - first[0])
                    except OSError:  # the pen process has ended: the last sample stands
                        continue
                    run.session_s = last[0] - first[0]
                    run.cpu_pct = 100 * (last[1] - first[1]) / max(run.session_s, 1e-9)
                    run.cli_pct = 100 * (last[2] - first[2]) / max(run.session_s, 1e-9)
                    if now >= session_end:
                        break
                continue
            if sent_ns is not None and estop_ns is not None:
                run.latencies.append(estop_ns - sent_ns)
                sent_ns = None
            if sent_ns is not None and time.perf_counter_ns() - sent_ns > ESTOP_TIMEOUT_S * 1e9:
                run.misses += 1  # counted and shown: a trial without an ESTOP is a failure
                sent_ns = None
            now_us = time.monotonic_ns() // 1000
            next_tlm = side.fw._next_tlm_us
            if sent_ns is None and stamping:
                if inject_at_us is None:
                    inject_at_us = now_us + rng.randint(*DELAY_US)
                elif now_us >= inject_at_us and next_tlm - now_us < INJECT_GAP_US:
                    inject_at_us = next_tlm + 1_000_000 // TELEMETRY_HZ // 2
                elif now_us >= inject_at_us:
                    frame = _fault_frame(side.pen, now_us)
                    sent_ns = time.perf_counter_ns()
                    os.write(master, frame)
                    inject_at_us = None
            elif not stamping:
                inject_at_us = None
    finally:
        run.overruns = side.overruns  # while measured: a host that has ended reads nothing
        roles: dict[int, str] = {}
        if rec is not None and pen_pid is not None:
            rec.stop()  # converted once the host is done: the pen keeps answering meanwhile
            with contextlib.suppress(OSError, ValueError):
                roles = _roles(host.pid, pen_pid)
        side.finish()
        if rec is not None:
            run.sched = sched_trace.report(sched_trace.delays(rec.text(), roles))
            rec.close()
        os.close(master)
        os.close(slave)
    for line in side.lines():
        if line.startswith("HOST "):
            run.host = json.loads(line[5:])
    return run


#: The ways the host runs, compared in the same run (`--host-rt`).
ARMS = {
    "off": "devicectl's default (loop RT off)",
    "on": "loop RT on",
    "all": "all threads RT (a diagnosis of the GIL; not what devicectl does)",
    "shared": "default, but the views not kept off the pen's core (3+ cores)",
    "noslice": "default, but the loop's time slice the kernel's default",
    "before": "the views not kept aside, the loop's slice the default",
}

CONFIGS = (
    ("no view", False, 0, False),
    ("terminal view + 200 SSE reading", True, CLIENTS, False),
    ("terminal view + 200 SSE stalled", True, CLIENTS, True),
)


def _notes(run: Run) -> list[str]:
    """What went wrong in a run, in words (nothing: an empty list)."""
    out = []
    host = run.host
    if not host:
        out.append("the host gave no report")
    stop_at = host.get("stop_at_s", float("inf"))
    during = [x for x in host.get("lost", []) if float(x.split()[0]) <= stop_at]
    if during:
        out.append(f"lost/faulted during the run: {during}")
    if host.get("reconnects"):
        out.append(f"{host['reconnects']} reconnects")
    if run.cpu_pct is not None and run.session_s < 0.95 * run.asked_s:
        out.append(f"CPU over the {run.session_s:.0f} s the session ran, not {run.asked_s:g} s")
    if run.misses:
        out.append(f"{run.misses} trials without an ESTOP within {ESTOP_TIMEOUT_S} s")
    if run.overruns:
        out.append(f"{run.overruns} pty overruns (the host did not read)")
    return out


def _rt_words(run: Run) -> str:
    """What the pen process's loop was granted (its words: real-time scheduling, its
    time slice), or why not."""
    grants = str(run.host.get("grants", ""))
    at = grants.find("loop thread")
    return grants[at:] if at >= 0 else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role")
    h = sub.add_parser("host")
    h.add_argument("port")
    h.add_argument("--view", action="store_true")
    h.add_argument("--clients", type=int, default=0)
    h.add_argument("--stalled", action="store_true")
    h.add_argument("--tree")
    h.add_argument("--shared", action="store_true")
    h.add_argument("--noslice", action="store_true")
    ap.add_argument("--trials", type=int, default=TRIALS)
    ap.add_argument("--session-s", type=float, default=SESSION_S)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--tree", help="run the host from this tree (build/compiled: the "
                    "compiled build)")
    ap.add_argument("--host-rt", default="off,on",
                    help="comma-separated, taking turns: " + "; ".join(
                        f"{k}: {v}" for k, v in ARMS.items()))
    ap.add_argument("--sessions", type=int, default=1,
                    help="sessions of --session-s per configuration, taking turns")
    ap.add_argument("--only", help="only the configurations whose name starts so "
                    "(e.g. 'no view')")
    ap.add_argument("--sim", choices=("rt", "nice"), default="rt",
                    help="the simulated pen (this process) at SCHED_FIFO where permitted "
                    "(rt), or at nice PEN_NICE as before round 8 (nice)")
    ap.add_argument("--trace", action="store_true",
                    help="record the scheduler during the trials (perf, root) and give each "
                    "role's wake-up delays (bench/sched_trace.py)")
    args = ap.parse_args()
    if args.trace and (why := sched_trace.available()):
        ap.error(f"--trace: {why}")
    tree = Path(args.tree).resolve() if args.tree else None
    if args.role == "host":
        return host_main(args.port, args.view, args.clients, args.stalled,
                         shared=args.shared, noslice=args.noslice)
    pen_nice = raise_pen_real_time() if args.sim == "rt" else raise_pen_priority()
    arms = args.host_rt.split(",")
    if not set(arms) <= set(ARMS):
        ap.error(f"--host-rt: {args.host_rt!r} is not a list of {', '.join(ARMS)}")
    configs = [(f"{label}, {ARMS[rt]}", view, clients, stalled, rt)
               for label, view, clients, stalled in CONFIGS for rt in arms
               if args.only is None or label.startswith(args.only)]
    t_start = time.monotonic()
    print(f"views under load: pen at {TELEMETRY_HZ} Hz telemetry over a pty, {pen_nice} "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M', time.gmtime())} UTC); "
          f"command: python bench/views_load.py --trials {args.trials} --session-s "
          f"{args.session_s:g} --rounds {args.rounds} --host-rt {args.host_rt} --sim {args.sim}"
          f" --sessions {args.sessions}{f' --only {args.only!r}' if args.only else ''}"
          f"{' --trace' if args.trace else ''}"
          f"{f' --tree {args.tree}' if args.tree else ''}",
          flush=True)
    runs: dict[str, list[Run]] = {label: [] for label, *_ in configs}
    sessions: dict[str, list[Run]] = {label: [] for label, *_ in configs}
    per_round = [args.trials // args.rounds + (r < args.trials % args.rounds)
                 for r in range(args.rounds)]
    for r, n in enumerate(per_round):
        for label, view, clients, stalled, rt in configs:
            run = run_config(n, 0, view=view, clients=clients, stalled=stalled, tree=tree,
                             host_rt=rt, trace=args.trace)
            runs[label].append(run)
            lat = run.latencies
            fig = (f"p50 {_pct(lat, 0.5):.0f} µs, p99 {_pct(lat, 0.99):.0f} µs; "
                   if lat else "")
            print(f"  round {r + 1}, {label}: {len(lat)} of {n} trials, {fig}"
                  f"{_rt_words(run) if r == 0 else ''} {'; '.join(_notes(run))} "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            for line in run.sched:
                print(line, flush=True)
    for label, view, clients, stalled, rt in configs * args.sessions:
        run = run_config(0, args.session_s, view=view, clients=clients, stalled=stalled,
                         tree=tree, host_rt=rt)
        sessions[label].append(run)
        if run.host.get("kept"):
            print(f"  (the records of the session that lost its link: {run.host['kept']})")
        print(f"  {args.session_s:g} s session, {label}: gap holds "
              f"{run.host.get('gap_holds')}, pen process CPU "
              f"{'n/a' if run.cpu_pct is None else f'{run.cpu_pct:.1f} %'}, CLI process "
              f"{'n/a' if run.cli_pct is None else f'{run.cli_pct:.1f} %'} "
              f"{'; '.join(_notes(run))} (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\n| configuration | trials | ESTOP p50 | ESTOP p99 | p99 / no view (same loop) "
          f"| {args.session_s:g} s session: gap holds | pen process CPU (1 kHz) "
          "| CLI process CPU |")
    print("|---|---|---|---|---|---|---|---|")
    base_p99: dict[str, float] = {}
    for label, _view, _clients, _stalled, rt in configs:
        lat = [x for run in runs[label] for x in run.latencies]
        ss = sessions[label]
        cpu = ", ".join(f"{s.cpu_pct:.1f} %" if s.cpu_pct is not None else "n/a" for s in ss)
        cli = ", ".join(f"{s.cli_pct:.1f} %" if s.cli_pct is not None else "n/a" for s in ss)
        holds = ", ".join(str(s.host.get("gap_holds", "n/a")) + (" (lost)" if any(
            float(x.split()[0]) <= s.host.get("stop_at_s", 0) for x in s.host.get("lost", []))
            else "") for s in ss)
        if not lat:
            print(f"| {label} | 0 of {args.trials} | n/a | n/a | n/a | {holds} | {cpu} | {cli} |")
            continue
        p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
        base = base_p99.setdefault(rt, p99)
        print(f"| {label} | {len(lat)} of {args.trials} | {p50:.0f} µs | {p99:.0f} µs "
              f"| {p99 / base:.2f}× | {holds} | {cpu} | {cli} |")
    print(f"\ngoals: p99 ≤ {GOAL_RATIO}× no view and ≤ {GOAL_P99_US:.0f} µs; no gap holds "
          f"caused by the views; pen process CPU ≤ {GOAL_CPU_PCT:.0f} %. "
          f"{(time.monotonic() - t_start) / 60:.1f} min, load {os.getloadavg()[0]:.2f} at the end, "
          f"{time.strftime('%H:%M', time.gmtime())} UTC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
