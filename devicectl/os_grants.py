"""What the pen process asks of the OS, and the words for what it was granted.

Never required: anything refused or not offered is said, and the session runs
without it. Asked by devicectl/penloop.py: a core of its own (three cores or
more), nice for every thread, the GIL's switch interval and a frozen heap before
its threads start (ask_os); once the loop's thread exists, a short time slice for
it (ask_short_slice) and, only when switched on, real-time scheduling for it
(ask_real_time). The session log states all of it (the PEN_PROCESS event).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import platform
import sys
from typing import Any, Final

#: The GIL switch interval in the pen process: the loop takes the GIL back from the
#: writer, the publisher and the door within 0.5 ms (docs/performance.md).
SWITCH_INTERVAL_S: Final = 0.0005
#: The pen process takes a core of its own only on a machine with at least this many.
MIN_CORES_TO_PIN: Final = 3
#: The nice value asked for (lower is more CPU); refused without the privilege.
NICE_ASKED: Final = -10
#: The loop thread's real-time priority (SCHED_FIFO, 1-99), asked for on a real port
#: where permitted: above every normal thread, below the kernel's threaded interrupt
#: handlers (50) and its watchdog and migration threads (99). Only the loop's thread:
#: the writer, publisher and door stay normal (nice NICE_ASKED), and the threads the
#: loop starts are normal too (SCHED_RESET_ON_FORK).
RT_PRIORITY: Final = 10
#: "1" in the environment: the loop asks for real-time scheduling. Off by default:
#: measured on the 2-core VM it did not reliably lower the ESTOP p99, and the only
#: sessions that lost their link in the comparison had it on (docs/performance.md,
#: "Round 8"); to be measured on the technician's machine before it is the default.
RT_ENV: Final = "DEVICECTL_PEN_REALTIME"
#: The kernel's real-time throttle: the share of each period real-time threads may
#: take (-1: unlimited; then the loop does not ask, as a loop that spun would own a core).
RT_RUNTIME_PATH: Final = "/proc/sys/kernel/sched_rt_runtime_us"
RT_PERIOD_PATH: Final = "/proc/sys/kernel/sched_rt_period_us"


#: The loop thread's time slice asked of the kernel, in µs: the shortest it grants.
#: Linux's scheduler (EEVDF, 6.12 and later) lets a woken thread with a shorter slice
#: preempt the one running, so the loop, woken by the pen's bytes on a busy core, runs
#: at once instead of after the running thread's slice (1.4 ms by default on 2 cores).
#: Not a priority: the loop's share of the CPU is what it was (docs/performance.md,
#: "Round 9"). Any user may ask it for their own threads.
SLICE_US: Final = 100
#: sched_setattr and sched_getattr, by machine (Linux's syscall table).
_SCHED_ATTR_CALLS: Final = {"x86_64": (314, 315), "aarch64": (274, 275), "arm64": (274, 275)}


class _SchedAttr(ctypes.Structure):
    """struct sched_attr, its first version (48 bytes): what sched_setattr reads."""

    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64)]


def thread_slice_ns(tid: int) -> int | None:
    """The time slice the kernel keeps for thread `tid` (sched_getattr's sched_runtime,
    ns; 0 where the kernel keeps none for normal threads), or None where it cannot be read."""
    calls = _SCHED_ATTR_CALLS.get(platform.machine())
    if calls is None or not sys.platform.startswith("linux"):
        return None
    attr = _SchedAttr()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if libc.syscall(calls[1], tid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    return int(attr.sched_runtime)


def set_thread_slice(tid: int, slice_us: int) -> str | None:
    """Ask for a time slice of `slice_us` µs for the normal (SCHED_OTHER) thread `tid`,
    keeping its nice; 0 gives the kernel's default back. None when the kernel now keeps
    that slice, else why not, in words."""
    calls = _SCHED_ATTR_CALLS.get(platform.machine())
    if calls is None or not sys.platform.startswith("linux"):
        return "not offered by this OS"
    try:  # never required: a thread that ended, a C library not found, is words
        attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=os.SCHED_OTHER,
                          sched_nice=os.getpriority(os.PRIO_PROCESS, tid),
                          sched_runtime=slice_us * 1000)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(calls[0], tid, ctypes.byref(attr), 0) != 0:
            return f"refused: {os.strerror(ctypes.get_errno())}"
    except OSError as exc:
        return f"refused: {exc.strerror or exc}"
    got = thread_slice_ns(tid)
    if slice_us and got != slice_us * 1000:  # an older kernel takes it and keeps none
        return "not offered by this kernel (Linux 6.12 or later)"
    return None


def ask_short_slice(tid: int | None, real_time: bool, data: dict[str, Any]) -> str:
    """A SLICE_US time slice for the loop's thread `tid`, on a real-time link whose loop
    is not real-time already; never required. The words, and into `data`: slice_us (the
    slice granted, or None) and slice_refused (why not)."""
    why: str | None
    if tid is None:
        why = "not asked: no loop thread"
    elif not real_time:
        why = "not asked: virtual time, nothing waits for the loop to wake"
    elif data.get("realtime"):
        why = "not asked: the loop is real-time"
    else:
        why = set_thread_slice(tid, SLICE_US)
    data["slice_us"] = SLICE_US if why is None else None
    data["slice_refused"] = why
    if why is None:
        return f"loop thread's time slice {SLICE_US} µs (it wakes ahead of a busy core's thread)"
    return f"loop thread's time slice the kernel's default ({why})"


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def ask_os() -> tuple[str, dict[str, Any]]:
    """A core of its own (three cores or more), a higher priority where permitted (every
    thread's nice), and the frozen heap: what was granted, in words and as data. Never
    required: anything refused is said, and the session runs without it. Called before
    the threads start (they inherit core and nice); the loop's time slice and real-time
    scheduling come once its thread exists (ask_short_slice, ask_real_time).

    `data["views_cores"]`: the cores the CLI's views keep to (run_pen.share_cores), all
    but the one the pen process is pinned to; None where it is not pinned. (On two
    cores, keeping the views off the last one, the pen process not pinned, was measured
    and not kept: the kernel's pty worker was held by the views no less, and the views
    waited for each other more: docs/performance.md, "Round 9".)"""
    said: list[str] = []
    data: dict[str, Any] = {"pid": os.getpid(), "views_cores": None}
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    # Pinned only with cores to spare: on two, every other process (a simulator, a
    # second session) would be pushed onto the one left, and parallel sessions all
    # pinned to the same last core (the suite on two cores showed pens latching
    # WATCHDOG). There the scheduler places it.
    if len(cpus) > MIN_CORES_TO_PIN - 1:
        core = cpus[-1]
        try:
            for tid in _threads():  # Linux: affinity is per thread
                os.sched_setaffinity(tid, {core})
            said.append(f"core {core} to itself (of {len(cpus)})")
            data["core"] = core
            data["views_cores"] = cpus[:-1]
        except OSError as exc:
            said.append(f"no core of its own ({exc.strerror})")
    else:
        said.append(f"{len(cpus)} core(s): shared, none pinned")
    try:
        for tid in _threads():  # Linux: nice is per thread too
            os.setpriority(os.PRIO_PROCESS, tid, NICE_ASKED)
        said.append(f"priority raised (nice {NICE_ASKED})")
        data["nice"] = NICE_ASKED
    except OSError:
        said.append("priority not raised (not permitted)")
        data["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()
    data["frozen_objects"] = gc.get_freeze_count()
    said.append(f"heap frozen ({data['frozen_objects']} objects)")
    return f"pen process {os.getpid()}: " + ", ".join(said), data


def ask_real_time(tid: int | None, real_time: bool, data: dict[str, Any]) -> str:
    """SCHED_FIFO at RT_PRIORITY for the loop's thread `tid` alone, on a real-time link,
    when RT_ENV is "1", where permitted and the kernel throttles real-time threads;
    never required. The words, and into `data`: loop_tid, realtime (granted, or None),
    realtime_refused (why not), realtime_threads (the threads of the process under FIFO
    or RR, after: the loop's alone, unless the process was started real-time)."""
    data["loop_tid"] = tid
    why = _no_real_time(real_time, data) if tid is not None else "not asked: no loop thread"
    if why is None and tid is not None:
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                                  os.sched_param(RT_PRIORITY))
        except OSError as exc:
            why = _refusal(exc)
    data["realtime_threads"] = others = _real_time_threads()
    others = [t for t in others if t != tid]
    if why is None:
        data["realtime"] = f"SCHED_FIFO {RT_PRIORITY}"
        data["realtime_refused"] = None
        return (f"loop thread real-time (SCHED_FIFO {RT_PRIORITY}, "
                + (f"threads {others} real-time too, as started" if others else
                   "the other threads normal")
                + f"; the kernel's throttle: {data['rt_runtime_us']} µs of every "
                f"{data['rt_period_us']} µs)")
    data["realtime"] = None
    data["realtime_refused"] = why
    return f"loop thread not real-time ({why})"


def _no_real_time(real_time: bool, data: dict[str, Any]) -> str | None:
    """Why the loop does not ask for real-time scheduling (None: it asks); the
    kernel's throttle into `data` (rt_runtime_us, rt_period_us)."""
    if not real_time:
        return "not asked: virtual time, the simulator's clock waits for the loop"
    if os.environ.get(RT_ENV) != "1":
        return f"not asked: off unless {RT_ENV}=1"
    if not hasattr(os, "SCHED_RESET_ON_FORK"):
        return "not asked: not offered by this OS"
    try:
        with open(RT_RUNTIME_PATH, encoding="ascii") as f:
            runtime = data["rt_runtime_us"] = int(f.read())
        with open(RT_PERIOD_PATH, encoding="ascii") as f:
            data["rt_period_us"] = int(f.read())
    except (OSError, ValueError):
        return f"not asked: {RT_RUNTIME_PATH} unreadable (the kernel's throttle unknown)"
    if runtime < 0:  # no throttle: a loop that spun would keep the core from the rest
        return "not asked: the kernel does not throttle real-time threads (runtime -1)"
    return None


def _refusal(exc: OSError) -> str:
    """Why the kernel refused, in words: a missing privilege (RLIMIT_RTPRIO, no
    CAP_SYS_NICE) or a control group without a real-time budget both give EPERM."""
    if exc.errno != errno.EPERM:
        return f"refused: {exc.strerror}"
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    return (f"not permitted: RLIMIT_RTPRIO {soft}, uid {os.geteuid()} (or a control "
            "group with no real-time budget)")


def _real_time_threads() -> list[int]:
    """The threads of this process under SCHED_FIFO or SCHED_RR."""
    out: list[int] = []
    if not hasattr(os, "sched_getscheduler"):
        return out
    flag = getattr(os, "SCHED_RESET_ON_FORK", 0)
    for tid in _threads():
        with contextlib.suppress(OSError):  # a thread that has just ended
            policy = os.sched_getscheduler(tid) & ~flag
            if policy in (os.SCHED_FIFO, os.SCHED_RR):
                out.append(tid)
    return sorted(out)
