"""Issue 11's done-when: every shipped profile, run with
`devicectl run --sim --speed 0 --yes` over 20 seeds, ends with every zone done and
cells_over_max 0 in every zone (counted on the saved grid by `sessions export`).

    .venv/bin/python bench/profiles_soak.py [--seeds 20] [--jobs 2] [PROFILE ...]

Each run is its own process with its own records file; prints one row per run as
it ends and a table per profile; exit 1 when any run fails the rule. `make soak`
runs it. The figures go in docs/profiles.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
ANSWERS = REPO / "tests" / "data" / "checklist-no.yaml"
DEVICECTL = Path(sys.executable).parent / "devicectl"


def shipped() -> list[Path]:
    """Every treatment profile in profiles/ (not the zone map or the checklist)."""
    return sorted(p for p in PROFILES.glob("*.yaml")
                  if p.name not in ("zones.yaml", "checklist.yaml"))


@dataclass
class Result:
    profile: str
    seed: int
    exit_code: int
    zones_done: int
    zones: int
    over_max: int
    session_s: float
    wall_s: float
    note: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.zones_done == self.zones > 0 and self.over_max == 0


def run_one(profile: Path, seed: int, work: Path) -> Result:
    db = work / f"{profile.stem}-{seed}.db"
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(DEVICECTL), "run", "--sim", "--speed", "0", "--yes", "--no-web", "--quiet",
         "--profile", str(profile), "--patient", f"SOAK-{seed}", "--operator", "soak",
         "--checklist", str(ANSWERS), "--consent", "--ack-adjuncts", "--seed", str(seed),
         "--db", str(db)],
        capture_output=True, text=True, check=False,
    )
    wall = time.monotonic() - t0
    exported = subprocess.run(
        [str(DEVICECTL), "sessions", "export", "1", "--format", "json", "--db", str(db)],
        capture_output=True, text=True, check=False,
    )
    if exported.returncode != 0:
        return Result(profile.stem, seed, proc.returncode, 0, 0, -1, 0.0, wall,
                      (proc.stderr or exported.stderr).strip()[-200:])
    zones = json.loads(exported.stdout)["zones"]
    return Result(
        profile.stem, seed, proc.returncode,
        sum(1 for z in zones if z["done"]), len(zones),
        sum(int(z["cells_over_max"] or 0) for z in zones),
        sum(float(z["seconds"] or 0.0) for z in zones), wall,
        "" if proc.returncode == 0 else proc.stderr.strip()[-200:],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="seeds per profile (default 20)")
    ap.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    ap.add_argument("profiles", nargs="*", type=Path, help="default: every shipped profile")
    args = ap.parse_args(argv)
    profiles = args.profiles or shipped()
    runs = [(p, s) for p in profiles for s in range(args.first_seed, args.first_seed + args.seeds)]
    results: list[Result] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(lambda ps: run_one(ps[0], ps[1], Path(tmp)), runs):
            results.append(r)
            print(f"{r.profile:28} seed {r.seed:3}  exit {r.exit_code}  zones done "
                  f"{r.zones_done}/{r.zones}  over max {r.over_max}  session "
                  f"{r.session_s / 60:5.1f} min  wall {r.wall_s:6.1f} s"
                  + ("" if r.ok else f"  FAILED {r.note}"), flush=True)
    print("\n| profile | runs | all zones done | cells over max | session min (median, max) "
          "| wall s (median) |\n|---|---|---|---|---|---|")
    for p in profiles:
        rs = [r for r in results if r.profile == p.stem]
        ses = [r.session_s / 60 for r in rs]
        print(f"| {p.name} | {len(rs)} | {sum(r.ok for r in rs)}/{len(rs)} | "
              f"{max(r.over_max for r in rs)} | {statistics.median(ses):.1f}, {max(ses):.1f} | "
              f"{statistics.median(r.wall_s for r in rs):.0f} |")
    print(f"\n{len(results)} runs, {time.monotonic() - t0:.0f} s wall, "
          f"{args.jobs} at once")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
