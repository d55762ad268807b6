"""Benchmark: over-depth TELEMETRY to ESTOP, pen to pen, over a pseudo-terminal between processes.

This process is the pen: the simulated pen (firmware_sim VirtualPen, 1000 Hz
telemetry) served on a raw pty. A second process is the host: the real
`devicectl.session.Session` runner (real-time loop) with a real `Controller`
over `devicectl.link.open_transport(<pty>)`, optionally with the rich live
view rendering at 15 Hz on a thread. At random moments while the pen stamps,
the pen writes one hand-made over-depth TELEMETRY; the time runs from just
before that write to the return of the pen's read that brings the host's
ESTOP. The host's harness thread then plays the technician: CLEAR_FAULT,
and START once READY, so the next trial can begin. The bare pty round trip
(33 bytes, pen -> echo process -> pen, plain os.read/os.write) is measured in
the same run. Run: `.venv/bin/python bench/latency.py [--trials N]`.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

# appended, not inserted: PYTHONPATH=build/compiled (make bench) must come first
sys.path.append(str(Path(__file__).resolve().parent.parent))
from devicectl import protocol as p
from devicectl.controller import Command, Controller, StartFacts, State
from devicectl.link import open_transport
from devicectl.monitor.viewproc import ViewProcess
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.safety import DEPTH_CAP_UM
from devicectl.session import Policy, Session
from devicectl.zones import load_zone_map
from firmware_sim.virtual import VirtualPen

HERE = Path(__file__).resolve()
PROFILE = HERE.parent.parent / "profiles" / "aga-crown-midscalp.yaml"
TELEMETRY_HZ = 1000
TRIALS = 1000
GOAL_P99_US = 1000.0
#: The over-depth reading the pen reports: well past the host's limit.
OVERDEPTH_UM = DEPTH_CAP_UM + 300
#: Stamping time before a trial's over-depth frame, drawn uniformly (µs).
DELAY_US = (3_000, 15_000)
ESTOP_TIMEOUT_S = 0.5
#: The over-depth frame goes out alone, at least this long before the next regular
#: one (and well after the last): one frame for the host to read, as from a real pen.
INJECT_GAP_US = 300


# --- the host process ----------------------------------------------------------


def build_session(port: str, *, hz: int = TELEMETRY_HZ) -> Session:
    """A real-time Session over `port` as `devicectl run` builds it, minus records.

    The controller asks for `hz` telemetry in its CONFIGURE (the product asks for
    controller.TELEMETRY_HZ, 500), and times its gap checks by it.
    """
    zone_map = load_zone_map()
    loaded = load_profile(PROFILE)
    controller = Controller(
        lambda dev: make_plan(loaded, dev, zone_map),
        zone_map,
        StartFacts("BENCH", frozenset()),
        nonce=random.getrandbits(32),
        now_us=time.monotonic_ns() // 1000,
        telemetry_hz=hz,
    )
    return Session(
        controller,
        wire=open_transport(port),
        writer=None,
        policy=Policy(auto_confirm=True, end_on_fault=False),
    )


def live_view_thread(session: Session, stop: threading.Event) -> ViewProcess:
    """The technician's view as `devicectl run` has it: a child process drawing
    (here into /dev/null, no keys), fed by a thread of the host at VIEW_HZ."""
    from devicectl.commands.run_cmd import VIEW_HZ
    from devicectl.monitor.terminal import FULL_MIN_SIZE
    from devicectl.monitor.viewproc import ViewOptions

    os.environ["COLUMNS"], os.environ["LINES"] = map(str, FULL_MIN_SIZE)  # the full layout
    view = ViewProcess(ViewOptions("bench", output=os.devnull, keys=False))

    def run() -> None:
        while not stop.wait(1 / VIEW_HZ):
            view.push(session)
        view.close(session.snapshot.view_status(), [])

    threading.Thread(target=run, name="live-view", daemon=True).start()
    return view


def technician(session: Session, stop: threading.Event, poll_s: float = 0.001) -> None:
    """Clear each fault and start again, as a technician would (rate-limited).

    It looks every `poll_s`: 1 ms here so trials follow each other quickly,
    which costs the host some CPU and GIL hand-overs; bench/cpu.py looks less often.
    """
    last: dict[Command, float] = {}

    def press(cmd: Command) -> None:
        now = time.monotonic()
        if now - last.get(cmd, 0.0) > 0.05:
            last[cmd] = now
            session.submit(cmd)

    while not stop.wait(poll_s):
        state = session.controller.state
        if state is State.FAULT:
            press(Command.CLEAR_FAULT)
        elif state is State.READY and not session.controller.go_no_go:
            press(Command.START)
        elif state is State.PAUSED:
            press(Command.RESUME)
        elif state is State.ZONE_DONE:
            press(Command.NEXT_ZONE)


def host_main(port: str, live: bool, switch_s: float | None, freeze: bool) -> int:
    if switch_s is not None:
        sys.setswitchinterval(switch_s)
    session = build_session(port)
    if freeze:
        # Everything built so far (modules, zone map, plan, rich) out of the cyclic
        # GC's reach: a full collection then walks only what the session makes.
        gc.collect()
        gc.freeze()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    session.start()
    if live:
        live_view_thread(session, stop)
    else:
        threading.Thread(target=lambda: _drain(session, stop), daemon=True).start()
    threading.Thread(target=technician, args=(session, stop), daemon=True).start()
    t0 = os.times()
    while not stop.wait(0.1) and not session.wait(0):
        pass
    t1 = os.times()
    session.request_stop("bench over")
    session.wait(2.0)
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    print(f"HOST cpu_s={cpu:.3f} wall_s={t1.elapsed - t0.elapsed:.3f} "
          f"state={session.controller.state.name} error={session.error!r}", flush=True)
    return 0


def _drain(session: Session, stop: threading.Event) -> None:
    while not stop.wait(0.1):
        session.drain_events()


# --- the pen (this process) ------------------------------------------------------


def _open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HERE), *args], stdout=subprocess.PIPE, text=True)


def bare_round_trip(n: int) -> list[int]:
    """ns per 33-byte round trip, pen -> echo process -> pen, plain os calls on both ends."""
    master, slave, path = _open_pty()
    echo = _spawn("echo", path)
    frame = p.encode(p.Telemetry(0, 2, 0, 600, 600, 800, 0, 0, 0, 1, 1, 4000), 0)
    try:
        assert echo.stdout is not None
        echo.stdout.readline()  # "READY"
        out: list[int] = []
        for i in range(n + 50):
            t0 = time.perf_counter_ns()
            os.write(master, frame)
            got = 0
            while got < len(frame):
                select.select([master], [], [], 1.0)
                got += len(os.read(master, 4096))
            if i >= 50:  # the first ones warm caches and the scheduler
                out.append(time.perf_counter_ns() - t0)
        return out
    finally:
        echo.terminate()
        echo.wait()
        os.close(master)
        os.close(slave)


def echo_main(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    print("READY", flush=True)
    while True:
        select.select([fd], [], [])
        data = os.read(fd, 4096)
        if not data:
            return 0
        os.write(fd, data)


def estop_trials(
    n: int, *, live: bool, switch_s: float | None, freeze: bool = False
) -> tuple[list[int], str]:
    """ns from the over-depth TELEMETRY's write to the read that brings the ESTOP, n times."""
    master, slave, path = _open_pty()
    args = ["host", path] + (["--live"] if live else [])
    if switch_s is not None:
        args += ["--switch-interval", str(switch_s)]
    if freeze:
        args.append("--gc-freeze")
    host = _spawn(*args)
    pen = VirtualPen(seed=3)
    fw = pen.firmware
    rng = random.Random(1)
    out: list[int] = []
    inject_at_us: int | None = None
    sent_ns: int | None = None
    deadline = time.monotonic() + 30 + n * 0.2
    misses = 0
    watch = p.Decoder()
    try:
        while len(out) < n:
            now_us = time.monotonic_ns() // 1000
            if time.monotonic() > deadline:
                break
            # Sleep until the next telemetry is due, or the host speaks.
            wait_us = fw._next_tlm_us - now_us if fw.greeted else 1000
            if sent_ns is None and inject_at_us is not None:
                wait_us = min(wait_us, inject_at_us - now_us)
            ready, _, _ = select.select([master], [], [], min(max(wait_us, 0), 1000) / 1e6)
            read_ns = time.perf_counter_ns()
            now_us = time.monotonic_ns() // 1000
            if ready:
                try:
                    data = os.read(master, 4096)
                except (BlockingIOError, OSError):
                    data = b""
                if data:
                    # The ESTOP is looked for in the bytes themselves: the pen's fault
                    # flags can be cleared again by a CLEAR_FAULT in the same read.
                    got_estop = any(type(f.message) is p.Estop for f in watch.feed(data))
                    pen.receive_data(data, now_us)
                    if sent_ns is not None and got_estop:
                        out.append(read_ns - sent_ns)
                        sent_ns = None
            data = pen.advance(now_us)
            if data:
                os.write(master, data)
            if sent_ns is not None and time.perf_counter_ns() - sent_ns > ESTOP_TIMEOUT_S * 1e9:
                misses += 1  # counted and shown: a trial without an ESTOP is a failure
                sent_ns = None
                if host.poll() is not None or misses > 10:
                    break
            stamping = fw.state is p.PenState.STAMPING and fw.fault_flags == 0
            if sent_ns is None and stamping:
                if inject_at_us is None:
                    inject_at_us = now_us + rng.randint(*DELAY_US)
                elif now_us >= inject_at_us and fw._next_tlm_us - now_us < INJECT_GAP_US:
                    # Too close to the next regular frame: aim at the middle of the next period.
                    inject_at_us = fw._next_tlm_us + 1_000_000 // TELEMETRY_HZ // 2
                elif now_us >= inject_at_us:
                    frame = _overdepth_frame(pen, now_us)
                    sent_ns = time.perf_counter_ns()
                    os.write(master, frame)
                    inject_at_us = None
            elif not stamping:
                inject_at_us = None
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            report, _ = host.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            host.kill()
            report = ""
        os.close(master)
        os.close(slave)
    if misses or len(out) < n:
        report += f" {len(out)} of {n} trials done, {misses} without ESTOP in 500 ms"
    return out, report.strip()


