"""Benchmark: a 30-minute six-zone session in virtual time, wall-clock seconds.

As `devicectl run --sim --speed 0 --yes` builds it: the real Controller and
Session loop, the records written by the RecordWriter thread (temporary
database), the simulated pen (firmware_sim VirtualPen) behind its VirtualWire on
the virtual clock, which each read moves to the pen's next frame or the loop's
timeout; profile bench/six-zone.yaml. Run: `.venv/bin/python bench/session.py
[RUNS]` (default 1).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# appended, not inserted: PYTHONPATH=build/compiled (make compiled) must come first
sys.path.append(str(Path(__file__).resolve().parent.parent))

from devicectl.controller import Controller, StartFacts
from devicectl.link import VirtualClock
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.session import VIRTUAL_MAX_WAIT_US, Policy, Session
from devicectl.store import RecordWriter, Store
from devicectl.zones import load_zone_map
from firmware_sim.virtual import VirtualPen, VirtualWire

PROFILE = Path(__file__).resolve().parent / "six-zone.yaml"
GOAL_WALL_S = 10.0


def end_state(controller: Controller, clock_us: int, outcome: str) -> str:
    """A hash of the session's end state: the coverage grid, strokes, spill and held cells
    per zone, the clock and the outcome (a change to the loop must leave it as it was)."""
    cov = controller.coverage
    h = hashlib.sha256(f"{clock_us} {outcome}".encode())
    if cov is not None:
        h.update(cov.hits.tobytes())
        h.update(cov.reach.held.tobytes())
        for zone in sorted(cov.zones):
            h.update(f"{zone} {cov.strokes(zone)} {cov.cells_at_max(zone)} {cov.fraction(zone)} "
                     f"{cov.mean_passes(zone)} {cov.spill_cm2(zone)} "
                     f"{cov.spill_depth_um(zone)};".encode())
    return h.hexdigest()[:16]


def run(*, records: bool = True) -> tuple[float, float, float, str, str]:
    """(wall s, CPU s of this process, simulated s, outcome, end state's hash) of one
    whole session."""
    zone_map = load_zone_map()
    loaded = load_profile(PROFILE)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        writer = None
        if records:
            store = Store(db)
            sid = store.create_session(
                patient_ref="BENCH", profile_name=loaded.profile.name,
                profile_hash=loaded.content_hash, profile_text=loaded.text,
                started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            )
            store.close()
            writer = RecordWriter(db, sid)
            writer.start()
        clock = VirtualClock(0)
        controller = Controller(
            lambda dev: make_plan(loaded, dev, zone_map), zone_map,
            StartFacts("BENCH", frozenset()), nonce=secrets.randbits(32), now_us=0,
        )
        session = Session(
            controller, wire=VirtualWire(VirtualPen(seed=11, zone_map=zone_map), clock),
            writer=writer, policy=Policy(auto_confirm=True, end_on_fault=True), clock=clock,
            max_wait_us=VIRTUAL_MAX_WAIT_US,
        )
        c0, w0 = time.process_time(), time.perf_counter()
        session.start()
        session.wait()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if writer is not None:
            writer.close(str(session.outcome), datetime.now(UTC).isoformat())
        assert session.outcome is not None
        outcome = session.outcome.value
        return (wall, cpu, clock.now_us / 1e6, outcome,
                end_state(controller, clock.now_us, outcome))


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(f"six-zone session ({PROFILE.name}) in virtual time, as fast as possible "
          f"(Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f})")
    for _ in range(runs):
        wall, cpu, sim_s, outcome, state = run()
        verdict = "met" if wall <= GOAL_WALL_S else "NOT met"
        print(f"  next-event steps: {wall:6.2f} s wall, {cpu:6.2f} s CPU for "
              f"{sim_s / 60:5.1f} simulated min ({sim_s / wall:4.0f}x), {outcome}; "
              f"≤ {GOAL_WALL_S:.0f} s: {verdict}; end state {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
