"""The pen process (issue 12): one process owns the pen; snapshots and events out,
commands in through one door. Real processes, the real simulator, a real
records file; every wait is on a condition, with generous bounds."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pickle
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from multiprocessing import Pipe
from pathlib import Path

import pytest
from test_virtual_session import MAP, plan_for

from devicectl import penloop
from devicectl.controller import Controller, StartFacts
from devicectl.controller_core import COVERAGE_CELL_MM
from devicectl.errors import RefusedError
from devicectl.link import open_pty
from devicectl.penloop import _Publisher, open_link
from devicectl.penproc import LinkSettings, MapRaster, PenProcess, SessionSettings, SimSettings
from devicectl.plan import PlanRecipe, ZoneRecipe
from devicectl.session import (
    MAX_WAIT_US,
    VIRTUAL_MAX_WAIT_US,
    WOKEN_MAX_WAIT_US,
    Policy,
    Session,
    VirtualClock,
)
from devicectl.snapshot import Outcome, Snapshot
from devicectl.store import Store
from devicectl.transitions import EventKind, State
from firmware_sim.virtual import VirtualPen, VirtualWire

PATIENT = "P-PROC-1"


def _recipe() -> PlanRecipe:
    """The small map's plan (test_virtual_session's), as the profile side would send it."""
    z = {zone.id: zone for zone in MAP.zones}
    return PlanRecipe("proc-test", "1", "ab" * 32, 28, (), (
        ZoneRecipe("frontal", 1, 1000, 1000, 1, 2, 0.9, z[1].area_mm2, None),
        ZoneRecipe("mid_scalp", 2, 1200, 1000, 2, 3, 0.8, z[2].area_mm2, None),
    ), needle_counts=(12, 12))


def _wait(cond: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def records(tmp_path: Path) -> tuple[Path, int]:
    return records_db(tmp_path)


def records_db(tmp_path: Path) -> tuple[Path, int]:
    """A records file in `tmp_path` with one new session of PATIENT: (its path, the id)."""
    db = tmp_path / "records.db"
    with Store(db) as store:
        sid = store.create_session(
            patient_ref=PATIENT, profile_name="proc-test", profile_hash="ab" * 32,
            profile_text="name: proc-test\n",
            started_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
    return db, sid


def _start(db: Path, sid: int, *, auto: bool) -> PenProcess:
    pen = PenProcess.open(LinkSettings(sim=SimSettings(seed=5, speed=0.0, zone_map=MAP)))
    pen.begin(SessionSettings(
        recipe=_recipe(), raster=MapRaster.of(MAP, COVERAGE_CELL_MM),
        facts=StartFacts(PATIENT, frozenset()), db_path=db, session_id=sid, nonce=0x5EB,
        started_wall=datetime.now(UTC), auto_confirm=auto, end_on_fault=auto))
    return pen


@pytest.fixture
def closing() -> Iterator[list[PenProcess]]:
    pens: list[PenProcess] = []
    yield pens
    for pen in pens:
        pen.close()


def _kinds(db: Path, sid: int) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute(
            "SELECT kind FROM events WHERE session_id = ? ORDER BY id", (sid,))]


def test_a_session_runs_in_the_pen_process_and_publishes_frozen_snapshots_and_events(
    records: tuple[Path, int], closing: list[PenProcess]
) -> None:
    db, sid = records
    pen = _start(db, sid, auto=True)
    closing.append(pen)
    seen: list[Snapshot] = []
    events = []
    deadline = time.monotonic() + 120
    while not pen.wait(0.05):
        assert time.monotonic() < deadline, f"still {pen.snapshot.state} after 120 s"
        seen.append(pen.snapshot)
        events += pen.drain_events()
    events += pen.drain_events()
    assert pen.report is not None and pen.report.outcome is Outcome.COMPLETE
    final = pen.snapshot
    assert final.finished and final.state is State.COMPLETE and final.outcome is Outcome.COMPLETE
    assert final.plan is not None and final.device is not None and final.go_no_go == ()
    assert final.coverage is not None and final.coverage.layout.tracked
    # What seldom changes crosses the pipe once and is put back by the handle: every
    # snapshot while stamping has the plan, the pen and recent events, the same plan.
    stamping = [s for s in seen if s.state is State.STAMPING]
    assert stamping, "no snapshot while stamping: the test proves nothing"
    assert all(s.plan is not None and s.device is not None and s.recent for s in stamping)
    assert len({id(s.plan) for s in stamping}) == 1
    # The events, in order and none missing: the records have the same sequence.
    assert [e.t_us for e in events] == sorted(e.t_us for e in events)
    recorded = [k for k in _kinds(db, sid) if k not in ("SAMPLE", "FLIGHT", "PEN_PROCESS")]
    assert recorded == [e.kind.name for e in events]
    assert EventKind.ZONE_DONE in {e.kind for e in events}
    # The session log states what the OS granted the pen process.
    assert "PEN_PROCESS" in _kinds(db, sid)
    assert "heap frozen" in pen.report.grants and "pen process" in pen.report.grants
    # virtual time: the loop never waits for the wall clock, and never asks for real time
    assert "loop thread not real-time (not asked: virtual time" in pen.report.grants
    # Plain, frozen data: no view can change what another sees, and it crosses processes.
    with pytest.raises(dataclasses.FrozenInstanceError):
        final.state = State.READY  # type: ignore[misc]
    assert not final.coverage.hits.flags.writeable
    again = pickle.loads(pickle.dumps(final))
    assert again.state is final.state and again.status == final.status


def test_a_port_that_cannot_be_opened_is_refused_and_nothing_starts(tmp_path: Path) -> None:
    with pytest.raises(RefusedError, match="nothing was started"):
        PenProcess.open(LinkSettings(port=str(tmp_path / "no-such-port")))


def test_the_technician_saying_no_at_the_go_no_go_is_a_refusal(
    records: tuple[Path, int], closing: list[PenProcess]
) -> None:
    db, sid = records
    pen = _start(db, sid, auto=False)
    closing.append(pen)
    _wait(lambda: pen.snapshot.state is State.READY)
    pen.request_stop("the technician did not start", not_started=True)
    assert pen.wait(60)
    assert pen.report is not None and pen.report.outcome is Outcome.REFUSED


def test_resume_on_a_ready_zone_starts_it_in_the_controller(
    records: tuple[Path, int], closing: list[PenProcess]
) -> None:
    """The views' one "go on" key: the controller reads RESUME on a ready zone as START."""
    from devicectl.transitions import Command

    db, sid = records
    pen = _start(db, sid, auto=False)
    closing.append(pen)
    _wait(lambda: pen.snapshot.state is State.READY)
    pen.submit(Command.RESUME)
    _wait(lambda: pen.snapshot.state is State.STAMPING)


