"""The pen process's own code: it opens the link, owns the controller, runs the Session.

Started by devicectl/penproc.py with picklable settings. It opens the port
(or builds the simulated pen) itself, then, once told to begin, builds the
controller, the records' writer and the Session, asks the OS for what helps
(a core of its own, a higher priority where permitted, real-time scheduling for
the loop's thread alone on a real port if asked to, a frozen heap) and records
what it was granted. Its main thread is the door (commands in), a publisher
thread sends the latest snapshot and the events out at 20 Hz: a reader that
stalls blocks only the publisher, never the loop. Imports
neither pydantic nor YAML (tests/test_layers.py checks).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import pickle
import select
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, Final

from devicectl.claim import CartridgeClaim
from devicectl.clock import monotonic_us
from devicectl.controller import Controller
from devicectl.errors import DevicectlError, RefusedError
from devicectl.link import Transport, VirtualClock, open_transport
from devicectl.penproc import EndReport, LinkSettings, SessionSettings, user_error
from devicectl.record_writer import RecordWriter
from devicectl.records import EventRecord
from devicectl.session import (
    MAX_WAIT_US,
    VIRTUAL_MAX_WAIT_US,
    WOKEN_MAX_WAIT_US,
    Policy,
    Session,
)
from devicectl.snapshot import KEPT_FIELDS, Outcome, Snapshot
from devicectl.transitions import RECORDS_FAILED_REASON, Command, State

#: The publisher's period: snapshots at up to 20 Hz.
PUBLISH_PERIOD_S: Final = 0.05
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
#: How long the door waits for a command before it looks at the session's end and the
#: records' backlog again (ms).
DOOR_POLL_MS: Final = 50
#: Records queued and not yet written past which treatment stops: no treatment
#: without a record, and a writer this far behind is not keeping the record.
#: Nothing is dropped: the queue keeps every record until it is written.
RECORDS_BEHIND_ITEMS: Final = 10_000


@dataclass
class Link:
    """The opened link (what `run_cmd._link`'s untyped tuple was): the transport, its
    name, and the session's clock (a virtual one the simulator's wire moves)."""

    wire: Transport
    name: str
    clock: Callable[[], int] = monotonic_us
    max_wait_us: int = MAX_WAIT_US
    #: a pen on the wall clock (a port), not the simulator's virtual time
    real_time: bool = True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.wire.close()


def open_link(settings: LinkSettings) -> Link:
    """The port, or the simulated pen in virtual time; RefusedError naming the port."""
    sim = settings.sim
    if sim is None:
        assert settings.port is not None
        try:
            wire = open_transport(settings.port)
            # a read that a command wakes may wait for the pen longer (session.py)
            woken = getattr(wire, "fd_port", None) is not None
            return Link(wire, settings.name,
                        max_wait_us=WOKEN_MAX_WAIT_US if woken else MAX_WAIT_US)
        except DevicectlError as exc:  # nothing started: a refusal (exit 1), not a lost link
            raise RefusedError(f"{exc}; nothing was started (`devicectl ports` lists the "
                               "ports)") from None
    from firmware_sim.__main__ import with_auth
    from firmware_sim.bootloader import load_slots
    from firmware_sim.virtual import VirtualPen, VirtualWire

    zone_map = sim.zone_map
    if zone_map is None:
        from devicectl.zones import load_zone_map

        zone_map = load_zone_map()
    clock = VirtualClock(monotonic_us())
    pen: Any = VirtualPen(seed=sim.seed, scenario=sim.scenario, zone_map=zone_map,
                          position=sim.position, pen=with_auth(None, False, sim.auth_required),
                          slots=load_slots(sim.sim_state) if sim.sim_state else None)
    if sim.misbehave is not None:
        from firmware_sim.misbehave import MisbehavingPen, get_misbehaviour

        pen = MisbehavingPen(pen, get_misbehaviour(sim.misbehave), seed=sim.seed)
    return Link(VirtualWire(pen, clock, speed=sim.speed), settings.name, clock,
                VIRTUAL_MAX_WAIT_US, real_time=False)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def ask_os() -> tuple[str, dict[str, Any]]:
    """A core of its own (more than one core), a higher priority where permitted (every
    thread's nice), and the frozen heap: what was granted, in words and as data. Never
    required: anything refused is said, and the session runs without it. Called before
    the threads start (they inherit core and nice); the loop's real-time scheduling
    comes once its thread exists (ask_real_time)."""
    said: list[str] = []
    data: dict[str, Any] = {"pid": os.getpid()}
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    # A core of its own only with cores to spare: on two, every other process (the
    # CLI, the views, a simulator, a second session) would be pushed onto the one
    # left, and parallel sessions all pinned to the same last core (the suite on
    # two cores showed pens latching WATCHDOG); there the scheduler places it.
    if len(cpus) > MIN_CORES_TO_PIN - 1:
        core = cpus[-1]
        try:
            for tid in _threads():  # Linux: affinity is per thread
                os.sched_setaffinity(tid, {core})
            said.append(f"core {core} to itself (of {len(cpus)})")
            data["core"] = core
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


class _Publisher:
    """Sends the latest snapshot and the new events and progress, at most PUBLISH_PERIOD_S
    apart, on its own thread: a slow reader blocks this thread, not the loop. A snapshot
    goes without the KEPT_FIELDS that are the objects sent last (named in the message)."""

    def __init__(self, session: Session, pub: Connection) -> None:
        self.session = session
        self.pub = pub
        self._sent: Snapshot | None = None
        self.thread = threading.Thread(target=self._run, name="pen-publisher", daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while not self.session.wait(PUBLISH_PERIOD_S):
                self.publish()
            self.publish()

    def publish(self) -> None:
        session = self.session
        snap: Snapshot | None = session.snapshot
        last = self._sent
        same: tuple[str, ...] = ()
        if snap is last:
            snap = None
        elif snap is not None:
            self._sent = snap
            if last is not None:
                same = tuple(name for name in KEPT_FIELDS
                             if getattr(snap, name) is getattr(last, name))
                if same:
                    snap = replace(snap, **{name: _EMPTY[name] for name in same})
        events, progress = session.drain_events(), session.drain_progress()
        if snap is not None or events or progress:
            # pickle's own dumps, all C: Connection.send's ForkingPickler builds a BytesIO
            # and copies copyreg's dispatch table in Python on every send; `recv` reads
            # either (its loads is pickle's)
            self.pub.send_bytes(pickle.dumps(("tick", snap, same, events, progress),
                                             pickle.HIGHEST_PROTOCOL))


_EMPTY: Final = {name: getattr(Snapshot(), name) for name in KEPT_FIELDS}


def main(cmds: Connection, pub: Connection, link_settings: LinkSettings) -> None:
    """Open the link, wait for the session's settings, run it, report how it ended."""
    try:
        link = open_link(link_settings)
    except BaseException as exc:
        err = exc if isinstance(exc, DevicectlError) else DevicectlError(
            f"cannot start {link_settings.name}: {exc!r}")
        with contextlib.suppress(Exception):
            pub.send(("refused", str(err)))
        return
    try:
        pub.send(("opened", link.name))
        msg = cmds.recv()
    except (EOFError, OSError):
        link.close()
        return
    if msg[0] != "begin":
        link.close()
        return
    _run(msg[1], link, cmds, pub)


def _run(settings: SessionSettings, link: Link, cmds: Connection, pub: Connection) -> None:
    controller = Controller(
        settings.recipe, settings.raster, settings.facts, nonce=settings.nonce,
        now_us=monotonic_us(), coverage_state=settings.coverage_state,
        start_zone_index=settings.start_zone_index, keys=settings.keys,
    )
    controller.prepare()  # the coverage, before HELLO starts the pen's watchdog
    writer = RecordWriter(settings.db_path, settings.session_id)
    session = Session(
        controller, wire=link.wire, writer=writer,
        policy=Policy(auto_confirm=settings.auto_confirm, end_on_fault=settings.end_on_fault),
        clock=link.clock, max_wait_us=link.max_wait_us, started_wall=settings.started_wall,
        claim=CartridgeClaim(settings.db_path, settings.session_id) if settings.claim else None,
    )
    grants, data = ask_os()  # before the threads start: they inherit core and nice
    writer.start()
    session.start()
    # The loop's thread alone real-time, once it exists (its first steps are normal):
    # the writer and this thread (the door, and the publisher it starts) stay normal.
    grants += ", " + ask_real_time(session.loop_thread_id, link.real_time, data)
    writer.events([EventRecord(
        t_us=0, wall=settings.started_wall.isoformat(timespec="milliseconds"),
        kind="PEN_PROCESS", text=grants, zone_id=None, data=data)])
    # "started" goes before the publisher runs: a Connection is not safe for two
    # threads, and a large snapshot is written in two parts that another send could
    # split (the CLI then read a corrupt pickle and reported an internal error).
    with contextlib.suppress(OSError, ValueError):
        pub.send(("started", grants))
    publisher = _Publisher(session, pub)
    publisher.thread.start()
    not_started, orphaned = _door(session, cmds, writer, end_on_fault=settings.end_on_fault)
    publisher.thread.join()
    outcome = session.outcome or Outcome.ABORTED
    if not_started and outcome is not Outcome.REFUSED and controller.state is not State.LINK_LOST:
        outcome = Outcome.REFUSED  # the technician said no at the go/no-go
    if orphaned:  # the CLI crashed: the pen is stopped, the session stays resumable
        writer.close(None, None)
    else:
        writer.close(outcome.value, datetime.now(UTC).isoformat(timespec="milliseconds"))
    link.close()
    error = session.error
    report = EndReport(
        outcome=outcome,
        error=user_error(error) if error is not None else None,
        internal_error=repr(error) if error is not None and user_error(error) is None else None,
        grants=grants,
        path=str(writer.path), failure=writer.failure, errors=tuple(writer.errors),
        unsaved_path=str(writer.unsaved_path), unsaved_count=writer.unsaved_count,
        unwritten=tuple(writer.unwritten),
        status=writer.status_line(),
    )
    final = replace(session.snapshot, finished=True, outcome=outcome)
    with contextlib.suppress(OSError, ValueError):
        pub.send(("end", final, report))


def _door(session: Session, cmds: Connection, writer: RecordWriter | None = None, *,
          end_on_fault: bool = False) -> tuple[bool, bool]:
    """The one door in: commands and stop requests until the session ends. A CLI that
    goes away (the pipe closes) stops the pen, and the session is left interrupted (as
    a crash leaves it, to be resumed). Records that fall RECORDS_BEHIND_ITEMS behind
    stop the treatment. Returns (the technician never started, orphaned)."""
    not_started = orphaned = behind = False
    # One poll object, made once: Connection.poll builds a selector in Python on
    # every call, 20 times a second. A pipe whose other end closed polls as ready,
    # and its recv raises EOFError (below).
    pipe: select.poll | None = None
    while not session.done:
        if writer is not None and not behind and writer.backlog > RECORDS_BEHIND_ITEMS:
            behind = True
            session.submit(Command.RECORDS_FAILED)
            if end_on_fault:  # nobody to decide (--yes): the session ends, as Session does
                session.request_stop(f"{RECORDS_FAILED_REASON}: the records fell "
                                     f"{writer.backlog} entries behind")
        try:
            if pipe is None:
                pipe = select.poll()
                pipe.register(cmds.fileno(), select.POLLIN)
            if not pipe.poll(DOOR_POLL_MS):
                continue
            msg = cmds.recv()
        except (EOFError, OSError):
            session.request_stop("the devicectl process that ran the session ended")
            session.wait()
            orphaned = True
            break
        if msg[0] == "command":
            session.submit(msg[1])
        elif msg[0] == "stop":
            not_started = not_started or bool(msg[2])
            session.request_stop(msg[1])
        elif msg[0] == "close":
            session.request_stop("the session ended")
    return not_started, orphaned
