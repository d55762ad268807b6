"""Benchmark: the CPU one wake-up per frame costs, with no work at all (the pen process's floor).

A child process writes a 33-byte frame to a pseudo-terminal every millisecond
(1 kHz telemetry); this process waits for each with `select` (with a timeout,
as the loop's read does, and without) and reads it, nothing else, and reports
its thread's CPU time per frame. Whatever the loop does per frame comes on top
of this. Run: `.venv/bin/python bench/wakeup.py [SECONDS]`.

`bench/wakeup.py late [SECONDS]` measures the scheduler instead: two processes tick
every millisecond at the same time, as `firmware_sim serve` does (select with a 1 ms
timeout), one at normal priority and one real-time (SCHED_FIFO, as `serve --realtime`);
each reports how late its wake-ups were (p99, p99.9, the worst, and how many were
over 10 ms and over 100 ms, the pen's watchdog) under whatever load the machine has.

`bench/wakeup.py pty [SECONDS]`: the same, over a pseudo-terminal: a writer sends its
clock every millisecond to a reader through a raw pty, both normal, and at the same
time another pair both real-time; each reader reports how long a byte took from the
write to its read (the pty hands bytes over in a kernel worker thread, at normal
priority whatever the reader's).

`bench/wakeup.py slice [SECONDS] [ROUNDS]`: what the pen process's short time slice
(devicectl/os_grants.py) buys: a writer at real-time priority (the simulated pen) sends
its clock every millisecond over a raw pty to a reader thread at normal priority (the
loop), while two busy processes (each 20 ms of work then 30 ms of sleep, at normal
priority: the views) keep the cores busy; the reader's slice the kernel's default and
SLICE_US take turns, SECONDS each, ROUNDS times; each reports the write-to-read delay.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import tty

FRAME = b"x" * 32 + b"\0"


def writer(path: str, seconds: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    due = time.monotonic()
    end = due + seconds
    while due < end:
        due += 0.001
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        os.write(fd, FRAME)
    return 0


def measure(timeout_s: float | None, seconds: float) -> tuple[int, float]:
    """Frames read, and this thread's CPU µs per frame read."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    child = subprocess.Popen([sys.executable, __file__, "writer", os.ttyname(slave),
                              str(seconds + 1.0)])
    try:
        time.sleep(0.5)
        n, c0, t0 = 0, time.thread_time(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            ready, _, _ = select.select((master,), (), (), timeout_s)
            if ready:
                os.read(master, 4096)
                n += 1
        cpu = time.thread_time() - c0
    finally:
        child.wait()
        os.close(master)
        os.close(slave)
    return n, cpu / max(n, 1) * 1e6


def ticker(seconds: float, realtime: bool) -> int:
    """Tick at 1 kHz for `seconds` (select with a 1 ms timeout), and print how late."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from firmware_sim.__main__ import ask_real_time

    got = ask_real_time() if realtime else "normal priority"
    late: list[float] = []
    end = time.monotonic() + seconds
    while (t0 := time.monotonic()) < end:
        select.select((), (), (), 0.001)
        late.append(time.monotonic() - t0 - 0.001)
    late.sort()

    def q(x: float) -> str:
        return f"{late[min(len(late) - 1, int(x * len(late)))] * 1e3:.2f} ms"

    print(f"  {got}: {len(late)} ticks, late p50 {q(0.5)}, p99 {q(0.99)}, p99.9 {q(0.999)}, "
          f"worst {late[-1] * 1e3:.1f} ms; over 10 ms: {sum(x > 0.01 for x in late)}, "
          f"over 100 ms: {sum(x > 0.1 for x in late)}", flush=True)
    return 0


def pty_pair(seconds: float, realtime: bool) -> int:
    """A writer (this process) and a reader (a thread) over a raw pty, 1 kHz."""
    import struct
    import threading

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from firmware_sim.__main__ import ask_real_time

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    got = ask_real_time() if realtime else "normal priority"
    delays: list[int] = []

    def reader() -> None:
        if realtime:
            ask_real_time(10)  # the host loop's priority (penloop.RT_PRIORITY)
        buf = b""
        while True:
            buf += os.read(slave, 4096)
            now = time.monotonic_ns()
            while len(buf) >= 8:
                (sent,) = struct.unpack("<q", buf[:8])
                buf = buf[8:]
                if sent < 0:
                    return
                delays.append(now - sent)

    t = threading.Thread(target=reader)
    t.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        select.select((), (), (), 0.001)
        os.write(master, struct.pack("<q", time.monotonic_ns()))
    os.write(master, struct.pack("<q", -1))
    t.join()
    delays.sort()

    def q(x: float) -> str:
        return f"{delays[min(len(delays) - 1, int(x * len(delays)))] / 1e6:.2f} ms"

    print(f"  pty, writer and reader at {got}: {len(delays)} bytes, write to read p50 "
          f"{q(0.5)}, p99 {q(0.99)}, p99.9 {q(0.999)}, worst {delays[-1] / 1e6:.1f} ms; "
          f"over 1 ms: {sum(x > 1_000_000 for x in delays)}, over 10 ms: "
          f"{sum(x > 10_000_000 for x in delays)}", flush=True)
    return 0


def busy() -> int:
    """A view's stand-in: 20 ms of work, 30 ms of sleep, for ever (killed by its parent)."""
    while True:
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            pass
        time.sleep(0.03)


def clock_writer(path: str) -> int:
    """The simulated pen's stand-in: its clock every ms, real-time where permitted."""
    import struct

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from firmware_sim.__main__ import ask_real_time

    ask_real_time()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    due = time.monotonic()
    while True:
        due += 0.001
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        os.write(fd, struct.pack("<q", time.monotonic_ns()))


def slices(seconds: float, rounds: int) -> int:
    """The reader's delays with its slice the default and SLICE_US, taking turns."""
    import struct
    import threading

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from devicectl.os_grants import SLICE_US, set_thread_slice

    print(f"slice: a pty reader under two busy processes, {seconds:g} s an arm, {rounds} "
          f"rounds (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}, {time.strftime('%H:%M', time.gmtime())} UTC)", flush=True)
    busy_kids = [subprocess.Popen([sys.executable, __file__, "busy"]) for _ in range(2)]
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    writer_kid = subprocess.Popen([sys.executable, __file__, "clock", os.ttyname(slave)])
    results: dict[str, list[list[int]]] = {"default": [], f"{SLICE_US} µs": []}
    try:
        for _ in range(rounds):
            for label, asked in (("default", 0), (f"{SLICE_US} µs", SLICE_US)):
                delays: list[int] = []

                def reader(asked: int = asked, delays: list[int] = delays) -> None:
                    tid = threading.get_native_id()
                    why = set_thread_slice(tid, asked)
                    if why is not None:
                        print(f"  the slice was not granted: {why}", flush=True)
                    while select.select((master,), (), (), 0)[0]:  # what waited meanwhile
                        os.read(master, 65536)
                    buf, end = b"", time.monotonic() + seconds
                    while time.monotonic() < end:
                        if select.select((master,), (), (), 0.01)[0]:
                            now = time.monotonic_ns()
                            buf += os.read(master, 4096)
                            while len(buf) >= 8:
                                delays.append(now - struct.unpack("<q", buf[:8])[0])
                                buf = buf[8:]

                t = threading.Thread(target=reader)
                t.start()
                t.join()
                results[label].append(sorted(delays))
    finally:
        for kid in [*busy_kids, writer_kid]:
            kid.kill()
            kid.wait()
        os.close(master)
        os.close(slave)
    for label, runs in results.items():
        for d in runs:
            def q(x: float, d: list[int] = d) -> str:
                return f"{d[min(len(d) - 1, int(x * len(d)))] / 1e3:.0f}"

            print(f"  reader's slice {label}: {len(d)} reads, delay p50 {q(0.5)} µs, p99 "
                  f"{q(0.99)}, p99.9 {q(0.999)}, worst {d[-1] / 1e3:.0f}", flush=True)
    print(f"  load {os.getloadavg()[0]:.2f} at the end", flush=True)
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "busy":
        return busy()
    if len(sys.argv) > 1 and sys.argv[1] == "clock":
        return clock_writer(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "slice":
        return slices(float(sys.argv[2]) if len(sys.argv) > 2 else 10.0,
                      int(sys.argv[3]) if len(sys.argv) > 3 else 3)
    if len(sys.argv) > 1 and sys.argv[1] == "pair":
        return pty_pair(float(sys.argv[2]), sys.argv[3] == "rt")
    if len(sys.argv) > 1 and sys.argv[1] in ("late", "pty"):
        role = "ticker" if sys.argv[1] == "late" else "pair"
        seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
        print(f"{sys.argv[1]}: normal and real-time at once, {seconds:g} s (Python "
              f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.2f}, {time.strftime('%H:%M', time.gmtime())} UTC)",
              flush=True)
        kids = [subprocess.Popen([sys.executable, __file__, role, str(seconds), mode])
                for mode in ("normal", "rt")]
        for kid in kids:
            kid.wait()
        print(f"  load {os.getloadavg()[0]:.2f} at the end", flush=True)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        return writer(sys.argv[2], float(sys.argv[3]))
    if len(sys.argv) > 1 and sys.argv[1] == "ticker":
        return ticker(float(sys.argv[2]), sys.argv[3] == "rt")
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    print(f"one wake-up per 1 kHz frame over a pty, {seconds:g} s each "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f})")
    for label, timeout in (("select, 1.3 ms timeout", 0.0013), ("select, no timeout", None)) * 2:
        n, us = measure(timeout, seconds)
        print(f"  {label}: {n} frames, {us:.1f} µs CPU each = {us / 10:.1f} % of a core "
              f"at 1 kHz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