def test_a_cli_that_vanishes_stops_the_pen_and_leaves_the_session_resumable(
    records: tuple[Path, int], closing: list[PenProcess]
) -> None:
    db, sid = records
    pen = _start(db, sid, auto=False)
    closing.append(pen)
    _wait(lambda: pen.snapshot.state is State.READY)
    pen._cmds.close()  # what the OS does to the pipe when the CLI dies
    assert pen.wait(60)
    assert "STOP_REQUESTED" in _kinds(db, sid)
    with sqlite3.connect(db) as conn:
        (outcome,) = conn.execute("SELECT outcome FROM sessions WHERE id = ?", (sid,)).fetchone()
    assert outcome is None  # interrupted, as a crash leaves it: `run --resume` takes it up


def test_a_reader_that_stalls_never_blocks_the_loop(tmp_path: Path) -> None:
    """Nobody reads the publisher's pipe: its thread blocks once the pipe is full, and
    the session runs to its end regardless."""
    clock = VirtualClock(0)
    ctl = Controller(plan_for, MAP, StartFacts(PATIENT, frozenset()), nonce=7, now_us=0)
    # paced (10x: about 7 s of wall time) so that the publisher's 20 Hz snapshots fill
    # the pipe long before the end (unpaced, it may end within a second on its own)
    session = Session(ctl, wire=VirtualWire(VirtualPen(seed=3, zone_map=MAP), clock, speed=10.0),
                      writer=None, policy=Policy(auto_confirm=True), clock=clock,
                      max_wait_us=VIRTUAL_MAX_WAIT_US)
    reader, writer = Pipe(duplex=False)
    publisher = _Publisher(session, writer)
    session.start()
    publisher.thread.start()
    try:
        assert session.wait(120), "the loop waited for a reader"
        assert session.outcome is Outcome.COMPLETE
        publisher.thread.join(0.5)
        assert publisher.thread.is_alive(), "the pipe never filled: the test proves nothing"
    finally:
        reader.close()  # the blocked send fails: the publisher ends
        publisher.thread.join(5)
        writer.close()


