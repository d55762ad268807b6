"""The fault campaign: every fault kind at every phase where it can happen, in virtual time.

`python -m firmware_sim.campaign` (`make faults`) runs the whole matrix on a
pool of processes and writes the table to docs/fault-matrix.md; `--reduced`
runs one phase per kind and every phase of a few kinds (what `make test` runs).
A cell is unsafe when the pen was still stamping when the host had gone, or
stamped past the spec's bound after its first misbehaving frame. It exits 1
when any cell is unsafe, lost records, or crashed a view.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Final

from firmware_sim.campaign_cell import (
    BOUND_US,
    PHASES,
    RECORDS_FAIL,
    STROKES,
    CellResult,
    run_cell,
)
from firmware_sim.faults import load_scenarios
from firmware_sim.misbehave import load_misbehaviours

DOC: Final = Path(__file__).resolve().parent.parent / "docs" / "fault-matrix.md"
#: Faults that exist from power-on, or show only in the first DEVICE_INFO.
AT_CONNECT: Final = frozenset({"used-cartridge", "no-cartridge", "no-position", "wrong-protocol"})
#: Faults that show only after a reconnect: not in the first handshake.
AFTER_CONNECT: Final = frozenset({"another-serial", "another-cartridge"})
#: Kinds the reduced matrix runs at every phase; the others at "stamping" only.
EVERY_PHASE_IN_REDUCED: Final = ("ignores-stop", "lying-target", "disconnect")


def kinds() -> list[str]:
    """Every fault kind: the simulator's scenarios, the misbehaving pens, failing records."""
    return [*load_scenarios(), *load_misbehaviours(), RECORDS_FAIL]


def phases_of(kind: str) -> list[str]:
    if kind in AT_CONNECT:
        return ["handshake"]
    if kind in AFTER_CONNECT:
        return [ph for ph in PHASES if ph != "handshake"]
    return list(PHASES)


def matrix(*, reduced: bool = False) -> list[tuple[str, str]]:
    cells: list[tuple[str, str]] = []
    for kind in kinds():
        phases = phases_of(kind)
        if reduced and kind not in EVERY_PHASE_IN_REDUCED:
            phases = [ph for ph in phases if ph == "stamping"] or phases[:1]
        cells.extend((kind, ph) for ph in phases)
    return cells


def _run(cell: tuple[str, str]) -> CellResult:
    return run_cell(*cell)


def run_matrix(cells: Sequence[tuple[str, str]], *, jobs: int = 2) -> list[CellResult]:
    """Every cell, in the order given; on `jobs` processes (1: in this one)."""
    if jobs <= 1:
        return [run_cell(*c) for c in cells]
    # spawn: a forked child of a process with threads (a test run) can hang on a lock
    # Failing-records cells run in real time (the writer's clock): they go first.
    order = sorted(range(len(cells)), key=lambda i: cells[i][0] != RECORDS_FAIL)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(_run, [cells[i] for i in order]))
    out: list[CellResult | None] = [None] * len(cells)
    for i, r in zip(order, done, strict=True):
        out[i] = r
    return [r for r in out if r is not None]


#: Fault kinds no host software can make safe, and why. The cell still shows UNSAFE;
#: it fails `make faults` unless the host did all a host can (`host_did_all_it_could`).
BEYOND_SOFTWARE: Final = {
    "ignores-every-stop": (
        "a pen that ignores both ESTOP and STOP stamps on while anything feeds its "
        "watchdog, and spec 1.1 H3 has the host resend ESTOP every 30 ms (each resend "
        "feeds it). The host ESTOPs at once, sends STOP behind every ESTOP after the "
        "first, ends in FAULT telling the technician to switch the pen off, and falls "
        "silent after ten of them (300 ms); the pen's own watchdog then stops it. "
        "Stopping it sooner would need a spec revision. (A pen that ignores only ESTOP "
        "obeys the STOP: ignores-estop is safe.)"
    ),
}


def host_did_all_it_could(r: CellResult) -> bool:
    """A cell beyond software where the host ESTOPped, ended in FAULT, kept every record,
    and the pen's watchdog stopped the pen once the host was silent."""
    return (r.kind in BEYOND_SOFTWARE and bool(r.estops) and r.outcome == "fault"
            and r.exit_code == 3 and r.complete and r.crash is None and r.stopped_after_host)


def failures(results: Iterable[CellResult]) -> list[str]:
    """One sentence per failed cell: unsafe, records lost, or a crash."""
    out = []
    for r in results:
        why = []
        if not r.pen_stopped:
            why.append("the pen was stamping when the host had gone")
        if not r.safe and r.pen_stopped:
            why.append(f"the pen stamped {_ms(r.stamped_after_us)} after its first bad frame "
                       f"(bound {_ms(r.bound_us)})")
        if r.recorded < r.sent:
            why.append(f"{r.sent - r.recorded} of {r.sent} commands sent are not in the records")
        if r.flight is not None and r.flight[1] < r.flight[0]:
            why.append(f"{r.flight[0] - r.flight[1]} of {r.flight[0]} frames sent are not in "
                       "the flight recording")
        if r.crash:
            why.append(f"crash: {r.crash}")
        if why:
            out.append(f"{r.kind} at {r.phase}: " + "; ".join(why))
    return out


def spec_findings(results: Iterable[CellResult]) -> list[str]:
    """Cells where the host did not do what the spec wants, though the pen ended safe."""
    return [
        f"{r.kind} at {r.phase}: the spec wants {r.expect}; the host: {r.outcome}, "
        f"ESTOP {_reasons(r.estops) if r.estops else 'none'}"
        for r in results
        if r.spec_met is False and r.safe
    ]


