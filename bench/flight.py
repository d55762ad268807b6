"""Flight recorder benchmark: what the ring costs the inner loop.

Per frame: `FlightRecorder.record` with what a 1 kHz loop reads in one step at
500 Hz telemetry (one TELEMETRY, sometimes an ACK) and what it writes (a
HEARTBEAT every 20 ms); per trigger: the ring's copy on the loop (`snapshot`),
and the writer thread's work (`frames` then `pack`) for a full ring. Run:
`make bench`.
"""

from __future__ import annotations

import platform
import sys
import time

from devicectl.flight import RX, SLOTS, TX, FlightRecorder, pack
from devicectl.protocol import Heartbeat, Telemetry, encode

N_STEPS = 200_000
REPEATS = 5


def telemetry(i: int) -> bytes:
    return encode(Telemetry(t_us=i * 2000, state=3, fault_flags=0, depth_cmd_um=800,
                            depth_meas_um=780 + i % 40, rate_meas_dhz=1000, stamp_count=i // 3,
                            x_dmm=0, y_dmm=0, contact=1, zone_id=2, battery_mv=3900), i & 0xFF)


def per_frame_us() -> float:
    reads = [telemetry(i) for i in range(256)]
    heartbeat = encode(Heartbeat(host_ms=1), 7)
    best = float("inf")
    for _ in range(REPEATS):
        ring = FlightRecorder()
        frames = 0
        t0 = time.perf_counter()
        for i in range(N_STEPS):
            ring.record(reads[i & 0xFF], RX, i)
            frames += 1
            if i % 20 == 0:
                ring.record(heartbeat, TX, i)
                frames += 1
        best = min(best, (time.perf_counter() - t0) / frames * 1e6)
    return best


def trigger_costs_ms() -> tuple[float, float]:
    ring = FlightRecorder()
    for i in range(SLOTS):
        ring.record(telemetry(i), RX, i * 1000)
    copies = []
    for _ in range(50):
        t0 = time.perf_counter()
        snap = ring.snapshot(SLOTS * 1000)
        copies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    pack(snap.frames(), 0)
    return min(copies) * 1e3, (time.perf_counter() - t0) * 1e3


def main() -> int:
    frame_us = per_frame_us()
    copy_ms, pack_ms = trigger_costs_ms()
    print(f"flight recorder on {platform.python_implementation()} {sys.version.split()[0]}, "
          f"{platform.machine()}: {SLOTS} slots")
    print(f"  record: {frame_us:.2f} µs a frame (≈ {frame_us * 550 / 1e3:.2f} ms of loop time "
          "a second at 500 Hz telemetry and 50 Hz heartbeats)")
    print(f"  at a trigger, on the loop (after the ESTOP is written): snapshot {copy_ms:.3f} ms")
    print(f"  at a trigger, on the writer's thread: frames + pack {pack_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
