"""One treatment session: the controller driven over a link, on its own thread.

The inner-loop thread owns the link: read (short timeout), decode and decide
(the controller), write what it returns, in that order, every iteration.
Records go to the writer thread's queue (session_records.py), display events
to a deque, and the monitor reads `snapshot`, a frozen Snapshot the loop
rebuilds at 20 Hz. Nothing
slow runs on the loop's thread. One loop for real and virtual time: the clock
is given (the monotonic clock, or a virtual one that the link itself moves,
firmware_sim.virtual.VirtualWire), and the session knows no simulator.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from devicectl.claim import CLAIM_PENDING, CartridgeClaim
from devicectl.clock import monotonic_us
from devicectl.controller import Command, ControlEvent, Controller, EventKind, Output, State
from devicectl.drain import drain
from devicectl.errors import LinkError
from devicectl.flight import RX, TX, FlightRecorder
from devicectl.link import VirtualClock
from devicectl.safety import NOT_STOPPED_WAIT_US, STOP_VERIFY_US, emergency_stop_frame
from devicectl.session_records import SessionRecords
from devicectl.snapshot import Outcome, Snapshot, outcome_of
from devicectl.snapshot_build import SnapshotBuilder
from devicectl.store import RECORDS_FAILED_REASON, RecordWriter

#: The status snapshot is rebuilt this often (µs of session time).
SNAPSHOT_PERIOD_US: Final = 50_000
#: Coverage goes to the records at least this often (µs of session time).
COVERAGE_PERIOD_US: Final = 1_000_000
#: The status is kept for the plain output's progress lines this often (µs of session time):
#: under 5 s, so that a line comes at least every 5 s although the loop's steps vary.
PROGRESS_PERIOD_US: Final = 4_500_000
#: The longest a read waits for the pen (µs) when the clock is real: the loop looks at
#: the records' health and the cartridge's claim at least this often (a command or a
#: stop request wakes a port's read at once). Reads wait less when a timer (the
#: controller's or the session's) is due sooner.
MAX_WAIT_US: Final = 1_000
#: The same for a port whose reads a command or a stop request wakes (a device or a
#: pty: link.SerialTransport's fd_port): commands do not wait for it, the controller's
#: timers (heartbeat, telemetry gap, silence, resends) bound it anyway, and it bounds
#: only how late the records' health, the claim and the snapshot are looked at while
#: the pen says nothing. Longer waits are cheaper: on the development VM a read that
#: waits 1 ms costs ~15 µs more CPU than one that waits several (docs/performance.md).
WOKEN_MAX_WAIT_US: Final = 20_000
#: The same in virtual time (a clock the link moves): a read stops at the pen's next
#: frame anyway, and the timers bound it; this only bounds how late a command is
#: taken while the pen says nothing.
VIRTUAL_MAX_WAIT_US: Final = 100_000
#: The most a read takes from the link at once.
READ_MAX_BYTES: Final = 4096

__all__ = [
    "FINAL_STATES",
    "MAX_WAIT_US",
    "VIRTUAL_MAX_WAIT_US",
    "WOKEN_MAX_WAIT_US",
    "Outcome",
    "Policy",
    "Session",
    "VirtualClock",
    "Wire",
    "outcome_of",
]


#: States in which the loop ends by itself: nothing more can happen without a new session.
FINAL_STATES: Final = frozenset({State.COMPLETE, State.REFUSED, State.ABORTED})




class Wire(Protocol):
    """What the loop needs of a byte link: the transports of devicectl.link fit, and
    firmware_sim.virtual.VirtualWire (a simulated pen in virtual time).

    A wire may also have an `fd_port` (link.SerialTransport's, devicectl/fd_port.py),
    which the loop then reads and writes itself, and a `wake()`, which the technician's
    commands and stop requests call so that a waiting read returns at once."""

    def read(self, max_bytes: int, timeout_s: float) -> bytes: ...
    def write(self, data: bytes) -> None: ...


@dataclass
class Policy:
    """What the session does on its own, without the technician's keys.

    `auto_confirm` (--yes) answers start and next-zone; a fault or a lost link
    then ends the session (`end_on_fault`), since nobody is there to clear it.
    """

    auto_confirm: bool = False
    end_on_fault: bool = False


@dataclass
class _Timers:
    snapshot_us: int = -(10**18)
    coverage_us: int = -(10**18)
    stop_deadline_us: int | None = None
    give_up_us: int = 0
    stop_requested: bool = False
    #: the link was already lost when the session's end began (nobody to wait for)
    gone_at_end: bool = False
    progress_us: int = -(10**18)
    confirmed_in: set[tuple[State, int]] = field(default_factory=set)


class Session:
    """Runs a Controller on a thread over a link, on the clock it is given.

    `clock` (µs) is the monotonic clock for a real pen; a virtual session passes
    the VirtualClock its wire moves, and may let a read wait longer than
    `max_wait_us` (there the wire moves time on to the pen's next frame or
    the next timer, whichever is first). Thread-safe for the UI: `submit(cmd)`,
    `request_stop(reason)`, `snapshot`, `drain_events()`, `wait(timeout)`. The
    outcome is set when the loop ends.
    """

    def __init__(
        self,
        controller: Controller,
        *,
        wire: Wire,
        writer: RecordWriter | None,
        policy: Policy,
        clock: Callable[[], int] = monotonic_us,
        max_wait_us: int = MAX_WAIT_US,
        started_wall: datetime | None = None,
        claim: CartridgeClaim | None = None,
    ) -> None:
        self.controller = controller
        #: the cartridge claimed at the GO (claim.py): the pen does not stamp before it
        #: is granted, whatever asks (START, RESUME, the pen's own button, --yes)
        self.claim = claim
        if claim is not None and not claim.granted:
            controller.claim_pending = CLAIM_PENDING
        #: why the records refused the GO (the cartridge's claim), once they did
        self.refusal: str | None = None
        self._policy = policy
        self._wire = wire
        self._send: Callable[[bytes], None] = wire.write  # (the loop's own, from its start)
        self._clock = clock
        self._clock_is_wall = clock is monotonic_us
        self._max_wait_us = max_wait_us
        self._no_wait_at: int | None = None
        watch = getattr(wire, "watch_map", None)
        if watch is not None:  # a simulated technician behind the wire sees the dose map
            watch(self.dose_view)
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        #: makes a waiting read return at once (a command is in), if the wire can
        self._wake: Callable[[], None] | None = getattr(wire, "wake", None)
        self._display: collections.deque[ControlEvent] = collections.deque(maxlen=10_000)
        #: (session time, status) every PROGRESS_PERIOD_US of session time, whatever
        #: the wall clock does: the plain output's progress lines come from these.
        self._progress: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(
            maxlen=256)
        self._stop_reason: str | None = None
        self._done = threading.Event()
        self._timers = _Timers()
        self._loop_thread = threading.Thread(target=self._run, name="inner-loop", daemon=True)
        self.flight = FlightRecorder()  # allocated once: the loop only copies into it
        #: what goes to the records (nothing without a writer)
        self.records = SessionRecords(controller, writer, self.flight, claim,
                                      started_wall or datetime.now(UTC))
        #: the latest frozen snapshot, replaced whole by the loop (devicectl/snapshot.py)
        self.snapshot = Snapshot()
        self._snapshots = SnapshotBuilder()
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.now_us = 0

    def dose_view(self, zone_id: int) -> Any:
        """The active dose map of a zone, for a simulated technician behind the wire
        (called on the loop's own thread, inside the wire's read)."""
        cov = self.controller.coverage
        return cov.hand_view(zone_id) if cov is not None else None

    # --- the UI's side --------------------------------------------------

    def start(self) -> None:
        self._loop_thread.start()

    @property
    def loop_thread_id(self) -> int | None:
        """The loop thread's OS id once started (penloop gives it real-time priority)."""
        return self._loop_thread.native_id

    def submit(self, cmd: Command) -> None:
        """A technician's command: the loop takes it at once (its wait is woken)."""
        self._commands.put(cmd)
        if self._wake is not None:
            self._wake()

    def request_stop(self, reason: str) -> None:
        """Stop the pen and end the loop (a signal, a closed terminal, the UI)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._wake is not None:
            self._wake()

    def drain_events(self) -> list[ControlEvent]:
        return drain(self._display)

    def drain_progress(self) -> list[tuple[int, dict[str, Any]]]:
        """The statuses kept every PROGRESS_PERIOD_US of session time since the last call."""
        return drain(self._progress)

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._done.wait(timeout_s)

    @property
    def done(self) -> bool:
        """Whether the loop has ended (`wait(0)` without its Condition's Python)."""
        return self._done.is_set()

    @property
    def t0_us(self) -> int:
        """Session time zero (the loop's first `now`): event times are shown from it."""
        return self.records.t0_us

    @property
    def state(self) -> State:
        return self.controller.state

    def wall_of(self, t_us: int) -> datetime:
        """The wall-clock time of a session time (simulated time in virtual sessions)."""
        return self.records.wall_of(t_us)

    # --- the inner loop -------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except LinkError as exc:  # the port went away: nothing more can reach the pen
            self.error = exc
            self._emergency_stop()
            self.outcome = Outcome.LINK_LOST
        except BaseException as exc:  # the pen is made safe first, whatever went wrong
            self.error = exc
            self._emergency_stop()
            self.outcome = Outcome.FAULT
        finally:
            if self.outcome is None and self.refusal is not None:
                self.outcome = Outcome.REFUSED
            if self.outcome is None:
                # A faulty pen (one that did not stop, even after the session was
                # aborted or complete) ends the session in FAULT, whatever the state.
                faulty = self.controller.fault_final is not None
                self.outcome = Outcome.FAULT if faulty else outcome_of(self.controller.state)
            if self.outcome in (Outcome.FAULT, Outcome.LINK_LOST):
                self.records.flight(self.now_us, f"the end of the session ({self.outcome.value})",
                                    always=True)
            # The end state and the last strokes, for the views and the records.
            with contextlib.suppress(Exception):
                self.snapshot = self._build_snapshot(self.now_us, finished=True)
            with contextlib.suppress(Exception):
                self.records.sample(self.now_us, last=True)
            with contextlib.suppress(Exception):
                self.records.coverage(self.now_us)
            self._done.set()

    def _loop(self) -> None:
        """Read (until the next timer at most), then decide and write; every clock."""
        wire, clock = self._wire, self._clock
        # A port's descriptor is read and written by its compiled FdPort directly: no
        # Python frame between the loop and the select, 1000 times a second.
        fd_port = getattr(wire, "fd_port", None)
        read: Callable[[int, float], bytes] = wire.read if fd_port is None else fd_port.read
        self._send = wire.write if fd_port is None else fd_port.write
        now = clock()
        self.records.t0_us = now
        self.now_us = now
        self._timers.progress_us = now  # the first progress line a period in, not at 0
        self._emit(self.controller.connect(now), now)
        wall = self._clock_is_wall  # then a direct call, not one through the Callable
        while not self._finished(now):
            data = read(READ_MAX_BYTES, self._wait_us(now) / 1e6)
            now = monotonic_us() if wall else clock()
            self._step(data, now)

    def _wait_us(self, now: int) -> int:
        """How long the next read may wait: till the controller's next timer, the
        session's own (progress, the end's deadlines), or `max_wait_us`.

        The controller and the session ran at `now` just before, so a time not
        after `now` is one they have dealt with, and is not waited for: only the
        controller's "now" (frames left in its backlog) gives one read without
        waiting, once per `now`, so that time always moves on."""
        due = now + self._max_wait_us
        ctl_due = self.controller.next_deadline_us(now)
        if ctl_due is not None and ctl_due < due and (
            ctl_due > now or (ctl_due == now and now != self._no_wait_at)
        ):
            due = ctl_due
        timers = self._timers  # the session's timers, one by one: no tuple a step
        progress = timers.progress_us + PROGRESS_PERIOD_US
        if now < progress < due:
            due = progress
        stop = timers.stop_deadline_us
        if stop is not None and now < stop < due:
            due = stop
        if now < timers.give_up_us < due:
            due = timers.give_up_us
        self._no_wait_at = now if due == now else None
        return due - now

    def _step(self, data: bytes, now: int) -> None:
        ctl = self.controller
        self.now_us = now
        if self.records.failed and ctl.records_failure is None:
            self._records_failed(now)
        if ctl.claim_pending is not None:  # the cartridge's claim not granted yet
            self._claim_step(now)
        if data:
            self.flight.record(data, RX, now)
            self._emit(ctl.receive_data(data, now), now)
            self.records.sample(now)
        while not self._commands.empty():
            cmd = self._commands.get_nowait()
            self._emit(ctl.command(cmd, now), now)
        self._emit(ctl.tick(now), now)
        self._auto_confirm(now)
        if self._stop_reason is not None and not self._timers.stop_requested:
            self._begin_stop(now)
        # Snapshots serve people and coverage saves serve crash recovery: both run
        # on the wall clock, also in virtual time, where simulated seconds fly by
        # (on the monotonic clock, `now` is the wall clock: not read twice a step).
        wall = now if self._clock_is_wall else monotonic_us()
        if now - self._timers.progress_us >= PROGRESS_PERIOD_US:
            self._timers.progress_us = now
            self._progress.append((now, ctl.status(now)))
        if wall - self._timers.snapshot_us >= SNAPSHOT_PERIOD_US:
            self._timers.snapshot_us = wall
            self.snapshot = self._build_snapshot(now, wall_us=wall)
        if wall - self._timers.coverage_us >= COVERAGE_PERIOD_US:
            self._timers.coverage_us = wall
            self.records.coverage(now)

    def _build_snapshot(self, now: int, *, wall_us: int | None = None,
                        finished: bool = False) -> Snapshot:
        """The frozen snapshot views read, with why the records fail (shown in red)."""
        return self._snapshots.build(
            self.controller, now, self.records.t0_us, now if wall_us is None else wall_us,
            records_failure=self.records.status_line(), finished=finished,
            outcome=self.outcome if finished else None, claim=self.claim)

    def _records_failed(self, now: int) -> None:
        """No treatment without a record: the pen stops at once; with nobody to decide
        (--yes, no terminal) the session ends, its last events in the unsaved file."""
        self._emit(self.controller.command(Command.RECORDS_FAILED, now), now)
        if self._policy.end_on_fault:
            self.request_stop(RECORDS_FAILED_REASON)

    def _emit(self, out: Output, now: int) -> None:
        if out.data:
            self._write(out.data)
        if not out.events:
            return
        self._display.extend(out.events)
        self._snapshots.note(out.events)
        self.records.events(out.events)
        kinds = {e.kind for e in out.events}
        if EventKind.DEVICE in kinds:
            self.records.device()
        if EventKind.ZONE_DONE in kinds:
            self.records.coverage(now)
        if EventKind.ESTOP in kinds or EventKind.PEN_FAULT in kinds:
            self.records.flight(now, "an emergency stop" if EventKind.ESTOP in kinds else
                                "a fault of the pen")

    def _claim_step(self, now: int) -> None:
        """Until the cartridge's claim is granted: at the GO (ready, nothing against it)
        it is asked for; granted, the controller's hold on stamping goes; refused, the
        session stops (`_claimed`)."""
        claim, ctl = self.claim, self.controller
        assert claim is not None
        if not claim.requested and ctl.state is State.READY and not ctl.go_no_go:
            self.records.device()
        self._claimed(now)

    def _claimed(self, now: int) -> bool:
        """Whether the cartridge is the session's (no claim asked: it is); a claim the
        records refused stops the session, a NO-GO naming the cartridge."""
        claim = self.claim
        if claim is None or claim.granted:
            self.controller.claim_pending = None  # read once: whoever asks sees it granted
            return True
        if claim.refused is not None and self.refusal is None:
            self.refusal = claim.refused
            self._emit(Output(b"", (ControlEvent(
                now, EventKind.GO_NO_GO, f"no go: {claim.refused}",
                data={"cartridge_id": claim.cartridge_id}, safety=True),)), now)
            self.request_stop(f"no go: {claim.refused}")
        return False

    def _write(self, data: bytes) -> None:
        self.flight.record(data, TX, self.now_us)
        self._send(data)

    def _auto_confirm(self, now: int) -> None:
        """--yes: start when the go/no-go says go, next zone when one is done; once each."""
        if not self._policy.auto_confirm or self._stop_reason is not None:
            return
        ctl = self.controller
        if ctl.state is not State.READY and ctl.state is not State.ZONE_DONE:
            return
        key = (ctl.state, ctl.zone_index)
        if key in self._timers.confirmed_in:
            return
        if ctl.state is State.READY and not ctl.go_no_go and self._claimed(now):
            self._timers.confirmed_in.add(key)
            self._emit(ctl.command(Command.START, now), now)
        elif ctl.state is State.ZONE_DONE:
            self._timers.confirmed_in.add(key)
            self._emit(ctl.command(Command.NEXT_ZONE, now), now)

    def _begin_stop(self, now: int) -> None:
        self._timers.stop_requested = True
        if self.controller.state not in FINAL_STATES | {State.FAULT, State.LINK_LOST}:
            out = self.controller.command(Command.ABORT, now)
            self._write(out.data)  # the pen first, the why after
            why = ControlEvent(
                now, EventKind.STOP_REQUESTED, f"session stopped: {self._stop_reason}", safety=True
            )
            self._emit(Output(b"", (why, *out.events)), now)

    def _finished(self, now: int) -> bool:
        """True once the session is over and the telemetry showed the pen stopped.

        At the end (complete, refused, aborted, a stop request, a faulty pen, a
        fault with nobody to clear it) the controller sends STOP unless one is in
        force, and the loop goes on until the pen's telemetry shows it stopped.
        A pen that goes on stamping gets ESTOP NOT_STOPPED every 30 ms (spec H3)
        for up to NOT_STOPPED_WAIT_US; a pen that says nothing for STOP_VERIFY_US
        ends the session as LINK_LOST. The record says which happened.
        """
        ctl = self.controller
        state = ctl.state
        timers = self._timers
        over = (
            timers.stop_requested
            or state in FINAL_STATES
            or ctl.fault_final is not None
            or (self._policy.end_on_fault and state in (State.FAULT, State.LINK_LOST))
        )
        if not over:
            return False
        if timers.stop_deadline_us is None:
            timers.stop_deadline_us = now + STOP_VERIFY_US
            timers.give_up_us = now + NOT_STOPPED_WAIT_US
            timers.gone_at_end = state is State.LINK_LOST or ctl.link_gone
            self._emit(ctl.finish(now), now)
        if state is State.LINK_LOST or ctl.link_gone or ctl.device is None:
            if not timers.gone_at_end and ctl.device is not None and not ctl.pen_stopped:
                # lost while waiting to see the pen stop (its STOP never ACKed): the pen
                # was never seen stopped, which the record says, and the session ends
                # LINK_LOST, not in the state it had reached (a clean abort, exit 2)
                waited = now - (timers.give_up_us - NOT_STOPPED_WAIT_US)
                self._emit(ctl.finish_unverified(now, waited), now)
                self.outcome = Outcome.FAULT if ctl.pen_not_stopped else Outcome.LINK_LOST
            return True  # nobody to wait for
        if ctl.pen_stopped:
            return not ctl.awaiting_ack or now >= timers.stop_deadline_us
        if ctl.pen_not_stopped:  # H3: ESTOP again every 30 ms while it lasts, then give up
            if now < timers.give_up_us:  # (not on to STOP_VERIFY_US: ten ESTOPs, not 17)
                return False
        elif now < timers.stop_deadline_us:
            return False
        waited = now - (timers.give_up_us - NOT_STOPPED_WAIT_US)
        self._emit(ctl.finish_unverified(now, waited), now)
        self.outcome = Outcome.FAULT if ctl.pen_not_stopped else Outcome.LINK_LOST
        return True

    def _emergency_stop(self) -> None:
        # If even this fails, the pen's own watchdog stops it within watchdog_ms.
        with contextlib.suppress(BaseException):
            self._write(emergency_stop_frame())
