"""Benchmark: does anything a screen does slow the pen process? (issue 12, item 7)

This process is the pen: the simulated pen (firmware_sim VirtualPen, its
telemetry held at 1 kHz) served on a raw pseudo-terminal, as bench/latency.py
does. A second process is `devicectl run` as built for a port: the pen process
(devicectl/penproc.py: link, controller, records) plus, under load, the
terminal view (a child drawing into /dev/null at VIEW_HZ) and the live page
with 200 SSE clients on /api/stream (a third process: clients that read
everything, or clients that never read). Each configuration runs in the same
invocation, so the ratios compare like with like:

- ESTOP: a TELEMETRY with a new fault flag at random moments while stamping
  (the same first check as an over-depth, which spec H5 allows only twice a
  session); the time from its write to the read that brings the host's ESTOP.
- A real-time session of SESSION_S with no injections: telemetry-gap holds
  (SAFETY_STOP "telemetry stopped") in the records, and the pen process's CPU
  (utime + stime from /proc) as % of one core.

Run: `.venv/bin/python bench/views_load.py [--trials N] [--session-s S]`.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

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
TRIALS = 400
SESSION_S = 60.0
CLIENTS = 200
GOAL_RATIO = 1.2
GOAL_P99_US = 1000.0
GOAL_CPU_PCT = 5.0


# --- the host process: `devicectl run` for a port, with its views ---------------


def host_main(port: str, view: bool, clients: int, stalled: bool) -> int:
    from devicectl.commands.run_cmd import VIEW_HZ
    from devicectl.controller_core import COVERAGE_CELL_MM, StartFacts
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

    def technician() -> None:
        last: dict[Command, float] = {}
        while not stop.wait(0.005):
            snap = pen.snapshot
            cmd = {State.FAULT: Command.CLEAR_FAULT, State.PAUSED: Command.RESUME,
                   State.ZONE_DONE: Command.NEXT_ZONE}.get(snap.state)
            if snap.state is State.READY and not snap.go_no_go:
                cmd = Command.START
            if cmd is not None and time.monotonic() - last.get(cmd, 0.0) > 0.05:
                last[cmd] = time.monotonic()
                pen.submit(cmd)

    threading.Thread(target=technician, daemon=True).start()
    helpers: list[subprocess.Popen[str]] = []
    web = None
    if view:
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
        helpers.append(subprocess.Popen(
            [sys.executable, str(HERE), "clients", str(web.port), str(clients)]
            + (["--stalled"] if stalled else []), stdout=subprocess.PIPE, text=True))
    print("READY", flush=True)
    cpu0, t0 = _cpu_s(pen_pid), time.monotonic()
    while not stop.wait(0.1) and not pen.wait(0):
        pass
    cpu1, t1 = _cpu_s(pen_pid), time.monotonic()
    for h in helpers:
        h.terminate()
        h.wait(5)
    pen.request_stop("bench over")
    pen.wait(10)
    pen.close()
    if web is not None:
        web.stop()
    with sqlite3.connect(db) as conn:
        holds = conn.execute(
            "SELECT count(*) FROM events WHERE session_id = ? AND kind = 'SAFETY_STOP' "
            "AND text LIKE '%telemetry stopped%'", (sid,)).fetchone()[0]
        lost = conn.execute("SELECT count(*) FROM events WHERE session_id = ? AND kind IN "
                            "('LINK_LOST', 'PEN_FAULT')", (sid,)).fetchone()[0]
    pct = 100 * (cpu1 - cpu0) / max(1e-9, t1 - t0)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"HOST pen_cpu_pct={pct:.2f} gap_holds={holds} lost_or_pen_faults={lost} "
          f"grants={pen.grants!r}", flush=True)
    return 0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, every thread, in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the page's clients: a process of its own, like the browsers would be -------


def clients_main(port: int, n: int, stalled: bool) -> int:
    socks = []
    request = (f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if stalled:  # a tiny window: the server's sends back up at once
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(request)
        socks.append(s)
    print("CONNECTED", flush=True)
    got = 0
    while True:
        if stalled:
            time.sleep(1.0)
            continue
        ready, _, _ = select.select(socks, [], [], 1.0)
        for s in ready:
            data = s.recv(65536)
            got += len(data)
            if not data:
                socks.remove(s)


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


def run_config(trials: int, session_s: float, *, view: bool, clients: int,
               stalled: bool) -> tuple[list[int], str]:
    """ESTOP trials (if `trials`), else a plain session of `session_s`: (ns list, host line)."""
    master, slave, path = _open_pty()
    args = ["host", path] + (["--view"] if view else []) + ["--clients", str(clients)]
    if stalled:
        args.append("--stalled")
    host = subprocess.Popen([sys.executable, str(HERE), *args], stdout=subprocess.PIPE,
                            text=True)
    pen = VirtualPen(seed=3)
    fw = pen.firmware
    rng = random.Random(1)
    out: list[int] = []
    inject_at_us: int | None = None
    sent_ns: int | None = None
    misses = overruns = 0
    watch = p.Decoder()
    end = time.monotonic() + (60 + trials * 0.3 if trials else session_s + 15)
    session_end: float | None = None
    try:
        while time.monotonic() < end:
            if trials and len(out) >= trials:
                break
            if session_end is not None and time.monotonic() >= session_end:
                break
            now_us = time.monotonic_ns() // 1000
            wait_us = fw._next_tlm_us - now_us if fw.greeted else 1000
            if sent_ns is None and inject_at_us is not None:
                wait_us = min(wait_us, inject_at_us - now_us)
            ready, _, _ = select.select([master], [], [], min(max(wait_us, 0), 1000) / 1e6)
            read_ns = time.perf_counter_ns()
            now_us = time.monotonic_ns() // 1000
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    data = b""
                if data:
                    got_estop = any(type(f.message) is p.Estop for f in watch.feed(data))
                    pen.receive_data(data, now_us)
                    fw.telemetry_hz = TELEMETRY_HZ  # the pen talks at 1 kHz whatever it was told
                    if sent_ns is not None and got_estop:
                        out.append(read_ns - sent_ns)
                        sent_ns = None
            data = pen.advance(now_us)
            if data:
                try:
                    os.write(master, data)
                except BlockingIOError:
                    overruns += 1  # the host is not reading: bytes lost, as on a serial line
            stamping = fw.state is p.PenState.STAMPING and fw.fault_flags == 0
            if not trials:
                if stamping and session_end is None:
                    session_end = time.monotonic() + session_s  # counted from the first START
                continue
            if sent_ns is not None and time.perf_counter_ns() - sent_ns > ESTOP_TIMEOUT_S * 1e9:
                misses += 1
                sent_ns = None
                if host.poll() is not None or misses > 10:
                    break
            if sent_ns is None and stamping:
                if inject_at_us is None:
                    inject_at_us = now_us + rng.randint(*DELAY_US)
                elif now_us >= inject_at_us and fw._next_tlm_us - now_us < INJECT_GAP_US:
                    inject_at_us = fw._next_tlm_us + 1_000_000 // TELEMETRY_HZ // 2
                elif now_us >= inject_at_us:
                    frame = _fault_frame(pen, now_us)
                    sent_ns = time.perf_counter_ns()
                    os.write(master, frame)
                    inject_at_us = None
            elif not stamping:
                inject_at_us = None
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            report, _ = host.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            host.kill()
            report = ""
        os.close(master)
        os.close(slave)
    lines = [ln for ln in report.splitlines() if ln.startswith("HOST")]
    note = lines[-1] if lines else "HOST (no report)"
    if overruns:
        note += f" pty overruns={overruns}"
    if trials and (misses or len(out) < trials):
        note += f" {len(out)} of {trials} trials done, {misses} without ESTOP in 500 ms"
    return out, note


CONFIGS = (
    ("no view", False, 0, False),
    ("terminal view + 200 SSE reading", True, CLIENTS, False),
    ("terminal view + 200 SSE stalled", True, CLIENTS, True),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role")
    h = sub.add_parser("host")
    h.add_argument("port")
    h.add_argument("--view", action="store_true")
    h.add_argument("--clients", type=int, default=0)
    h.add_argument("--stalled", action="store_true")
    c = sub.add_parser("clients")
    c.add_argument("port", type=int)
    c.add_argument("n", type=int)
    c.add_argument("--stalled", action="store_true")
    ap.add_argument("--trials", type=int, default=TRIALS)
    ap.add_argument("--session-s", type=float, default=SESSION_S)
    args = ap.parse_args()
    if args.role == "host":
        return host_main(args.port, args.view, args.clients, args.stalled)
    if args.role == "clients":
        return clients_main(args.port, args.n, args.stalled)
    print(f"views under load: pen at {TELEMETRY_HZ} Hz telemetry over a pty "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}); command: python bench/views_load.py "
          f"--trials {args.trials} --session-s {args.session_s:g}")
    base_p99 = None
    for label, view, clients, stalled in CONFIGS:
        lat, note = run_config(args.trials, 0, view=view, clients=clients, stalled=stalled)
        if not lat:
            print(f"  ESTOP, {label}: no trials [{note}]")
            continue
        p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
        base_p99 = p99 if base_p99 is None else base_p99
        ratio = p99 / base_p99
        print(f"  ESTOP, {label:32s}: p50 {p50:7.1f} µs  p99 {p99:7.1f} µs  max "
              f"{max(lat) / 1000:7.1f} µs  p99/no-view {ratio:4.2f}x "
              f"(≤ {GOAL_RATIO}x: {'met' if ratio <= GOAL_RATIO else 'NOT met'}; "
              f"≤ 1 ms: {'met' if p99 <= GOAL_P99_US else 'NOT met'})  [{note}]")
    for label, view, clients, stalled in CONFIGS:
        _, note = run_config(0, args.session_s, view=view, clients=clients, stalled=stalled)
        print(f"  {args.session_s:g} s session, {label:32s}: [{note}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
