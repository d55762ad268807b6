"""Benchmark: what the authenticated link costs (spec 1.1), per frame and in a live session.

1. Per frame (timeit, best of 5): sealing a TELEMETRY (the pen's side) against
   encoding it plain; decoding plus `SecureSession.accept` (the host's side)
   against decoding alone.
2. The host's CPU at 1 kHz telemetry over a pseudo-terminal, the same as
   bench/cpu.py measures, with the pen served `--auth-required` (every frame
   signed both ways) against the same pen without AUTH, in the same run,
   alternated (off, on, off, on) so that the machine's load falls on both.

Run: `.venv/bin/python bench/auth.py` (about a minute).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path

# appended, not inserted: PYTHONPATH=build/compiled (make bench) must come first
sys.path.append(str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import PROFILE, technician

from devicectl.controller import Controller, StartFacts, State
from devicectl.link import open_transport
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.protocol import Decoder, encode_telemetry
from devicectl.session import Policy, Session
from devicectl.signing import HOST, PEN, SecureSession, sim_device_key
from devicectl.zones import load_zone_map

DURATION_S = 8.0
ROUNDS = 2
GOAL_PP = 2.0
VALUES = (123456, 3, 0, 1500, 1498, 1000, 42, 125, -340, 1, 3, 3900)


def per_frame() -> None:
    k_s = bytes(range(32))
    pen, host = SecureSession(k_s, PEN), SecureSession(k_s, HOST)
    n = 20_000

    def best(fn: object) -> float:
        return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6  # type: ignore[arg-type]

    plain_enc = best(lambda: encode_telemetry(9, VALUES))
    signed_enc = best(lambda: pen.seal_telemetry(9, VALUES))
    plain_wire = encode_telemetry(9, VALUES) * 100
    signed_wire = b"".join(pen.seal_telemetry(9, VALUES) for _ in range(100))

    def decode_plain() -> None:
        Decoder().feed(plain_wire)

    def decode_signed() -> None:
        host.rx_counter = 0
        for frame in Decoder().feed(signed_wire):
            host.accept(frame)

    plain_dec = min(timeit.repeat(decode_plain, number=200, repeat=5)) / 200 / 100 * 1e6
    signed_dec = min(timeit.repeat(decode_signed, number=200, repeat=5)) / 200 / 100 * 1e6
    print("per TELEMETRY frame (best of 5):")
    print(f"  pen, encode:          plain {plain_enc:5.2f} µs, signed {signed_enc:5.2f} µs "
          f"(+{signed_enc - plain_enc:.2f} µs, {len(encode_telemetry(9, VALUES))} -> "
          f"{len(pen.seal_telemetry(9, VALUES))} B on the wire)")
    print(f"  host, decode+verify:  plain {plain_dec:5.2f} µs, signed {signed_dec:5.2f} µs "
          f"(+{signed_dec - plain_dec:.2f} µs)")


def build_session(port: str, auth: bool) -> Session:
    zone_map = load_zone_map()
    loaded = load_profile(PROFILE)
    controller = Controller(
        lambda dev: make_plan(loaded, dev, zone_map),
        zone_map,
        StartFacts("BENCH", frozenset()),
        nonce=random.getrandbits(32),
        now_us=time.monotonic_ns() // 1000,
        keys=sim_device_key if auth else None,
        telemetry_hz=1000,
    )
    return Session(controller, wire=open_transport(port), writer=None,
                   policy=Policy(auto_confirm=True, end_on_fault=False))


def measure(auth: bool) -> tuple[float, int, str]:
    args = ["--auth-required"] if auth else []
    pen = subprocess.Popen([sys.executable, "-m", "firmware_sim", "serve", "--seed", "5", *args],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert pen.stdout is not None
        port = pen.stdout.readline().split()[1]
        session = build_session(port, auth)
        stop = threading.Event()
        session.start()
        threading.Thread(target=technician, args=(session, stop, 0.1), daemon=True).start()
        threading.Thread(target=lambda: [session.drain_events() for _ in iter(
            lambda: stop.wait(0.1), True)], daemon=True).start()
        t_end = time.monotonic() + 5.0
        while session.controller.state is not State.STAMPING and time.monotonic() < t_end:
            time.sleep(0.01)
        frames0 = session.controller._decoder.frames
        t0 = os.times()
        time.sleep(DURATION_S)
        t1 = os.times()
        frames = session.controller._decoder.frames - frames0
        state = session.controller.state.name
        dropped = session.controller.link_counters["auth_dropped"]
        stop.set()
        session.request_stop("bench over")
        session.wait(2.0)
    finally:
        pen.terminate()
        pen.wait()
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    if dropped:
        state += f", {dropped} frames dropped"
    return 100 * cpu / (t1.elapsed - t0.elapsed), frames, state


def main() -> int:
    print(f"authenticated link cost (Python {sys.version.split()[0]}, "
          f"load {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus)")
    per_frame()
    print(f"host CPU at 1 kHz over a pty, {DURATION_S:.0f} s each, alternated:")
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS):
        for auth in (False, True):
            pct, frames, state = measure(auth)
            results[auth].append(pct)
            print(f"  AUTH {'on ' if auth else 'off'}: {pct:5.1f} % of one core "
                  f"({frames} frames, {state})")
    off = sum(results[False]) / ROUNDS
    on = sum(results[True]) / ROUNDS
    verdict = "met" if on - off <= GOAL_PP else "NOT met"
    print(f"  mean: off {off:.1f} %, on {on:.1f} %: +{on - off:.1f} percentage points "
          f"(goal ≤ {GOAL_PP:.0f}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
