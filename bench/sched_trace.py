"""How late the scheduler ran each task after waking it, from a `perf` trace.

Used by bench/views_load.py's `--trace`: while a configuration's ESTOP trials run,
`perf record -k mono -e sched:sched_wakeup -e sched:sched_switch -a` (root, or
perf_event_paranoid ≤ -1) records every wake-up and switch on the machine; this
module then gives, per role (the simulated pen, the pen process's loop and other
threads, the CLI with the page's server, the terminal view, the page's clients,
the kernel's workers, which carry a pty's bytes across), the delay from each
wake-up to the task running: p50, p99, p99.9, the worst, how many over 500 µs, and
which roles held the CPU just before a late one ran. Thousands of wake-ups a
second: a tail the ESTOP trials' p99 (a few hundred trials) can only sample.

Standalone: `python bench/sched_trace.py SECONDS ROLE=PID[,PID...] ...` records the
machine for SECONDS and reports with those roles (a PID stands for all its threads).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

LATE_US = 500.0
_WAKE = re.compile(r"comm=(.*?) pid=(\d+) prio=\d+ target_cpu=\d+")
_SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*?==> next_comm=(.*?) next_pid=(\d+)")


def available() -> str | None:
    """None if a trace can be recorded here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    if os.geteuid() != 0:
        try:
            paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
        except (OSError, ValueError):
            return "perf_event_paranoid unreadable"
        if paranoid > -1:
            return f"not root and perf_event_paranoid {paranoid} (needs -1)"
    return None


class Recording:
    """`perf record` of the machine's wake-ups and switches, from start() to stop();
    text() then converts it (seconds of work: after the measured processes are done)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sched-trace-"))
        self._data = self.dir / "perf.data"
        self._proc = subprocess.Popen(
            ["perf", "record", "-q", "-k", "mono", "-e", "sched:sched_wakeup", "-e",
             "sched:sched_switch", "-a", "-o", str(self._data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """Ask perf to end (SIGINT: it writes its file); does not wait for it."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)

    def text(self) -> Path:
        """`perf script`'s text of the recording (perf stopped and waited for first)."""
        self.stop()
        self._proc.wait(120)
        text = self.dir / "perf.txt"
        with text.open("w") as out:
            subprocess.run(["perf", "script", "-i", str(self._data), "-F",
                            "tid,time,event,trace"], stdout=out, stderr=subprocess.DEVNULL,
                           check=False)
        self._data.unlink(missing_ok=True)
        return text

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(120)
        shutil.rmtree(self.dir, ignore_errors=True)


def threads_of(pids: Mapping[str, list[int]]) -> dict[int, str]:
    """Each thread id of the given processes, to its role."""
    out: dict[int, str] = {}
    for role, plist in pids.items():
        for pid in plist:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    out[int(tid)] = role
    return out


Found = dict[str, tuple[list[float], collections.Counter[str]]]


def delays(text: Path, roles: Mapping[int, str]) -> Found:
    """Per role, the wake-up delays (µs) and who ran just before each late one."""
    def role(tid: int, comm: str) -> str:
        if tid in roles:
            return roles[tid]
        return "kernel worker" if comm.startswith("kworker") else "other"

    woken: dict[int, float] = {}
    out: Found = {}
    with text.open() as f:
        for line in f:
            parts = line.split(None, 3)
            if len(parts) < 4:
                continue
            t = float(parts[1].rstrip(":"))
            if "sched_wakeup" in parts[2]:
                m = _WAKE.search(parts[3])
                if m:
                    woken.setdefault(int(m.group(2)), t)
            elif "sched_switch" in parts[2]:
                m = _SWITCH.search(parts[3])
                if not m:
                    continue
                # a task switched out was running: a wake-up it got meanwhile (a futex
                # woken while it ran) has no delay to measure
                woken.pop(int(m.group(2)), None)
                nxt = int(m.group(4))
                t0 = woken.pop(nxt, None)
                if t0 is None:
                    continue
                d = (t - t0) * 1e6
                lst, before = out.setdefault(role(nxt, m.group(3)), ([], collections.Counter()))
                lst.append(d)
                if d > LATE_US:
                    before[role(int(m.group(2)), m.group(1))] += 1
    return out


def report(found: Found) -> list[str]:
    lines = []
    for name, (lst, before) in sorted(found.items(), key=lambda kv: -len(kv[1][0])):
        if name == "other" or len(lst) < 50:
            continue
        lst.sort()
        n = len(lst)

        def q(f: float, lst: list[float] = lst, n: int = n) -> float:
            return lst[min(n - 1, int(f * n))]

        late = sum(x > LATE_US for x in lst)
        held = ", ".join(f"{k} {v}" for k, v in before.most_common(3))
        lines.append(f"    {name}: {n} wake-ups, p50 {q(0.5):.0f} µs, p99 {q(0.99):.0f}, "
                     f"p99.9 {q(0.999):.0f}, worst {lst[-1]:.0f}; {late} over {LATE_US:.0f} µs"
                     + (f" (the CPU held before by: {held})" if held else ""))
    return lines


def main() -> int:
    why = available()
    if why:
        print(f"cannot trace: {why}")
        return 1
    seconds = float(sys.argv[1])
    pids: dict[str, list[int]] = {}
    for arg in sys.argv[2:]:
        name, _, plist = arg.partition("=")
        pids[name] = [int(p) for p in plist.split(",")]
    roles = threads_of(pids)
    import time

    rec = Recording()
    try:
        time.sleep(seconds)
        print("\n".join(report(delays(rec.text(), roles))))
    finally:
        rec.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
