"""Pure Python against the mypyc-compiled core (`make compiled`), in one run.

Runs bench/controller.py, sim.py, codec.py and session.py twice each,
alternately: with the pure-Python package, then with PYTHONPATH=build/compiled,
so both see the same machine load. Prints each run's output and which modules
were compiled. Run: `make bench-compiled` (builds first), or
`.venv/bin/python bench/compiled.py [SCRIPT ...]` after `make compiled`
(e.g. `controller.py sim.py` for the quick ones only).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ROOT / "build" / "compiled"


def run(script: str, args: list[str], compiled: bool) -> str:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if compiled:
        env["PYTHONPATH"] = str(COMPILED)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout


def main() -> int:
    built = sorted(p.relative_to(COMPILED).as_posix() for p in COMPILED.glob("*/*.so"))
    if not built:
        print("nothing compiled in build/compiled: run `make compiled` first")
        return 1
    print(f"compiled: {', '.join(built)}; load {os.getloadavg()[0]:.1f}")
    scripts = sys.argv[1:] or ["controller.py", "sim.py", "codec.py", "session.py"]
    for script in scripts:
        for compiled in (False, True):
            load = os.getloadavg()[0]
            print(f"--- {script} ({'compiled' if compiled else 'pure Python'}, load {load:.2f})")
            print(run(script, [], compiled).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
