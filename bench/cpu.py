"""Benchmark: the host's CPU use during a live session over a pseudo-terminal.

First the figure issue 12 asks for: the pen process of `devicectl run --port`
as run_cmd builds it (penproc.PenProcess: link, controller, flight recorder,
the records' writer in SQLite and the snapshot publisher), no view, its pen
(this process, bench/views_load.py's) at 1 kHz telemetry; its CPU (utime +
stime of every thread, /proc) over PEN_PROCESS_S of stamping, as % of one core.

Then the loop alone: `python -m firmware_sim serve` runs the simulated pen in
its own process; this process runs the real-time `Session` (minus the records
and the publisher) over the pty for DURATION_S, the technician's moves
scripted, and reads its own CPU time (os.times: user + system, every thread).
With and without the live view rendering at 15 Hz.
Run: `.venv/bin/python bench/cpu.py [PEN_PROCESS_S] [--tree DIR] [--against DIR [ROUNDS]]`
(`--against`: only the pen process, DIR's and this build's alternately, ROUNDS times;
the pen process's figure names its threads' CPU and wake-ups); the compiled build:
`PYTHONPATH=build/compiled` or `--tree build/compiled` (the host is handed the tree
this process imported, and its pen process, a spawned child, gets the host's sys.path
from multiprocessing, so all run the same build; the first line says which).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# appended, not inserted: PYTHONPATH=build/compiled (make bench) must come first
sys.path.append(str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
#: `--tree DIR`: the host, its pen process and the Session alone run DIR's devicectl,
#: e.g. build/compiled (`make compiled`); by default whichever the path gives first.
TREE: Path | None = None
if "--tree" in sys.argv:
    at = sys.argv.index("--tree")
    TREE = Path(sys.argv[at + 1]).resolve()
    del sys.argv[at : at + 2]
    sys.path.insert(0, str(TREE))

from latency import build_session, live_view_thread, technician  # noqa: E402

from devicectl.controller import State  # noqa: E402

DURATION_S = 10.0
GOAL_PCT = 10.0
#: The pen process's session (s of stamping), and its goal (issue 12: ≤ 5 % at 1 kHz).
PEN_PROCESS_S = 20.0
PEN_PROCESS_GOAL_PCT = 5.0


def pen_process(seconds: float = PEN_PROCESS_S, tree: Path | None = None) -> tuple[float, str]:
    """The pen process's CPU % of one core over `seconds` of stamping at 1 kHz, and what
    went wrong if anything (bench/views_load.py's session with no view); `tree`: the
    host's source tree (None: this one)."""
    import views_load

    views_load.raise_pen_priority()
    run = views_load.run_config(0, seconds, tree=tree)
    if run.cpu_pct is None:
        raise RuntimeError(f"no stamping session: {views_load._notes(run)}")
    notes = views_load._notes(run)
    notes.insert(0, f"gap holds {run.host.get('gap_holds')}, CLI process {run.cli_pct:.1f} %")
    notes.insert(1, f"threads: {run.threads}")
    return run.cpu_pct, "; ".join(notes)


def against(other: Path, rounds: int, seconds: float, tree: Path) -> None:
    """The pen process of `other` (a tree: an extracted commit, or a copy of an older
    build/compiled) and of `tree`, alternately, `rounds` times: a same-run before/after
    of either build (bench/before_after.py's `penproc` runs this repository's pure tree)."""
    for r in range(rounds):
        for label, which in (("before", other), ("after", tree)):
            pct, notes = pen_process(seconds, which)
            print(f"  round {r + 1}, {label} ({which}): {pct:5.1f} % of one core ({notes}; "
                  f"load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M:%S', time.gmtime())} "
                  "UTC)", flush=True)


def measure(hz: int, live: bool, duration_s: float = DURATION_S) -> tuple[float, str, int]:
    """Host CPU % of one core over `duration_s` of session, its state, telemetry frames seen."""
    pen = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "serve", "--seed", "5"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert pen.stdout is not None
        port = pen.stdout.readline().split()[1]
        session = build_session(port, hz=hz)
        stop = threading.Event()
        session.start()
        view_pid = None
        if live:
            view_pid = live_view_thread(session, stop).pid
        else:
            threading.Thread(target=_drain, args=(session, stop), daemon=True).start()
        threading.Thread(target=technician, args=(session, stop, 0.1), daemon=True).start()
        # The handshake and the first START first: steady state is what is measured.
        t_end = time.monotonic() + 5.0
        while session.controller.state is not State.STAMPING and time.monotonic() < t_end:
            time.sleep(0.01)
        frames0 = session.controller._decoder.frames
        t0, v0 = os.times(), _proc_cpu_s(view_pid)
        time.sleep(duration_s)
        t1, v1 = os.times(), _proc_cpu_s(view_pid)
        frames = session.controller._decoder.frames - frames0
        state = session.controller.state.name
        stop.set()
        session.request_stop("bench over")
        session.wait(2.0)
    finally:
        pen.terminate()
        pen.wait()
    cpu_s = (t1.user - t0.user) + (t1.system - t0.system)
    wall_s = t1.elapsed - t0.elapsed
    if view_pid is not None:
        print(f"    (the view's own process: {100 * (v1 - v0) / wall_s:.1f} % of one core)")
    return 100 * cpu_s / wall_s, state, frames


def _proc_cpu_s(pid: int | None) -> float:
    """user + system CPU seconds of another process, from /proc (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(session: object, stop: threading.Event) -> None:
    while not stop.wait(0.1):
        session.drain_events()  # type: ignore[attr-defined]


def main() -> int:
    other: Path | None = None
    rounds = 3
    if "--against" in sys.argv:  # `--against DIR [ROUNDS]`: before/after, alternately
        at = sys.argv.index("--against")
        other = Path(sys.argv[at + 1]).resolve()
        end = at + 2
        if len(sys.argv) > end and sys.argv[end].isdigit():
            rounds, end = int(sys.argv[end]), end + 1
        del sys.argv[at:end]
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else PEN_PROCESS_S
    print(f"host CPU during a live session over a pty (Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})")
    import devicectl.controller as ctl_module
    import devicectl.session as session_module

    built = [m.__name__ for m in (ctl_module, session_module) if str(m.__file__).endswith(".so")]
    print(f"  devicectl from {Path(str(ctl_module.__file__)).parent.parent}"
          f"{' (compiled: ' + ', '.join(built) + ', ...)' if built else ' (pure Python)'}")
    # the host (views_load.py) puts this repository first: it is handed the tree this
    # process imported, so that it and its pen process run the same build
    tree = Path(str(ctl_module.__file__)).parent.parent
    if other is not None:
        print(f"  pen process at 1000 Hz, {seconds:g} s of stamping a run, {rounds} rounds:")
        against(other, rounds, seconds, tree)
        return 0
    pct, notes = pen_process(seconds, tree=tree)
    verdict = "met" if pct <= PEN_PROCESS_GOAL_PCT else "NOT met"
    print(f"  pen process of devicectl run (records, no view), 1000 Hz, {seconds:g} s: "
          f"{pct:5.1f} % of one core ({notes}; ≤ {PEN_PROCESS_GOAL_PCT:.0f} %: {verdict}; "
          f"load {os.getloadavg()[0]:.2f})")
    print(f"  the Session alone (no records, no publisher), {DURATION_S:.0f} s each:")
    for hz, live in ((1000, False), (1000, True), (500, False)):
        pct, state, frames = measure(hz, live)
        verdict = "met" if pct <= GOAL_PCT else "NOT met"
        print(f"  {hz:>4} Hz telemetry, {'live view' if live else 'no view  '}: "
              f"{pct:5.1f} % of one core  ({frames} frames, state {state}; "
              f"≤ {GOAL_PCT:.0f} %: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