def _ms(us: int | None) -> str:
    return "—" if us is None else f"{us / 1000:.0f} ms"


def table(results: Sequence[CellResult], seconds: float) -> str:
    unsafe = [r for r in results if not r.safe]
    lost = [r for r in results if not r.complete]
    crashed = [r for r in results if r.crash]
    lines = [
        "# Fault matrix",
        "",
        "Written by `make faults` (`python -m firmware_sim.campaign`); do not edit by hand.",
        "Each cell is a whole virtual session: devicectl's Session and Controller, the",
        "records on a real SQLite file, the plain view, and the simulated pen with one",
        f"fault kind put at one phase ({len(results)} cells, {len({r.kind for r in results})} "
        f"kinds, {seconds:.0f} s on {_jobs_text()}).",
        "",
        "Phases, each a condition of the session, never a clock: handshake (the first HELLO),",
        "ready (the pen holds a target; the technician waits 50 ms), stamping "
        f"({STROKES} strokes in),",
        f"paused (the technician's PAUSE after {STROKES} strokes), zone change (the second "
        "SET_TARGET),",
        "clearing a fault (the technician's CLEAR_FAULT after a jam), stopping (the technician "
        f"ends the session after {STROKES} strokes).",
        "",
        "- **stopped**: the pen, seen from its own side, was not stamping when the host had gone.",
        "- **time to safe**: how long the pen went on stamping after the first frame that showed",
        f"  the fault (bound: 2 telemetry periods + 20 ms = {BOUND_US // 1000} ms, plus the pen's",
        "  watchdog where only it can act, plus the writer's commit interval for failing records);",
        "  — when no stop is owed. Virtual time, seen from the pen.",
        "- **done**: the host did what spec revision 1.1 wants (ESTOP reason, refusal), where the",
        "  cell shows it; not part of the verdict (see 'Safe, but not as the spec says').",
        "- **records**: commands the host sent that are in the records / all it sent; where the",
        "  session kept a flight recording (an ESTOP, a pen fault, an end in fault or lost link),",
        "  the frames the host sent in its window that it holds / all it sent then.",
        "- **ESTOP**: the reasons of the ESTOPs the host sent.",
        "",
        f"**{len(results) - len(unsafe)} safe, {len(unsafe)} unsafe; {len(lost)} with records "
        f"lost; {len(crashed)} crashed.**",
        "",
        "| fault | phase | verdict | stopped | time to safe (bound) | outcome (exit) "
        "| records | ESTOP | the spec wants | done |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        verdict = "safe" if r.safe else "**UNSAFE**"
        if r.crash:
            verdict += " · **crash**"
        after = "—" if r.bound_us is None else f"{_ms(r.stamped_after_us)} ({_ms(r.bound_us)})"
        records = f"{r.recorded}/{r.sent}"
        if r.flight is not None:
            records += f" · flight {r.flight[1]}/{r.flight[0]}"
        records += "" if r.complete else " **lost**"
        lines.append(
            f"| {r.kind} | {r.phase} | {verdict} | {'yes' if r.pen_stopped else '**no**'} "
            f"| {after} | {r.outcome} ({r.exit_code}) | {records} "
            f"| {_reasons(r.estops)} | {r.expect} "
            f"| {_DONE[r.spec_met]} |"
        )
    fails = failures(results)
    if fails:
        lines += ["", "## Unsafe, lost or crashed", ""] + [f"- {f}" for f in fails]
    beyond = sorted({r.kind for r in results if host_did_all_it_could(r)})
    if beyond:
        lines += ["", "## Beyond software", ""] + [
            f"- {kind}: {BEYOND_SOFTWARE[kind]}" for kind in beyond]
    unmet = spec_findings(results)
    if unmet:
        lines += ["", "## Safe, but not as the spec says", ""] + [f"- {f}" for f in unmet]
    return "\n".join(lines) + "\n"


def _reasons(estops: Sequence[str]) -> str:
    """The ESTOP reasons in the order first sent, each with its count when repeated."""
    counts: dict[str, int] = {}
    for reason in estops:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in counts.items()) or "—"


_DONE: Final = {True: "yes", False: "**no**", None: "—"}


def _jobs_text() -> str:
    return f"{os.cpu_count() or 1} cores"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim.campaign", description=__doc__)
    parser.add_argument("--reduced", action="store_true", help="the reduced matrix of make test")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=DOC, help=f"the table (default {DOC})")
    parser.add_argument("--kind", action="append", help="only these fault kinds")
    args = parser.parse_args(argv)
    cells = matrix(reduced=args.reduced)
    if args.kind:
        unknown = set(args.kind) - set(kinds())
        if unknown:
            print(f"campaign: unknown fault kind(s) {', '.join(sorted(unknown))}; "
                  f"known: {', '.join(kinds())}", file=sys.stderr)
            return 2
        cells = [c for c in cells if c[0] in args.kind]
    t0 = time.monotonic()
    results = run_matrix(cells, jobs=args.jobs)
    seconds = time.monotonic() - t0
    args.out.write_text(table(results, seconds), encoding="utf-8")
    fails = failures(r for r in results if not host_did_all_it_could(r))
    for f in fails:
        print(f"campaign: {f}")
    print(f"campaign: {len(results)} cells in {seconds:.1f} s, {len(fails)} failed; "
          f"table in {args.out}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
