"""Columnar decode of a large capture against the per-frame decoder, same run.

A raw capture of what a pen sends: TELEMETRY with changing fields (as
bench/codec.py builds them) with an EVENT and an ACK every 100 frames and a
damaged frame every 1000. Three ways to the same JSON objects:

- per-frame decoder, frames only: `Decoder.feed` in 4 KiB reads (Frame objects,
  no dicts: the decoder's own cost, what bench/codec.py measures);
- per-frame to JSON objects: `decode_events` + `event_to_dict`, what
  `wire decode` and `sessions frames` did before devicectl/columnar.py;
- columnar, decode only: `columnar.decode_stream(capture)` (values in columns);
- columnar to JSON objects (`.events`) and to JSON lines (`.lines()`, what
  `wire decode --from FILE` prints), against `json.dumps` per frame object.

And pymavlink's ATTITUDE `parse_buffer` per frame (bench/codec.py) in the same
run for the issue's "≥ 100× pymavlink" ratio. Best of 5 rounds, the ways
taking turns within each round.
Run: `.venv/bin/python bench/columnar.py [FRAMES]` (default 200,000).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

# appended, not inserted: PYTHONPATH=build/compiled (make bench) must come first
sys.path.append(str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec  # bench/codec.py: the telemetry stream and the pymavlink reference

from devicectl.columnar import decode_stream
from devicectl.commands.link_cmd import decode_events, event_to_dict
from devicectl.protocol import Ack, Decoder, Event, encode

REPEATS = 5
GOAL_PER_FRAME = 20.0  # columnar vs the per-frame decoder, per frame (issue 17 item 3)
GOAL_PYMAVLINK = 100.0  # columnar vs pymavlink, per frame (issue 17 item 4)


def capture(n_frames: int) -> bytes:
    codec.N_FRAMES = n_frames
    telemetry = codec.telemetry_stream()
    out = []
    for i, m in enumerate(telemetry):
        wire = encode(m, i & 0xFF)
        if i % 1000 == 999:
            wire = wire[:5] + bytes([wire[5] ^ 0x10]) + wire[6:]  # a flipped bit: CRC discard
        out.append(wire)
        if i % 100 == 50:
            out.append(encode(Event(event=2, t_us=i * 2000), (i + 1) & 0xFF))
            out.append(encode(Ack(acked_seq=i & 0xFF, acked_type=0x04, status=0), 0))
    return b"".join(out)


def interleaved(runs: dict[str, Callable[[], int]]) -> dict[str, tuple[float, int]]:
    """Best time of each over REPEATS rounds, the runs taking turns within a round.

    On a loaded shared machine the load drifts: taking turns gives every run
    the same chances of a quiet moment."""
    best = dict.fromkeys(runs, (float("inf"), 0))
    for _ in range(REPEATS):
        for label, run in runs.items():
            start = time.perf_counter()
            count = run()
            seconds = time.perf_counter() - start
            best[label] = (min(best[label][0], seconds), count)
    return best


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    data = capture(n)
    reads = [data[i : i + codec.READ_BYTES] for i in range(0, len(data), codec.READ_BYTES)]
    print(f"columnar decode: {n} TELEMETRY + EVENT/ACK + damaged, {len(data):,} B; best of "
          f"{REPEATS}; python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}")

    def frames_only() -> int:
        decoder = Decoder()
        return sum(len(decoder.feed(r)) for r in reads) + decoder.bad_frames

    def per_frame_json() -> int:
        return len([event_to_dict(e) for e in decode_events(Decoder(), data)])

    def per_frame_lines() -> int:
        return len([json.dumps(event_to_dict(e)) for e in decode_events(Decoder(), data)])

    def columnar() -> int:
        return decode_stream(data).count

    def columnar_json() -> int:
        return len(decode_stream(data).events)

    def columnar_lines() -> int:
        return len(decode_stream(data).lines())

    assert decode_stream(data).events == [event_to_dict(e) for e in decode_events(Decoder(), data)]
    runs = {
        "per-frame decoder (Frame objects)": frames_only,
        "per-frame to JSON objects": per_frame_json,
        "per-frame to JSON lines": per_frame_lines,
        "columnar, decode only (columns)": columnar,
        "columnar to JSON objects": columnar_json,
        "columnar to JSON lines": columnar_lines,
    }
    results = interleaved(runs)
    counts = {c for _, c in results.values()}
    assert len(counts) == 1, counts
    (events,) = counts
    per_us = {k: s / events * 1e6 for k, (s, _) in results.items()}
    for label, us in per_us.items():
        print(f"  {label:<36} {us:7.3f} µs/frame  {1 / us * 1e6:>12,.0f} frames/s")
    col = per_us["columnar, decode only (columns)"]
    ratio = per_us["per-frame decoder (Frame objects)"] / col
    verdict = "met" if ratio >= GOAL_PER_FRAME else "NOT met"
    print(f"  decode: columnar vs per-frame decoder {ratio:.1f}x (goal {GOAL_PER_FRAME:.0f}x: "
          f"{verdict})")
    objects = per_us["per-frame to JSON objects"] / per_us["columnar to JSON objects"]
    lines = per_us["per-frame to JSON lines"] / per_us["columnar to JSON lines"]
    print(f"  to JSON objects: {objects:.1f}x; to JSON lines: {lines:.1f}x")
    codec.N_FRAMES = 20_000
    mav = codec.bench_pymavlink()
    if mav is None:
        print("  pymavlink not installed: `pip install -e '.[bench]'` for the reference")
        return 0
    mav_us = mav[0] / codec.N_FRAMES * 1e6
    verdict = "met" if mav_us / col >= GOAL_PYMAVLINK else "NOT met"
    print(f"  pymavlink ATTITUDE parse_buffer {mav_us:.2f} µs/frame: columnar "
          f"{mav_us / col:.0f}x pymavlink (goal {GOAL_PYMAVLINK:.0f}x: {verdict}), per-frame "
          f"decoder {mav_us / per_us['per-frame decoder (Frame objects)']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
