"""Same-run before/after of the virtual-time benchmarks: this tree against a git ref.

Archives REF (a commit, e.g. the one before the VirtualWire) into a temporary
directory and runs, alternately in each round so that both see the same machine
load, the six-zone session (bench/session.py's `run`, at the 1 ms step in trees
that still have one) and the pen with a scripted host at 1000 Hz telemetry
(bench/sim.py: `run_wire` where the tree has it, else `run(1000)`, the 1 ms host
step), and the controller step (bench/controller.py: its median per step, and the
CPU time of its whole run), and the pen process of `devicectl run` at 1 kHz
(bench/cpu.py's `pen_process`: this tree's pen side, the host and its pen process
from each tree; `penproc`, not in the default set: it runs in real time, PENPROC_S of
stamping each). Each in its own process. Prints wall and CPU seconds and the ratios.
Run: `.venv/bin/python bench/before_after.py REF [ROUNDS] [NAMES]` (REF a commit, or a
directory holding an extracted tree), NAMES a
comma-separated subset of session, sim, controller, penproc (all but penproc by default).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SESSION = """
import inspect, sys
sys.path.insert(0, {tree!r}); sys.path.insert(0, {tree!r} + '/bench')
import session
run = session.run
wall, cpu, sim_s, outcome = run(1000) if 'step_us' in inspect.signature(run).parameters else run()
print(wall, cpu, sim_s, outcome)
"""
SIM = """
import sys, time
sys.path.insert(0, {tree!r}); sys.path.insert(0, {tree!r} + '/bench')
import sim
way = getattr(sim, 'run_wire', None)
way = way if way is not None else (lambda s: sim.run(1000, s))
way(1)  # the zone map's rasters are built once, outside the measured runs
c0 = time.process_time()
speed, frames = way(sim.SIM_SECONDS)
print(sim.SIM_SECONDS / speed, time.process_time() - c0, sim.SIM_SECONDS, frames)
"""
CONTROLLER = """
import contextlib, io, sys, time
sys.path.insert(0, {tree!r}); sys.path.insert(0, {tree!r} + '/bench')
import controller
out = io.StringIO()
c0, w0 = time.process_time(), time.perf_counter()
with contextlib.redirect_stdout(out):
    controller.main()
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
med = [line.split('median')[1].split()[0] for line in out.getvalue().splitlines()
       if 'median' in line and 'goal' not in line]
print(wall, cpu, med[0], med[1])
"""
PENPROC_S = 20.0
PENPROC = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r} + '/bench')
import cpu
pct, notes = cpu.pen_process({seconds!r}, Path({tree!r}))
print({seconds!r}, pct * {seconds!r} / 100, {seconds!r}, notes.replace(' ', '_'))
"""
BENCHES = {"session": ("six-zone session", SESSION), "sim": ("pen + host, 1000 Hz", SIM),
           "controller": ("controller step", CONTROLLER),
           "penproc": ("pen process, 1000 Hz", PENPROC)}
DEFAULT = ("session", "sim", "controller")


def measure(code: str, tree: Path) -> tuple[float, float, float, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = code.format(tree=str(tree), root=str(ROOT), seconds=PENPROC_S)
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, check=True, cwd=tree)
    wall, cpu, sim_s, tail = out.stdout.split()[-4:]
    return float(wall), float(cpu), float(sim_s), tail


def main() -> int:
    ref = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(DEFAULT)
    with tempfile.TemporaryDirectory(prefix="devicectl-before-") as tmp:
        before = Path(tmp)
        if Path(ref).is_dir():  # a tree already extracted (git archive REF | tar -x -C DIR)
            before = Path(ref)
        else:
            archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True,
                                     check=True).stdout
            tar = before / "src.tar"
            tar.write_bytes(archive)
            with tarfile.open(tar) as t:
                t.extractall(before, filter="data")
        print(f"before: {ref}; after: this tree; load {os.getloadavg()[0]:.1f}; "
              f"Python {sys.version.split()[0]}")
        for name, code in (BENCHES[n] for n in names):
            for r in range(rounds):
                b = measure(code, before)
                a = measure(code, ROOT)
                if code is CONTROLLER:  # the last two: median µs per step, per stroke step
                    print(f"  {name}, round {r + 1}: median before {b[2]:.2f} µs (stroke "
                          f"{b[3]}), after {a[2]:.2f} µs (stroke {a[3]}): after/before "
                          f"{a[2] / b[2]:.2f}, stroke {float(a[3]) / float(b[3]):.2f}; whole run "
                          f"CPU {b[1]:.2f} -> {a[1]:.2f} s; load {os.getloadavg()[0]:.1f}",
                          flush=True)
                    continue
                if code is PENPROC:  # CPU s over PENPROC_S of stamping, and the notes
                    print(f"  {name}, round {r + 1}: before {100 * b[1] / b[0]:.1f} %, after "
                          f"{100 * a[1] / a[0]:.1f} % of a core: after/before "
                          f"{a[1] / b[1]:.2f} ({b[3]} / {a[3]}); load "
                          f"{os.getloadavg()[0]:.1f}", flush=True)
                    continue
                print(f"  {name}, round {r + 1}: before {b[0]:6.1f} s wall {b[1]:6.1f} s CPU "
                      f"({b[2]:.0f} sim s, {b[3]}); after {a[0]:6.1f} s wall {a[1]:6.1f} s CPU "
                      f"({a[2]:.0f} sim s, {a[3]}); after/before wall {a[0] / b[0]:.2f}, "
                      f"CPU {a[1] / b[1]:.2f}; load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