def test_records_that_fall_behind_stop_the_treatment(
    tmp_path: Path, records: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that does not keep up (here: its thread never runs) stops stamping;
    nothing is dropped: every record waits in its queue."""
    import threading

    from devicectl.record_writer import RecordWriter

    monkeypatch.setattr(penloop, "RECORDS_BEHIND_ITEMS", 20)
    db, sid = records
    writer = RecordWriter(db, sid)  # never started: it falls behind from the first event
    clock = VirtualClock(0)
    ctl = Controller(plan_for, MAP, StartFacts(PATIENT, frozenset()), nonce=7, now_us=0)
    # paced at real time: the session lasts long enough for the door's 50 ms polls to
    # see the backlog (unpaced, it may end within a second on its own)
    session = Session(ctl, wire=VirtualWire(VirtualPen(seed=3, zone_map=MAP), clock, speed=1.0),
                      writer=writer, policy=Policy(auto_confirm=True, end_on_fault=True),
                      clock=clock, max_wait_us=VIRTUAL_MAX_WAIT_US)
    door_end, cli_end = Pipe(duplex=False)
    session.start()
    door = threading.Thread(target=penloop._door, args=(session, door_end, writer),
                            kwargs={"end_on_fault": True})
    door.start()
    try:
        assert session.wait(120)
        assert session.snapshot.status.get("records_failure") is None  # the writer never failed
        assert ctl.records_failure is not None  # the door stopped the treatment
        assert session.outcome is not Outcome.COMPLETE
        assert writer.backlog > 20  # every record still queued
    finally:
        door.join(5)
        cli_end.close()
        door_end.close()


def test_a_port_whose_reads_a_command_wakes_may_wait_longer_for_the_pen() -> None:
    """A device or pty (a reader that `submit` wakes) lets the loop's read wait up to
    WOKEN_MAX_WAIT_US for the pen; a URL port, which nothing wakes, MAX_WAIT_US, so that
    a command is taken as soon as before."""
    with open_pty() as pen:
        link = open_link(LinkSettings(port=pen.slave_path))
        try:
            assert getattr(link.wire, "fd_port", None) is not None
            assert link.max_wait_us == WOKEN_MAX_WAIT_US > MAX_WAIT_US
        finally:
            link.close()
    link = open_link(LinkSettings(port="loop://"))
    try:
        assert getattr(link.wire, "fd_port", None) is None
        assert link.max_wait_us == MAX_WAIT_US
    finally:
        link.close()


def test_nothing_else_sends_on_the_publishers_pipe_while_it_runs() -> None:
    """A Connection is not safe for two threads: while the publisher thread runs, no
    other code of the pen process may send on its pipe (a "started" sent beside the
    first large snapshot split it, and the CLI read a corrupt pickle). Checked in the
    source, as test_safety checks who builds SET_TARGET: in `penloop._run`, no
    `pub.send` between starting the publisher's thread and joining it, and `_door`
    is not given the pipe."""
    tree = ast.parse(inspect.getsource(penloop))
    run = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_run")

    def calls(node: ast.AST, text: str) -> bool:
        return any(isinstance(c, ast.Call) and ast.unparse(c.func) == text
                   for c in ast.walk(node))

    body = run.body
    start = next(i for i, st in enumerate(body) if calls(st, "publisher.thread.start"))
    join = next(i for i, st in enumerate(body) if calls(st, "publisher.thread.join"))
    assert start < join
    assert not any(calls(st, "pub.send") for st in body[start:join + 1])
    door = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_door")
    assert "pub" not in {a.arg for a in door.args.args + door.args.kwonlyargs}
