"""The pen process's own code: it opens the link, owns the controller, runs the Session.

Started by devicectl/penproc.py with picklable settings. It opens the port
(or builds the simulated pen) itself, then, once told to begin, builds the
controller, the records' writer and the Session, asks the OS for what helps
(devicectl/os_grants.py: a core of its own, a higher priority where permitted, a
short time slice for the loop's thread, real-time scheduling for it only if switched
on, a frozen heap) and records
what it was granted. Its main thread is the door (commands in), a publisher
thread sends the latest snapshot and the events out at 20 Hz: a reader that
stalls blocks only the publisher, never the loop. Imports
neither pydantic nor YAML (tests/test_layers.py checks).
"""

from __future__ import annotations

import contextlib
import pickle
import select
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
from devicectl.os_grants import ask_os, ask_real_time, ask_short_slice
from devicectl.penproc import EndReport, LinkSettings, SessionSettings, user_error
from devicectl.record_writer import RecordWriter
from devicectl.records import EventRecord
from devicectl.safety import RECORDS_BEHIND_ITEMS
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
#: How long the door waits for a command before it looks at the session's end and the
#: records' backlog again (ms).
DOOR_POLL_MS: Final = 50


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
            # link.py's sentence already says what to try (`devicectl ports`, the group)
            raise RefusedError(f"{exc}; nothing was started") from None
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
        zone_seconds_before=dict(settings.zone_seconds_before),
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
    # The loop's thread alone real-time if switched on, else a short time slice, once it
    # exists (its first steps are normal): the writer and this thread (the door, and
    # the publisher it starts) stay as they were.
    grants += ", " + ask_real_time(session.loop_thread_id, link.real_time, data)
    grants += ", " + ask_short_slice(session.loop_thread_id, link.real_time, data)
    writer.events([EventRecord(
        t_us=0, wall=settings.started_wall.isoformat(timespec="milliseconds"),
        kind="PEN_PROCESS", text=grants, zone_id=None, data=data)])
    # "started" goes before the publisher runs: a Connection is not safe for two
    # threads, and a large snapshot is written in two parts that another send could
    # split (the CLI then read a corrupt pickle and reported an internal error).
    with contextlib.suppress(OSError, ValueError):
        pub.send(("started", grants, data))
    publisher = _Publisher(session, pub)
    publisher.thread.start()
    not_started, orphaned = _door(session, cmds, writer, end_on_fault=settings.end_on_fault)
    publisher.thread.join()
    outcome = session.outcome or Outcome.ABORTED
    if not_started and outcome is not Outcome.REFUSED and controller.state is not State.LINK_LOST:
        outcome = Outcome.REFUSED  # the technician said no at the go/no-go
    if orphaned or (settings.in_place and outcome is Outcome.REFUSED):
        # the CLI crashed, or a session resumed in place (it treated) was refused before
        # its START: the pen is stopped, the session stays interrupted, resumable
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
