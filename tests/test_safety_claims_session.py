"""Claims of docs/safety.md held against the session and the records, found by the
round-10 audit of the page against the code: each test names the claim; those whose
docstring says "was" failed on the code before it was mended. Real simulated pen in
virtual time; triggered on states and strokes, never on wall-clock time.
(The controller's claims: test_safety_claims.py.)"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from test_session import _session_with, wait_for
from test_session import controller as session_controller

from devicectl import protocol as p
from devicectl.claim import CartridgeClaim
from devicectl.controller import Command, EventKind, State
from devicectl.link import VirtualClock
from devicectl.session import COVERAGE_PERIOD_US, VIRTUAL_MAX_WAIT_US, Policy, Session
from devicectl.zones import load_zone_map
from firmware_sim.virtual import VirtualPen, VirtualWire

# --- the end of a session: a pen that goes on gets H3 for up to 300 ms, ten ESTOPs --


class _AsksToStopOnceStamping:
    """A pen (wrapped) that, the first time it is stamping, asks the session to stop
    as SIGTERM or a closed terminal would: on the loop's own thread, at a state of
    the pen, so that what follows does not depend on how fast the machine runs."""

    def __init__(self, pen: Any) -> None:
        self.pen, self.firmware = pen, pen.firmware
        self.ask: Any = None
        self.asked = False

    def receive_data(self, data: bytes, now_us: int) -> None:
        self.pen.receive_data(data, now_us)

    def next_event_us(self, now_us: int) -> int:
        return int(self.pen.next_event_us(now_us))

    def advance(self, now_us: int) -> bytes:
        out = bytes(self.pen.advance(now_us))
        if not self.asked and self.firmware.state.name == "STAMPING":
            self.asked = True
            self.ask()
        return out



# --- the end of a session: it ends only once telemetry shows the pen stopped --------


class _SilentAtTheEnd:
    """The real simulated pen, whose link goes dead with the first STOP that comes
    once the session was asked to stop (the cable pulled as the session ends): from
    then on nothing reaches it and nothing comes back."""

    def __init__(self, pen: VirtualPen) -> None:
        self.pen, self.firmware = pen, pen.firmware
        self.ending = self.dead = False
        self._decoder = p.Decoder()

    def receive_data(self, data: bytes, now_us: int) -> None:
        if self.ending and any(isinstance(f.message, p.Stop) for f in self._decoder.feed(data)):
            self.dead = True
        if not self.dead:
            self.pen.receive_data(data, now_us)

    def next_event_us(self, now_us: int) -> int:
        return self.pen.next_event_us(now_us)

    def advance(self, now_us: int) -> bytes:
        out = self.pen.advance(now_us)
        return b"" if self.dead else out


def test_a_pen_that_falls_silent_at_the_end_is_recorded_unverified_and_link_lost() -> None:
    """Was false, now held.
    docs/safety.md:64 "The end of a session (... SIGTERM ...): STOP unless
    one is in force, and the loop ends only once telemetry shows the pen stopped (a
    PEN_STOPPED event in the record). ... a pen silent for 500 ms ends as LINK_LOST
    (exit 4)".
    Code: devicectl/session.py:467-468 (`Session._finished`): the STOP goes unACKed,
    its three resends run out (linkstate.py:131-133) and the controller marks the link
    gone (controller_core.py:324 `_link_lost`; ABORTED has no move to LINK_LOST in
    transitions.py); `ctl.link_gone` then ends the loop at once, 120 ms after the
    STOP, and session.py:263 takes the outcome from the state: ABORTED, exit 2, with
    neither PEN_STOPPED nor STOP_UNVERIFIED in the record, for a pen last seen
    STAMPING and never seen stopped."""
    silent = _SilentAtTheEnd(VirtualPen(seed=3, zone_map=load_zone_map()))
    pen = _AsksToStopOnceStamping(silent)
    session = _session_with(pen)

    def sigterm() -> None:
        silent.ending = True
        session.request_stop("SIGTERM")

    pen.ask = sigterm
    session.start()
    assert session.wait(60)
    assert silent.dead, "the session's STOP never came"
    kinds = [e.kind for e in session.drain_events()]
    assert EventKind.PEN_STOPPED not in kinds  # the pen was never seen stopped ...
    assert session.outcome is not None
    assert EventKind.STOP_UNVERIFIED in kinds and session.outcome.exit_code == 4, (
        f"ended {session.outcome.name} (exit {session.outcome.exit_code}) with no "
        "STOP_UNVERIFIED, the pen never seen stopped")


# --- the GO: no START until the cartridge's claim is granted ------------------------


class _PendingClaim(CartridgeClaim):
    """The records have not answered the claim yet (a busy clinic database: the
    claim runs on its own thread and the loop never waits for it)."""

    def __init__(self, db: Path) -> None:
        super().__init__(db, 1)
        self.answer = threading.Event()

    def _claim(self, serial: int, fw_version: int, cartridge_id: int,
               position_mode: str) -> None:
        self.answer.wait(60)


def _claim_session() -> tuple[Session, VirtualPen, _PendingClaim]:
    import tempfile

    clock = VirtualClock(1_000_000)
    pen = VirtualPen(seed=3, zone_map=load_zone_map())
    claim = _PendingClaim(Path(tempfile.gettempdir()) / "never-opened.db")
    session = Session(session_controller(clock), wire=VirtualWire(pen, clock), writer=None,
                      policy=Policy(auto_confirm=False), clock=clock,
                      max_wait_us=VIRTUAL_MAX_WAIT_US, claim=claim)
    return session, pen, claim


def _answer_to(session: Session, command: Command) -> tuple[list[str], bool]:
    """The technician's command, once the session is READY and the claim asked for:
    (the commands refused, whether a START went to the pen)."""
    seen: list[Any] = []

    def answered() -> bool:
        seen.extend(session.drain_events())
        return any(e.kind is EventKind.COMMAND_REFUSED for e in seen) or any(
            e.kind is EventKind.SENT and e.data.get("type") == "START" for e in seen)

    session.submit(command)
    assert wait_for(session, answered)
    refused = [e.text for e in seen if e.kind is EventKind.COMMAND_REFUSED]
    started = any(e.kind is EventKind.SENT and e.data.get("type") == "START" for e in seen)
    return refused, started


@pytest.mark.parametrize("command", [Command.START, Command.RESUME], ids=["START", "RESUME"])
def test_no_start_reaches_the_pen_before_the_cartridge_is_claimed(command: Command) -> None:
    """docs/safety.md:81 "at the GO, before the first START, the cartridge is claimed in
    the records ...; no START until the claim is granted".
    START: holds (session.py:332-336), and no other test drives it.
    RESUME (was not held): the pen's button, the web page's "resume" (web/state.py:36) and
    the terminal's `r` send RESUME, which the controller takes as START on a READY
    zone (transitions.py `resolve_command`); the session's gate checks only
    `cmd is Command.START` (session.py:332), before that resolution
    (transitions.py:238, controller.py:316), so RESUME starts the pen with the claim
    unanswered (as the pen's BUTTON_RESUME does, which never passes the session's
    gate: controller.py:280-281)."""
    session, pen, claim = _claim_session()
    session.start()
    try:
        assert wait_for(session, lambda: session.state is State.READY and claim.requested)
        refused, started = _answer_to(session, command)
        assert not started and refused, f"{command.name}: a START went to the pen unclaimed"
        assert pen.firmware.state.name != "STAMPING"
    finally:
        claim.answer.set()
        session.request_stop("test over")
        assert session.wait(30)



# --- records: a host killed with SIGKILL loses at most the last commit window --------


def test_a_killed_host_loses_at_most_a_second_of_the_dose_map(tmp_path: Path) -> None:
    """docs/safety.md, "Records": the events are committed at least every 100 ms, the
    dose map once a second (COVERAGE_PERIOD_US) and at each zone's end, so a host killed
    with SIGKILL loses at most the last second of the dose map. (The page said "at most
    the last commit window", 100 ms, for the coverage too: killed 0.9 s after a save,
    the record lacked every stroke of those 0.9 s.)
    The loop is stepped here by hand (Session._step) so that session time is its wall
    clock (`_clock_is_wall`): the save period is then virtual time, not the machine's."""
    from test_session import controller as session_controller
    from test_session import records

    from devicectl.session import READ_MAX_BYTES
    from devicectl.store import Store

    clock = VirtualClock(1_000_000)
    pen = VirtualPen(seed=3, zone_map=load_zone_map())
    ctl = session_controller(clock)
    db, sid, writer = records(tmp_path, "S-9")
    wire = VirtualWire(pen, clock)
    session = Session(ctl, wire=wire, writer=writer, policy=Policy(auto_confirm=True))
    assert session._clock_is_wall  # the default clock: `now` is its wall clock
    now = clock.now_us
    session.records.t0_us = session.now_us = session._timers.progress_us = now
    session._emit(ctl.connect(now), now)  # what Session._loop does, by hand
    history: list[tuple[int, int]] = []

    def strokes() -> int:
        plan, cov = ctl.plan, ctl.coverage
        return sum(cov.strokes(z.zone_id) for z in plan.zones) if plan and cov else 0

    while not (ctl.state is State.STAMPING and now - session.records.t0_us > 2_000_000
               and now - session._timers.coverage_us >= 900_000):
        assert now - session.records.t0_us < 60_000_000, "never stamped for 2 s"
        data = wire.read(READ_MAX_BYTES, session._wait_us(now) / 1e6)
        now = clock.now_us
        session._step(data, now)
        history.append((now, strokes()))
    writer.close(None, None)  # SIGKILL now, everything queued written: the best case
    with Store(db) as store:
        recorded = sum(z.strokes for z in store.session(sid).zones)
    # every stroke made up to a second (COVERAGE_PERIOD_US) before the kill is recorded
    window = max(n for t, n in history if t <= now - COVERAGE_PERIOD_US)
    assert recorded >= window, (
        f"the record holds {recorded} strokes of the {strokes()} made; "
        f"{strokes() - window} were made in the last second")
    assert recorded < strokes()  # (the case: strokes of the last second are not in it)


