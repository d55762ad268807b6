"""Benchmark: simulated seconds per wall-clock second of the virtual pen at 1000 Hz telemetry.

Every frame is encoded by the pen and decoded by a scripted host through the
real codec; the host sends a HEARTBEAT every 20 ms. Two ways of stepping: the
host calls `advance` every `step_us` (how virtual sessions ran before the
VirtualWire), or it reads the pen's VirtualWire, each read stepping the clock
to the pen's next frame or the host's next heartbeat (how they run now).
Run: `python bench/sim.py`.
"""

from __future__ import annotations

import time

from devicectl.link import VirtualClock
from devicectl.protocol import Configure, Decoder, Heartbeat, Hello, SetTarget, Start, encode
from firmware_sim.virtual import VirtualPen, VirtualWire

SIM_SECONDS = 60


def run(step_us: int, sim_s: int = SIM_SECONDS, hz: int = 1000) -> tuple[float, int]:
    pen = VirtualPen(seed=1)
    dec = Decoder()
    seq = 0
    for msg in (Hello(1, 1), Configure(hz, 100), SetTarget(1200, 1200, 2), Start()):
        pen.receive_data(encode(msg, seq), 0)
        seq += 1
    frames = 0
    now = 0
    last_hb = 0
    t0 = time.perf_counter()
    while now < sim_s * 1_000_000:
        now += step_us
        frames += len(dec.feed(pen.advance(now)))
        if now - last_hb >= 20_000:
            pen.receive_data(encode(Heartbeat(now // 1000), seq & 0xFF), now)
            seq += 1
            last_hb = now
    wall = time.perf_counter() - t0
    assert pen.firmware.fault_flags == 0, "the bench session faulted"
    return sim_s / wall, frames


def run_wire(sim_s: int = SIM_SECONDS, hz: int = 1000) -> tuple[float, int]:
    """The host reads the VirtualWire: one read per pen frame or heartbeat."""
    clock = VirtualClock(0)
    wire = VirtualWire(VirtualPen(seed=1), clock)
    dec = Decoder()
    seq = 0
    for msg in (Hello(1, 1), Configure(hz, 100), SetTarget(1200, 1200, 2), Start()):
        wire.write(encode(msg, seq))
        seq += 1
    frames = 0
    last_hb = 0
    end_us = sim_s * 1_000_000
    t0 = time.perf_counter()
    while clock.now_us < end_us:
        wait_us = last_hb + 20_000 - clock.now_us
        frames += len(dec.feed(wire.read(4096, wait_us / 1e6)))
        now = clock.now_us
        if now - last_hb >= 20_000:
            wire.write(encode(Heartbeat(now // 1000), seq & 0xFF))
            seq += 1
            last_hb = now
    wall = time.perf_counter() - t0
    assert wire.pen.firmware.fault_flags == 0, "the bench session faulted"  # type: ignore[attr-defined]
    return sim_s / wall, frames


def main() -> None:
    print(f"virtual pen, 1000 Hz telemetry, {SIM_SECONDS} simulated s, every frame coded")
    speed, frames = run_wire()
    print(f"  VirtualWire, next-event reads: {speed:7.0f}x real time ({frames} frames)")
    for step_us in (500, 1000, 5000, 20_000):
        speed, frames = run(step_us)
        print(f"  host step {step_us:>6} µs: {speed:7.0f}x real time ({frames} frames)")
    speed, frames = run(20_000, hz=500)
    print(f"  (500 Hz telemetry, host step 20000 µs: {speed:.0f}x real time, {frames} frames)")


if __name__ == "__main__":
    main()
