"""The cost of one controller step: decode a TELEMETRY frame, safety checks, coverage, decide.

A controller STAMPING with position is fed pre-encoded TELEMETRY frames one
call at a time (as the session's loop does after a read), the tip sweeping
rows over the zone and a new stroke every fifth frame (100 Hz strokes at
500 Hz telemetry). Reports median and p99 µs per `receive_data` call, all
steps and stroke steps apart. Run: `.venv/bin/python bench/controller.py`.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

# appended, not inserted: PYTHONPATH=build/compiled (make compiled) must come first
sys.path.append(str(Path(__file__).resolve().parent.parent))

from devicectl import protocol as p
from devicectl.controller import Command, Controller, StartFacts, State
from devicectl.dose import pass_punctures_per_cm2
from devicectl.plan import Plan, ZonePlan
from devicectl.zones import load_zone_map

FRAMES = 50_000
PERIOD_US = 2000  # 500 Hz telemetry
GOAL_US = 10.0
STROKE_GOAL_US = 25.0


def _controller() -> tuple[Controller, p.Decoder, int]:
    zone_map = load_zone_map()
    zone = zone_map.by_name("vertex")
    plan = Plan(
        "bench", "1", "h", 28,
        (ZonePlan(zone.id, zone.name, 1000, 1000, 3, 4, 0.99, zone.area_mm2, 0, 0.0,
                  pass_punctures_per_cm2=pass_punctures_per_cm2(12, 1000, 50)),),
        (), 50, 12, needle_counts=(12, 12),
    )
    dev = p.DeviceInfo(7, 1, 0x0102, 1, 2500, 500, 1500, 12, 3, 99, 0, 50)
    ctl = Controller(lambda d: plan, zone_map, StartFacts("b", frozenset()), nonce=7, now_us=0)
    host = p.Decoder()
    ctl.connect(0)
    seq = 0
    frames = host.feed(ctl.receive_data(p.encode(dev, seq), 100).data)
    acks = b"".join(
        p.encode(p.Ack(f.seq, f.message.TYPE, 0), i + 1)  # type: ignore[union-attr]
        for i, f in enumerate(frames)
    )
    ctl.receive_data(acks, 200)
    assert ctl.state is State.READY
    return ctl, host, zone.id


def _frames(zone_id: int, x0_mm: float, y0_mm: float) -> list[tuple[int, ...]]:
    """Telemetry values per frame; `stamps` and `state` are filled in as the pen
    obeys the host's START and STOP (the host checks that it does, spec H3)."""
    out = []
    for i in range(FRAMES):
        # rows 40 mm long, 4 mm apart, at 10 mm/s: 0.02 mm per frame
        along = (i * 0.02) % 40.0
        row = int(i * 0.02 // 40.0) % 10
        x = x0_mm + (along if row % 2 == 0 else 40.0 - along)
        y = y0_mm + 4.0 * row
        out.append((i * PERIOD_US, round(x * 10), round(y * 10)))
    return out


class _Pen:
    """Stamps (a stroke every fifth frame) only between the host's START and STOP."""

    def __init__(self) -> None:
        self.stamping = True
        self.stamps = 0
        self.decoder = p.Decoder()

    def frame(self, i: int, values: tuple[int, ...], zone_id: int) -> bytes:
        if self.stamping and i % 5 == 0:
            self.stamps += 1
        t_us, x_dmm, y_dmm = values
        state = 3 if self.stamping else 2
        t = p.Telemetry(t_us, state, 0, 1000, 1000 if self.stamping else 0, 1000, self.stamps,
                        x_dmm, y_dmm, 1, zone_id, 4000)
        return p.encode(t, i & 0xFF)

    def obey(self, data: bytes) -> None:
        for f in self.decoder.feed(data):
            if isinstance(f.message, p.Start):
                self.stamping = True
            elif isinstance(f.message, p.Stop | p.Estop):
                self.stamping = False


def main() -> None:
    ctl, _host, zone_id = _controller()
    zone = load_zone_map().by_id(zone_id)
    xs = [pt[0] for pt in zone.outline_mm]
    ys = [pt[1] for pt in zone.outline_mm]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    frames = _frames(zone_id, cx - 20.0, cy - 20.0)
    pen = _Pen()
    now = 1000
    ctl.receive_data(pen.frame(0, frames[0], zone_id), now)
    pen.obey(ctl.command(Command.START, now).data)
    times: list[float] = []
    stroke: list[float] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i, values in enumerate(frames[1:], start=1):
            now += PERIOD_US
            frame = pen.frame(i, values, zone_id)
            t0 = clock()
            out = ctl.receive_data(frame, now)
            dt = (clock() - t0) / 1000.0
            pen.obey(out.data)
            times.append(dt)
            if i % 5 == 0:
                stroke.append(dt)
    finally:
        gc.enable()
    assert ctl.state is State.STAMPING, ctl.state
    cov = ctl.coverage
    assert cov is not None and cov.strokes(zone_id) > 0

    def line(name: str, xs: list[float]) -> str:
        q = statistics.quantiles(xs, n=100)
        return f"{name:<28} median {statistics.median(xs):6.2f} µs   p99 {q[98]:6.2f} µs"

    print(f"controller step, {len(times)} TELEMETRY frames, position tracked (cell 0.5 mm)")
    print(line("every step", times))
    print(line("steps with a new stroke", stroke))
    verdict = "met" if statistics.median(times) <= GOAL_US else "NOT met"
    print(f"goal: median <= {GOAL_US} µs per step: {verdict}")
    verdict = "met" if statistics.median(stroke) <= STROKE_GOAL_US else "NOT met"
    print(f"goal: median <= {STROKE_GOAL_US} µs per step with a new stroke: {verdict}")


if __name__ == "__main__":
    main()
