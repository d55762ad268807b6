"""Benchmark: the live page's server alone, serving N SSE clients (issue 12: the CLI side).

A child process per run is the CLI side only: a Hub (devicectl/web/hub.py) on
StampingSource, a stand-in for a stamping session that changes every tick as a real
one does (the pen moves and strokes, the trace grows, the active zone's numbers
rise, the heat map fills along the pen's path: deltas of about 1 kB, and a heat map
of about 2 kB twice a second), served by `serve` as start_web does, on the shipped
six-zone map. Its N clients are another process (bench/sse_clients.py: reading
everything, or `--stalled`: never reading, with a tiny receive window). After
WARMUP_S, the server process's CPU (os.times: user + system, every thread) over S
seconds, as % of one core, and the two busy threads' shares and wake-ups a second
(the web server's event loop, the hub's refresh).

Run: `.venv/bin/python bench/sse_cost.py [S] [--clients N] [--against TREE [ROUNDS]]`
(defaults 10 s, 200 clients). Each round runs reading then stalled clients, this
tree's devicectl with uvicorn's pure-Python HTTP (h11: httptools made unimportable)
and with httptools; with `--against TREE` (a directory holding another tree, e.g.
`git archive main | tar -x -C /tmp/before`), TREE's devicectl first, with h11 as
before round 9, alternately, ROUNDS times (default 3), so that all see the same
machine load (bench/cpu.py's --against is the pattern).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import procstat  # bench/procstat.py: this script's folder is first on the path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECONDS = 10.0
CLIENTS = 200
WARMUP_S = 2.0
#: The hub's refresh and the page's rate: a tick (s).
TICK_S = 0.1


class StampingSource:
    """A Source (devicectl/web/hub.py) like a stamping session on `zone_map`: its
    time is the wall clock's since it was made; the pen rasters the active zone's
    box at 5 strokes a tick, each stroke adding a pass to a heat cell."""

    def __init__(self, zone_map: Any) -> None:
        self.zones = list(zone_map.zones)
        self.t0 = time.monotonic()
        x0, y0, x1, y1 = zone_map.bounds_mm
        self.x0, self.y0 = x0, y0
        self.cell = 3.0
        self.nx, self.ny = math.ceil((x1 - x0) / self.cell), math.ceil((y1 - y0) / self.cell)
        self.passes = bytearray(self.nx * self.ny)
        self.strokes = 0

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def tracked(self) -> bool:
        return True

    def finished(self) -> bool:
        return False

    def _pen_xy(self, t: float) -> tuple[float, float]:
        row = int(t / 3.0) % self.ny
        col = int((t % 3.0) / 3.0 * self.nx)
        return self.x0 + (col + 0.5) * self.cell, self.y0 + (row + 0.5) * self.cell

    def status(self) -> dict[str, Any]:
        t = self.now_s()
        active = int(t / 60.0) % len(self.zones)
        strokes = int(t * 50)
        for s in range(self.strokes, strokes):  # each stroke: a pass where the pen was
            x, y = self._pen_xy(s / 50)
            i = int((y - self.y0) / self.cell) * self.nx + int((x - self.x0) / self.cell)
            self.passes[i] = min(3, self.passes[i] + 1)
        self.strokes = strokes
        x, y = self._pen_xy(t)
        zones = []
        for i, z in enumerate(self.zones):
            done = i < active
            share = 1.0 if done else (t % 60.0) / 60.0 if i == active else 0.0
            zones.append({
                "zone_id": z.id, "name": z.name, "depth_um": 1000 + 100 * i,
                "rate_dhz": 1000, "target_fraction": 0.6, "fraction": 0.8 * share,
                "cells_at_max": int(40 * share), "target_passes": 2,
                "mean_passes": 2.1 * share, "at_max_fraction": 0.01 * share,
                "at_max_cm2": 0.3 * share, "unreachable_cm2": 0.0, "seconds": 60.0 * share,
                "strokes": int(3000 * share), "done": done, "active": i == active})
        return {
            "state": "STAMPING", "zone_index": active, "zone_count": len(self.zones),
            "zone": {"zone_id": self.zones[active].id, "name": self.zones[active].name},
            "zones": zones,
            "pen": {"state": "STAMPING", "depth_cmd_um": 1000 + 100 * active,
                    "depth_meas_um": 1000 + 100 * active + strokes % 11 - 5,
                    "rate_meas_dhz": 1000, "stamp_count": strokes, "contact": True,
                    "battery_mv": 4100 - strokes // 500, "x_mm": round(x, 1),
                    "y_mm": round(y, 1), "fault_flags": 0, "faults": []},
            "position_mode": "tracked", "stop_reason": None, "fault": None,
            "fault_final": False, "clear_fault_offered": False, "tolerance_strokes": 0,
            "go_no_go": [], "elapsed_s": t, "remaining_s_est": 360.0 - t,
        }

    def heat(self) -> dict[str, Any]:
        return {"x0_mm": self.x0, "y0_mm": self.y0, "cell_mm": self.cell, "nx": self.nx,
                "ny": self.ny, "cells": "".join("0123"[v] for v in self.passes)}


def serve_main(seconds: float, clients: int, stalled: bool, h11: bool) -> int:
    """The child: one CLI side (this process) and its clients; prints one JSON line.
    `h11`: httptools cannot be imported, so that uvicorn parses HTTP in pure Python."""
    if h11:
        sys.modules["httptools"] = None  # type: ignore[assignment]
    from devicectl.web.hub import Hub
    from devicectl.web.server import serve
    from devicectl.zones import load_zone_map

    zone_map = load_zone_map()
    hub = Hub(StampingSource(zone_map), zone_map,
              {"session_id": 1, "patient_ref": "BENCH", "profile": "bench", "controls": False,
               "mode": "live"})
    web = serve(hub, "127.0.0.1", 0, token=None, submit=None)
    helper = subprocess.Popen(
        [sys.executable, str(HERE / "sse_clients.py"), str(web.port), str(clients)]
        + (["--stalled"] if stalled else []), stdout=subprocess.PIPE, text=True)
    try:
        assert helper.stdout is not None
        helper.stdout.readline()  # CONNECTED
        time.sleep(WARMUP_S)
        names = {t.native_id: t.name for t in threading.enumerate()}
        v0, t0, th0 = hub.version, os.times(), procstat.threads()
        time.sleep(seconds)
        v1, t1, th1 = hub.version, os.times(), procstat.threads()
    finally:
        helper.terminate()
        helper.wait(5)
        web.stop()
    wall = t1.elapsed - t0.elapsed
    per = {names[tid]: (100 * (cpu - th0.get(tid, (0.0, 0))[0]) / wall,
                        (vol - th0.get(tid, (0.0, 0))[1]) / wall)
           for tid, (cpu, vol) in th1.items() if names.get(tid) in ("web-server", "web-hub")}
    print(json.dumps({"cpu_pct": 100 * (t1.user - t0.user + t1.system - t0.system) / wall,
                      "http": web._server.config.http_protocol_class.__name__,
                      "threads": per, "versions_per_s": (v1 - v0) / wall}), flush=True)
    return 0


def run(tree: Path, seconds: float, clients: int, stalled: bool, h11: bool) -> dict[str, Any]:
    """One child with `tree`'s devicectl (first on its path); `h11`: without httptools."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(seconds), str(clients)]
        + (["--stalled"] if stalled else []) + (["--h11"] if h11 else []), env=env,
        capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"the server child failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "--serve":
        return serve_main(float(args[1]), int(args[2]), "--stalled" in args, "--h11" in args)
    other: Path | None = None
    rounds = 1
    clients = CLIENTS
    if "--against" in args:
        at = args.index("--against")
        other = Path(args[at + 1]).resolve()
        end = at + 2
        rounds = 3
        if len(args) > end and args[end].isdigit():
            rounds, end = int(args[end]), end + 1
        del args[at:end]
    if "--clients" in args:
        at = args.index("--clients")
        clients = int(args[at + 1])
        del args[at:at + 2]
    seconds = float(args[0]) if args else SECONDS
    # (label, tree, without httptools): before as shipped until round 9 (h11, uvicorn's
    # choice when httptools is not installed), after with h11 and with httptools
    runs = [("before", other, True)] if other is not None else []
    runs += [("after, h11", ROOT, True), ("after, httptools", ROOT, False)]
    print(f"the live page's server, {clients} SSE clients, {seconds:g} s a run "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M', time.gmtime())} UTC)")
    for r in range(rounds):
        for stalled in (False, True):
            for label, tree, h11 in runs:
                assert tree is not None
                res = run(tree, seconds, clients, stalled, h11)
                threads = ", ".join(f"{k} {pct:.1f} % ({wakes:.0f} wake-ups/s)"
                                    for k, (pct, wakes) in sorted(res["threads"].items()))
                print(f"  round {r + 1}, {'stalled' if stalled else 'reading'}, {label} "
                      f"({tree}, {res['http']}): {res['cpu_pct']:5.1f} % of one core ({threads}; "
                      f"{res['versions_per_s']:.1f} versions/s; load "
                      f"{os.getloadavg()[0]:.2f}, {time.strftime('%H:%M:%S', time.gmtime())} "
                      "UTC)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
