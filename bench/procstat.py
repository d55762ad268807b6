"""A process's threads as /proc counts them: the benches' one reading of it."""

from __future__ import annotations

import os


def threads(pid: int | str = "self") -> dict[int, tuple[float, int]]:
    """Per thread of process `pid` ("self": this one): CPU seconds (utime + stime) and
    voluntary context switches (its wake-ups: each is a wait that ended)."""
    out: dict[int, tuple[float, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                vol = next(int(line.split()[1]) for line in f
                           if line.startswith("voluntary_ctxt_switches"))
        except (OSError, StopIteration):
            continue  # a thread that ended
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), vol)
    return out