def _overdepth_frame(pen: VirtualPen, now_us: int) -> bytes:
    """What a pen whose depth stop slipped would send: its normal frame, depth over the cap."""
    fw = pen.firmware
    t = fw.target
    assert t is not None
    tlm = p.Telemetry(
        (now_us - (fw._boot_us or 0)) & 0xFFFF_FFFF, int(fw.state), 0, t.depth_um, OVERDEPTH_UM,
        pen.physics.rate_meas_dhz, pen.physics.strokes & 0xFFFF_FFFF, fw.x_dmm, fw.y_dmm,
        fw.contact, t.zone_id, pen.physics.battery_mv,
    )
    return p.encode(tlm, 0)


def _pct(xs: list[int], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role")
    h = sub.add_parser("host")
    h.add_argument("port")
    h.add_argument("--live", action="store_true")
    h.add_argument("--switch-interval", type=float)
    h.add_argument("--gc-freeze", action="store_true")
    e = sub.add_parser("echo")
    e.add_argument("port")
    ap.add_argument("--trials", type=int, default=TRIALS)
    args = ap.parse_args()
    if args.role == "host":
        return host_main(args.port, args.live, args.switch_interval, args.gc_freeze)
    if args.role == "echo":
        return echo_main(args.port)

    n = args.trials
    bare = bare_round_trip(n)
    bare_p50 = _pct(bare, 0.5)
    print(f"pty ESTOP latency, {n} trials each, pen at {TELEMETRY_HZ} Hz telemetry "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f})")
    print(f"  bare pty round trip (33 B echo):  p50 {bare_p50:7.1f} µs  p99 "
          f"{_pct(bare, 0.99):7.1f} µs  max {max(bare) / 1000:7.1f} µs")
    default_s = sys.getswitchinterval()
    configs = ((False, None, False), (True, None, False), (True, 0.0005, False),
               (True, 0.0005, True), (False, None, True))
    for live, switch_s, freeze in configs:
        lat, report = estop_trials(n, live=live, switch_s=switch_s, freeze=freeze)
        p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
        label = (f"{'live view' if live else 'no view  '}, switch {switch_s or default_s:.4f} s"
                 f"{', gc.freeze' if freeze else '           '}")
        verdict = "met" if p99 <= GOAL_P99_US else "NOT met"
        print(f"  ESTOP, {label}: p50 {p50:7.1f} µs  p99 {p99:7.1f} µs  max "
              f"{max(lat) / 1000:7.1f} µs  p50/bare {p50 / bare_p50:4.1f}x  "
              f"(p99 ≤ 1 ms: {verdict})  [{report}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
