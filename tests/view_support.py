"""What the terminal view is sent during a real virtual session, recorded: the frames
tests/test_monitor_frame.py draws both ways, and bench/view_cost.py times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devicectl.controller import Controller, StartFacts
from devicectl.link import VirtualClock
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.session import VIRTUAL_MAX_WAIT_US, Policy, Session
from devicectl.snapshot_build import SnapshotBuilder
from devicectl.transitions import ControlEvent
from devicectl.zones import load_zone_map
from firmware_sim.virtual import VirtualPen, VirtualWire

#: One message to the view: (status, new events, (zone id, coverage crop) or None).
Frame = tuple[dict[str, Any], list[ControlEvent], tuple[int, Any] | None]
#: The view's rate (run_cmd.VIEW_HZ) and the map's (terminal.MAP_PERIOD_S), in session time.
FRAME_US = 100_000
GRID_US = 500_000


class _Recorder:
    """A wire that hands everything to the VirtualWire it wraps and, at each read (on
    the loop's own thread, between two steps), keeps what ViewProcess.push would send
    every FRAME_US of session time (the session's own snapshots follow the wall clock)."""

    def __init__(self, wire: VirtualWire, clock: VirtualClock, count: int) -> None:
        self.wire, self.clock, self.count = wire, clock, count
        self.session: Session | None = None
        self.frames: list[Frame] = []
        self._builder = SnapshotBuilder()
        self._next_us = 0
        self._grid_us = 0

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        now, session = self.clock.now_us, self.session
        if session is not None and now >= self._next_us and len(self.frames) < self.count:
            self._next_us = now + FRAME_US
            snap = self._builder.build(session.controller, now, session.t0_us, now)
            grid = None
            if snap.zone_crop is not None and now >= self._grid_us:
                self._grid_us = now + GRID_US
                grid = (snap.zone_crop.zone_id, snap.zone_crop.as_view())
            self.frames.append((snap.view_status(), session.drain_events(), grid))
            if len(self.frames) == self.count:
                session.request_stop("recorded")
        return self.wire.read(max_bytes, timeout_s)

    def write(self, data: bytes) -> None:
        self.wire.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.wire, name)


def record_frames(profile: Path, count: int, *, seed: int = 3) -> list[Frame]:
    """The first `count` frames (FRAME_US apart) of a session of `profile` with the
    simulated pen in virtual time, its technician stamping on their own (--yes)."""
    zone_map = load_zone_map()
    loaded = load_profile(profile)
    clock = VirtualClock(1_000_000)
    ctl = Controller(lambda dev: make_plan(loaded, dev, zone_map), zone_map,
                     StartFacts(patient_ref="VIEW-1", used_cartridge_ids=frozenset()),
                     nonce=4321, now_us=clock.now_us)
    tap = _Recorder(VirtualWire(VirtualPen(seed=seed, zone_map=zone_map), clock), clock, count)
    session = Session(ctl, wire=tap, writer=None, policy=Policy(auto_confirm=True), clock=clock,
                      max_wait_us=VIRTUAL_MAX_WAIT_US)
    tap.session = session
    session.start()
    assert session.wait(300), "the virtual session did not end"
    return tap.frames
