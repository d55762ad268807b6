"""Benchmark: the terminal view's CPU (issue 12: nothing a screen does may slow the loop).

The view's child process (devicectl/monitor/viewproc.py) holds a CPU the pen process's
pty worker may be waiting for. This measures it over a realistic sequence: what
ViewProcess.push sends every 100 ms during a real virtual session of PROFILE (the
simulated technician stamping, the coverage map changing every 0.5 s), recorded once
(tests/view_support.py) and sent at VIEW_HZ to the real view child, which draws into
/dev/null at the full layout (COLUMNS x LINES, set for it); its CPU (utime + stime from
/proc, after its start-up) per frame, and as % of one core at 10 Hz.

`--against TREE` runs TREE's view child (an extracted commit, e.g. `git archive main`)
and this tree's alternately, ROUNDS times, on the same frames: a same-run before/after
(bench/cpu.py's --against is the pattern). Then, in this process, the same frames drawn
by rich's whole layout (TerminalView.render) and by the cached one (monitor/frame.py).

Run: `.venv/bin/python bench/view_cost.py [--frames N] [--size COLSxROWS]
[--against TREE [--rounds R]]` (defaults 300 frames, 120x50, 2 rounds: about a minute
a run of the view child).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles" / "aga-crown-midscalp.yaml"
VIEW_HZ = 10  # run_cmd.VIEW_HZ (not imported: the worker runs another tree's devicectl)
#: The child's start (spawn, imports, the first frame) is not counted: it is over once
#: its CPU grows by less than this in START_WINDOW_S (an idle view wakes every 0.2 s).
START_IDLE_S = 0.03
START_WINDOW_S = 0.5


def worker(tree: Path, frames_path: Path) -> None:
    """Runs under `tree`: its view child, fed the frames at VIEW_HZ; prints its CPU."""
    sys.path.insert(0, str(tree))
    from devicectl.monitor.viewproc import ViewOptions, ViewProcess

    frames = pickle.loads(frames_path.read_bytes())
    view = ViewProcess(ViewOptions("devicectl · patient BENCH", output=os.devnull, keys=False))
    assert view.pid is not None
    first_status, first_events, first_grid = frames[0]
    view.show(first_status, first_events, first_grid)
    cpu0 = _cpu_s(view.pid)
    for _ in range(60):
        time.sleep(START_WINDOW_S)
        cpu0, before = _cpu_s(view.pid), cpu0
        if cpu0 - before < START_IDLE_S:
            break
    cpu0, t0 = _cpu_s(view.pid), time.monotonic()
    for n, (status, events, grid) in enumerate(frames[1:], start=1):
        delay = t0 + n / VIEW_HZ - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        view.show(status, events, grid)
    time.sleep(1 / VIEW_HZ)  # the last frame drawn
    cpu1, t1 = _cpu_s(view.pid), time.monotonic()
    view.close(frames[-1][0], [])
    print(json.dumps({"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "frames": len(frames) - 1}))


def _cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_tree(tree: Path, frames_path: Path, size: tuple[int, int]) -> dict[str, Any]:
    env = dict(os.environ, COLUMNS=str(size[0]), LINES=str(size[1]))
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(tree), str(frames_path)],
        env=env, capture_output=True, text=True, check=True, cwd=tree)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def in_process(frames: list[Any], size: tuple[int, int]) -> tuple[float, float]:
    """ms of CPU a frame in this process: rich's whole layout, then the cached one, each
    drawn through rich's Live into /dev/null as the child does."""
    from rich.console import Console
    from rich.live import Live

    from devicectl.monitor.frame import FullFrame
    from devicectl.monitor.terminal import TerminalView

    out: list[float] = []
    for cached in (False, True):
        view = TerminalView("devicectl · patient BENCH")
        with open(os.devnull, "w") as devnull:
            console = Console(file=devnull, force_terminal=True, width=size[0], height=size[1])
            full = FullFrame(view, console)
            t0 = time.process_time()
            with Live(view.render({}), console=console, auto_refresh=False) as live:
                for status, events, grid in frames:
                    view.add_events(events)
                    if grid is not None:
                        view.show_grid(*grid)
                    frame = full.frame(status, size[0]) if cached else view.render(status)
                    if frame is not None:
                        live.update(frame, refresh=True)
            out.append(1000 * (time.process_time() - t0) / len(frames))
    return out[0], out[1]


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="120x50", help="COLSxROWS the view draws at")
    parser.add_argument("--against", type=Path, help="another tree: a same-run before/after")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cols, rows = (int(v) for v in args.size.split("x"))
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from view_support import record_frames

    print(f"the terminal view's CPU (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M', time.gmtime())} UTC)")
    frames = record_frames(PROFILE, args.frames + 1)
    stamping = sum(1 for s, _, _ in frames if s.get("state") == "STAMPING")
    print(f"  {len(frames) - 1} frames of {PROFILE.name} ({stamping} stamping, "
          f"{sum(g is not None for _, _, g in frames)} maps, "
          f"{sum(len(e) for _, e, _ in frames)} events), full layout at {cols}x{rows}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.pickle"
        path.write_bytes(pickle.dumps(frames))
        trees = [("after", ROOT)] if args.against is None else [
            ("before", args.against.resolve()), ("after", ROOT)]
        for r in range(args.rounds if args.against is not None else 1):
            for label, tree in trees:
                res = run_tree(tree, path, (cols, rows))
                print(f"  round {r + 1}, {label} ({tree}): view child "
                      f"{1000 * res['cpu_s'] / res['frames']:.2f} ms a frame, "
                      f"{100 * res['cpu_s'] / res['wall_s']:.1f} % of one core at {VIEW_HZ} Hz "
                      f"(load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M:%S', time.gmtime())}"
                      " UTC)", flush=True)
    whole, cached = in_process(frames, (cols, rows))
    print(f"  in this process, this tree: rich's whole layout {whole:.2f} ms a frame, "
          f"cached {cached:.2f} ms ({whole / cached:.1f}x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