# --- single use: a cartridge seen in a session stays used in the records ---------------


class _SwapsTheCartridge:
    """The real simulated pen, whose cartridge is taken out once it has stamped and,
    50 ms later, another (0xBEEF, sealed) put in: its EVENTs tell the host."""

    def __init__(self, pen: VirtualPen) -> None:
        self.pen, self.firmware = pen, pen.firmware
        self.first = pen.pen.cartridge_id
        self._removed_us: int | None = None
        self._stamped = self.inserted = False

    def receive_data(self, data: bytes, now_us: int) -> None:
        self.pen.receive_data(data, now_us)

    def next_event_us(self, now_us: int) -> int:
        return self.pen.next_event_us(now_us)

    def advance(self, now_us: int) -> bytes:
        fw = self.firmware
        self._stamped = self._stamped or fw.state.name == "STAMPING"
        if self._stamped and self._removed_us is None:
            fw.remove_cartridge(now_us)
            self._removed_us = now_us
        elif self._removed_us is not None and not self.inserted and \
                now_us - self._removed_us >= 50_000:
            fw.insert_cartridge(0xBEEF, 0, now_us)
            self.inserted = True
        return self.pen.advance(now_us)


def test_a_cartridge_swapped_mid_session_stays_among_the_used_ones(
    tmp_path: Path,
) -> None:
    """Was false, now held.
    docs/safety.md:81 "A cartridge is present, has delivered no stamps, and
    was never seen in an earlier session (single use) | `safety.cartridge_problem`,
    facts from `store.used_cartridge_ids`"; record_writer.py:159-160 "a cartridge that
    touched skin must count as used even if the host dies the next moment".
    Code: a DEVICE_INFO mid-session (after CARTRIDGE_INSERTED, controller.py:288) is
    a DEVICE event; Session._emit (session.py:380-381) records the pen again, and
    Store.set_device (store.py:300) overwrites the session's one cartridge_id: the
    cartridge that stamped this patient is no longer among store.used_cartridge_ids,
    so the records no longer refuse it (only its own stamp counter does)."""
    from test_session import records

    from devicectl.store import Store

    db, sid, writer = records(tmp_path, "S-10")
    pen = _SwapsTheCartridge(VirtualPen(seed=3, zone_map=load_zone_map()))
    session = _session_with(pen, writer)
    session.start()
    seen: list[Any] = []

    def swapped() -> bool:
        seen.extend(session.drain_events())
        return any(e.kind is EventKind.DEVICE and e.data.get("cartridge_id") == 0xBEEF
                   for e in seen)

    assert wait_for(session, swapped, timeout_s=60)
    session.request_stop("test over")
    assert session.wait(30)
    writer.close(None, None)
    with Store(db) as store:
        used = store.used_cartridge_ids()
    assert pen.first in used, (
        f"cartridge {pen.first} stamped session {sid} and is not among the used {used}")
