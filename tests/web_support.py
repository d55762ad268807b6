"""Helpers for the web and report tests: a small simulated session, recorded for real.

A three-zone square map keeps a whole session to a few simulated seconds; the
session runs in virtual time with the real codec, controller, simulated pen
and record writer (no mocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from test_virtual_session import MAP, plan_for

from devicectl.controller import Controller, StartFacts
from devicectl.session import VIRTUAL_MAX_WAIT_US, Policy, Session, VirtualClock
from devicectl.store import RecordWriter, Store
from firmware_sim.virtual import VirtualPen, VirtualWire

PATIENT = "P-WEB-7"


@dataclass
class SimSession:
    session: Session
    writer: RecordWriter
    pen: VirtualPen
    db_path: Path
    session_id: int

    def finish(self, outcome: str | None = "complete") -> None:
        """End the loop (if still running) and close the records with `outcome`."""
        self.session.request_stop("the test ended")
        assert self.session.wait(10.0), "the session's loop did not end within 10 s"
        out = self.session.outcome.value if self.session.outcome is not None else outcome
        ended = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.writer.close(out if outcome is not None else None, ended if outcome else None)


def sim_session(
    db_path: Path,
    *,
    scenario: str | None = None,
    position: bool = True,
    speed: float = 0.0,
    auto_confirm: bool = True,
    end_on_fault: bool = True,
) -> SimSession:
    """A recorded session on the small map, started (the loop runs on its own thread)."""
    with Store(db_path) as store:
        sid = store.create_session(
            patient_ref=PATIENT,
            profile_name="web-test",
            profile_hash="ab" * 32,
            profile_text="name: web-test\n",
            started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
    clock = VirtualClock(0)
    pen = VirtualPen(seed=3, scenario=scenario, zone_map=MAP, position=position)
    ctl = Controller(plan_for, MAP, StartFacts(PATIENT, frozenset()), nonce=0x5EB, now_us=0)
    writer = RecordWriter(db_path, sid)
    writer.start()
    session = Session(
        ctl,
        wire=VirtualWire(pen, clock, speed=speed),
        writer=writer,
        policy=Policy(auto_confirm=auto_confirm, end_on_fault=end_on_fault),
        clock=clock,
        max_wait_us=VIRTUAL_MAX_WAIT_US,
    )
    session.start()
    return SimSession(session, writer, pen, db_path, sid)
