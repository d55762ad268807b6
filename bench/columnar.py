"""Columnar decode of a large capture against the per-frame decoder, same run.

A raw capture of what a pen sends: TELEMETRY with changing fields (as
bench/codec.py builds them) with an EVENT and an ACK every 100 frames and a
damaged frame every 1000. Three ways to the same JSON objects:

- per-frame decoder, frames only: `Decoder.feed` in 4 KiB reads (Frame objects,
  no dicts: the decoder's own cost, what bench/codec.py measures);
- per-frame to JSON objects: `decode_events` + `event_to_dict`, what
  `wire decode` and `sessions frames` did before devicectl/columnar.py;
- columnar, decode only: `columnar.decode_stream(capture)` (every frame checked
  and decoded, its packet's bytes in columns);
- columnar, decode and every integer field of every frame as a numpy column
  (`_Table.column`), what reading the values out costs on top;
- columnar to JSON objects (`.events`) and to JSON lines (`.lines()`, what
  `wire decode --from FILE` prints), against `json.dumps` per frame object.

And pymavlink's ATTITUDE `parse_buffer` per frame (bench/codec.py) in the same
run for the issue's "≥ 100× pymavlink" ratio. Best of 5 rounds, the ways
taking turns within each round.

The per-frame decoder is the one of the build under test: with
PYTHONPATH=build/compiled (what `make bench` sets) the compiled protocol module,
else the tree's pure one; the first line says which. `--against REF` also times
devicectl/columnar.py as it was at git REF (loaded from `git show`, beside this
tree's other modules) in the same rounds: a before/after from one run.
Run: `.venv/bin/python bench/columnar.py [FRAMES] [--against REF]` (default 200,000).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# appended, not inserted: PYTHONPATH=build/compiled (make bench) must come first
sys.path.append(str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec  # bench/codec.py: the telemetry stream and the pymavlink reference

import devicectl.protocol
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


def columnar_at(ref: str) -> ModuleType:
    """devicectl/columnar.py as it was at git `ref`, as a module of its own."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "-C", str(root), "show", f"{ref}:devicectl/columnar.py"],
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader(f"columnar_at_{ref}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    exec(compile(source, f"{ref}:devicectl/columnar.py", "exec"), module.__dict__)
    return module


def main() -> int:
    args = sys.argv[1:]
    against = None
    if "--against" in args:
        at = args.index("--against")
        against = args[at + 1]
        del args[at : at + 2]
    n = int(args[0]) if args else 200_000
    data = capture(n)
    reads = [data[i : i + codec.READ_BYTES] for i in range(0, len(data), codec.READ_BYTES)]
    built = devicectl.protocol.__file__ or ""
    build = "compiled (mypyc)" if not built.endswith(".py") else "pure Python"
    print(f"columnar decode: {n} TELEMETRY + EVENT/ACK + damaged, {len(data):,} B; best of "
          f"{REPEATS}; python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}; per-frame decoder: {build} ({built})")

    def frames_only() -> int:
        decoder = Decoder()
        return sum(len(decoder.feed(r)) for r in reads) + decoder.bad_frames

    def per_frame_json() -> int:
        return len([event_to_dict(e) for e in decode_events(Decoder(), data)])

    def per_frame_lines() -> int:
        return len([json.dumps(event_to_dict(e)) for e in decode_events(Decoder(), data)])

    def columnar() -> int:
        return decode_stream(data).count

    def columnar_fields() -> int:
        decoded = decode_stream(data)
        for table in decoded.tables:
            for name in table.layout.dtype.names or ():
                table.column(name)
        return decoded.count

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
        "columnar + every field's column": columnar_fields,
        "columnar to JSON objects": columnar_json,
        "columnar to JSON lines": columnar_lines,
    }
    if against is not None:
        before = columnar_at(against)
        assert before.decode_stream(data).events == decode_stream(data).events
        runs[f"columnar at {against}, decode only"] = lambda: before.decode_stream(data).count
        runs[f"columnar at {against}, to JSON lines"] = lambda: len(
            before.decode_stream(data).lines())
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
    if against is not None:
        decode = per_us[f"columnar at {against}, decode only"] / col
        lines = per_us[f"columnar at {against}, to JSON lines"] / per_us["columnar to JSON lines"]
        print(f"  columnar, this tree against {against}: decode {decode:.2f}x faster, to JSON "
              f"lines {lines:.2f}x")
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
