"""One cell of the fault campaign: a fault kind at a phase, a whole virtual session.

The host is the real one: devicectl's Session and Controller over the in-memory
byte pipe, a RecordWriter on a real SQLite file, every event printed by the
plain view. The bench around the simulated pen plays the technician (its keys,
at conditions of the session) and watches the pen from its own side: whether it
stamps, from when the fault could first be seen, and whether it ended stopped.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from devicectl import protocol as p
from devicectl.controller import Command, Controller, StartFacts, State
from devicectl.dose import pass_punctures_per_cm2
from devicectl.flight import TX, WINDOW_US, unpack
from devicectl.link import VirtualClock
from devicectl.plan import Plan, ZonePlan
from devicectl.safety import EstopReason
from devicectl.session import VIRTUAL_MAX_WAIT_US, Policy, Session
from devicectl.store import EventRecord, RecordWriter, Store
from devicectl.unsaved import read_unsaved, unsaved_path
from devicectl.zones import Zone, ZoneMap
from firmware_sim.faults import Scenario, load_scenarios
from firmware_sim.misbehave import MisbehavingPen, Misbehaviour, load_misbehaviours
from firmware_sim.triggers import Trigger, TriggerWatch
from firmware_sim.virtual import VirtualPen, VirtualWire

#: Strokes into the first zone at which the phases' events happen.
STROKES: Final = 20
TELEMETRY_PERIOD_US: Final = 2_000  # the host configures 500 Hz
#: The spec's bound on a misbehaving pen: 2 telemetry periods + 20 ms of its first bad frame.
BOUND_US: Final = 2 * TELEMETRY_PERIOD_US + 20_000
STEP_US: Final = 1_000
LIMIT_US: Final = 6_000_000  # a session that runs longer is stopped by the technician
AFTER_US: Final = 300_000  # the pen alone after the host has gone: its watchdog's turn
RECORDS_FAIL: Final = "records-fail"  # the host's fault: the database file is deleted
#: Each phase: the trigger that puts a fault there, with what the technician does.
PHASES: Final[dict[str, Trigger]] = {
    "handshake": Trigger("received", message="HELLO"),
    "ready": Trigger("ready"),
    "stamping": Trigger("stamping", strokes=STROKES),
    # manual: fired by the technician's own PAUSE or stop, so a coverage hold's
    # STOP just before cannot stand in for it
    "paused": Trigger("manual"),
    "zone change": Trigger("received", message="SET_TARGET", count=2),
    "clearing a fault": Trigger("received", message="CLEAR_FAULT"),
    "stopping": Trigger("manual"),
}
#: Scenarios: where their first bad moment is ("fire": when injected, "frame": the
#: pen's first FAULT or over-depth TELEMETRY; None: harmless, no stop owed) and the
#: grace past the bound (a cut link is the pen's watchdog's to stop: 100 ms).
SCENARIO_RULES: Final[dict[str, tuple[str | None, int]]] = {
    "disconnect": ("fire", 100),
    "watchdog": ("fire", 100),
    "cartridge-pulled": ("fire", 0),
    "overshoot": ("frame", 0),
    "overshoot-no-limit": ("frame", 0),
    "stuck-sensor": ("frame", 0),
    "stall": ("frame", 0),
    "brown-out": ("frame", 0),
    "overheat": ("frame", 0),
}


def _square(zone_id: int, name: str, y0: float) -> Zone:
    outline = ((-5.0, y0), (5.0, y0), (5.0, y0 + 8.0), (-5.0, y0 + 8.0))
    return Zone(zone_id, name, name, outline, 10.0 * 8.0)


ZONE_MAP: Final = ZoneMap((_square(1, "frontal", 0.0), _square(2, "vertex", 10.0)))


def plan_for(dev: p.DeviceInfo) -> Plan:
    zones = tuple(
        ZonePlan(z.id, z.name, depth, 1000, 1, 2, 0.1, z.area_mm2, 0, 1.0,
                 pass_punctures_per_cm2=pass_punctures_per_cm2(
                     dev.needle_count, 1000, dev.footprint_dmm))
        for z, depth in zip(ZONE_MAP.zones, (1000, 1200), strict=True)
    )
    return Plan("campaign", "1", "hash", 28, zones, (), dev.footprint_dmm, dev.needle_count,
                needle_counts=(dev.needle_count, dev.needle_count))


@dataclass(frozen=True, slots=True)
class CellResult:
    kind: str
    phase: str
    pen_stopped: bool  # at the end, seen from the pen: not stamping, motor still
    outcome: str
    exit_code: int
    sent: int  # command frames the host put on the wire
    recorded: int  # of them, those in the records
    first_bad_us: int | None  # from the session's start
    stamped_after_us: int | None  # how long the pen stamped past its first bad moment
    bound_us: int | None  # what the spec allows for that (None: no stop owed)
    estops: tuple[str, ...]  # the ESTOP reasons the host sent, in order
    expect: str
    crash: str | None  # a view or the loop raised
    #: the host configured or started the pen after a DEVICE_INFO it must refuse
    accepted_bad_pen: bool | None = None
    #: (frames the host sent in the last flight recording's window, of them recorded);
    #: None when the session kept no flight recording
    flight: tuple[int, int] | None = None
    #: the pen not stamping AFTER_US after the host went quiet (its own watchdog's doing
    #: when the host could not stop it)
    stopped_after_host: bool = True

    @property
    def spec_met(self) -> bool | None:
        """Whether the host did what `expect` says, where that can be read off the cell."""
        words = self.expect.replace(",", " ").split()
        if self.first_bad_us is None and words[:1] in (["ESTOP"], ["FAULT"]):
            return None  # the fault never showed on the wire: nothing was owed
        if words[:1] == ["ESTOP"]:
            return words[1] in self.estops
        if words[:1] == ["refuse"]:
            return None if self.accepted_bad_pen is None else not self.accepted_bad_pen
        if words[:1] == ["FAULT"]:
            return self.outcome in ("refused", "fault")
        return None

    @property
    def complete(self) -> bool:
        flight_ok = self.flight is None or self.flight[1] >= self.flight[0]
        return self.recorded >= self.sent and flight_ok

    @property
    def safe(self) -> bool:
        late = (
            self.bound_us is not None
            and self.stamped_after_us is not None
            and self.stamped_after_us > self.bound_us
        )
        return self.pen_stopped and not late


class RecordingWire:
    """The host's end of the pipe, noting every frame the host sends (the truth to check
    the records against)."""

    def __init__(self, wire: Any, clock: VirtualClock) -> None:
        self._wire = wire
        self._clock = clock
        self._decoder = p.Decoder()
        self.sent: list[tuple[int, p.Message | p.Unknown]] = []
        self.raw: list[tuple[int, bytes]] = []  # each frame as on the wire, 0x00 included

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        data: bytes = self._wire.read(max_bytes, timeout_s)
        return data

    def write(self, data: bytes) -> None:
        now = self._clock.now_us
        self.sent.extend((now, f.message) for f in self._decoder.feed(data))
        self.raw.extend((now, chunk + b"\x00") for chunk in data.split(b"\x00")[:-1])
        self._wire.write(data)

    def close(self) -> None:
        self._wire.close()


class Bench:
    """The pen in the technician's hand: her keys at conditions, the pen watched from its side."""

    def __init__(
        self, pen: VirtualPen | MisbehavingPen, phase: str, db: Path, *, records_fail: bool
    ) -> None:
        self.pen = pen
        self.phase = phase
        self.session: Session | None = None
        self.policy = Policy(auto_confirm=False, end_on_fault=False)
        self._db = db
        self._records_fail = records_fail
        self._since: tuple[State, int] | None = None
        self._used_once = False  # the one CLEAR_FAULT or RECONNECT the technician tries
        self._paused = self._stopped = self._staged = False
        self._pressed_pause = False
        #: the host-side fault (records) starts when the phase's trigger holds
        self._records_watch = TriggerWatch(PHASES[phase])
        self._host_frames = p.Decoder()
        self._decoder = p.Decoder()
        self._commanded = 0
        self.fire_us: int | None = None  # a host-side fault (records) fired
        self.first_frame_bad_us: int | None = None
        self.last_stamping_us: int | None = None
        self.host_gone = False  # after the host's loop: the pen alone, nothing more to judge

    @property
    def firmware(self) -> Any:
        return self.pen.firmware

    def receive_data(self, data: bytes, now_us: int) -> None:
        if self._records_fail and self.fire_us is None:
            for f in self._host_frames.feed(data):
                if not isinstance(f.message, p.Unknown):
                    self._records_watch.host_frame(f.message)
        self.pen.receive_data(data, now_us)

    def next_event_us(self, now_us: int) -> int:
        return self.pen.next_event_us(now_us)

    def advance(self, now_us: int) -> bytes:
        self._technician(now_us)
        out = self.pen.advance(now_us)
        self._watch(out, now_us)
        return out

    def _watch(self, out: bytes, now_us: int) -> None:
        fw = self.pen.firmware
        if fw.state is p.PenState.STAMPING:
            self.last_stamping_us = now_us
        if self.first_frame_bad_us is not None or not out or self.host_gone:
            return
        faults = getattr(self.pen, "faults", None)
        if faults is None or faults.fired_at_us is None:
            return  # the technician's own staged jam is not the fault under test
        target = fw.target
        for f in self._decoder.feed(out):
            m = f.message
            over = isinstance(m, p.Telemetry) and (
                m.depth_meas_um > 1550 or (target and m.depth_meas_um > target.depth_um + 100)
            )
            if isinstance(m, p.Fault) or over:
                self.first_frame_bad_us = now_us
                return

    def _fire(self) -> None:
        """The fault under test starts now (a manual trigger: the phase is her action)."""
        pen = self.pen
        if isinstance(pen, MisbehavingPen):
            pen.fire()
        else:
            pen.faults.watch.fire()
        self._records_watch.fire()

    def strokes(self) -> int:
        return int(self.pen.firmware.physics.strokes)

    def _technician(self, now_us: int) -> None:
        s = self.session
        if s is None:
            return
        ctl = s.controller
        state = ctl.state
        if self._since is None or self._since[0] is not state:
            self._since = (state, now_us)
        held_us = now_us - self._since[1]
        strokes = self.strokes()
        if now_us - s.t0_us > LIMIT_US:
            s.request_stop("the campaign's time limit")
        fw = self.pen.firmware
        if self._records_fail and self.fire_us is None and self._records_watch.check(fw):
            self.fire_us = now_us
            os.rename(self._db, moved_path(self._db))  # gone from under the writer
        if state is State.READY and held_us >= (50_000 if self.phase == "ready" else 5_000):
            s.submit(Command.START)
            self._since = (state, now_us + 10**9)  # once per READY
        elif state is State.ZONE_DONE and held_us >= 5_000:
            s.submit(Command.NEXT_ZONE)
            self._since = (state, now_us + 10**9)
        elif state is State.STAMPING and strokes >= STROKES:
            if self.phase == "paused" and not self._pressed_pause:
                self._pressed_pause = self._paused = True
                self._fire()
                s.submit(Command.PAUSE)
            elif self.phase == "stopping" and not self._stopped:
                self._stopped = True
                self._fire()
                s.request_stop("the technician ends the session")
            elif self.phase == "clearing a fault" and not self._staged:
                self._staged = True  # a fault the pen can clear: a short jam
                self.pen.firmware.latch(p.FaultBit.STALL, 0, now_us)
        elif state is State.PAUSED and self._paused and held_us >= 100_000:
            self._paused = False  # her own pause, resumed once
            s.submit(Command.RESUME)
            self._since = (state, now_us + 10**9)
        elif state is State.PAUSED and not self._paused and held_us >= 300_000:
            s.request_stop("the technician ends a session the host paused")
        elif state is State.FAULT and self.phase == "clearing a fault" and not self._used_once:
            if held_us >= 50_000:
                self._used_once = True
                s.submit(Command.CLEAR_FAULT)
        elif state is State.LINK_LOST and not self._used_once:
            if held_us >= 50_000:
                self._used_once = True
                s.submit(Command.RECONNECT)
        elif state in (State.FAULT, State.LINK_LOST):
            self.policy.end_on_fault = True




@functools.cache
def _kinds() -> tuple[dict[str, Scenario], dict[str, Misbehaviour]]:
    return load_scenarios(), load_misbehaviours()


def _pen_for(kind: str, phase: str, seed: int) -> tuple[VirtualPen | MisbehavingPen, str, int]:
    """The pen, what the host owes, and the grace (µs) past the bound."""
    trigger = PHASES[phase]
    scenarios, misbehaviours = _kinds()
    if kind in misbehaviours:
        mb: Misbehaviour = replace(misbehaviours[kind], trigger=trigger)
        inner = VirtualPen(seed=seed, zone_map=ZONE_MAP)
        return MisbehavingPen(inner, mb, seed=seed), mb.expect, mb.grace_ms * 1000
    if kind == RECORDS_FAIL:
        # The writer commits every 100 ms; the issue allows 100 ms from the failed commit.
        return VirtualPen(seed=seed, zone_map=ZONE_MAP), "stop stamping, keep every event", 200_000
    sc = scenarios[kind]
    if sc.trigger.on != "boot":
        sc = replace(sc, trigger=trigger)
    rule = SCENARIO_RULES.get(kind, (None, 0))
    expect = {"fire": "stopped, by the host or the watchdog", "frame": "FAULT, pen stopped"}
    return (
        VirtualPen(seed=seed, scenario=sc, zone_map=ZONE_MAP),
        expect.get(rule[0] or "", "carry on"),
        rule[1] * 1000,
    )


def run_cell(kind: str, phase: str, *, seed: int = 7) -> CellResult:
    with tempfile.TemporaryDirectory(prefix="devicectl-campaign-") as tmp:
        return _run_cell(kind, phase, seed, Path(tmp) / "records.db")


def _run_cell(kind: str, phase: str, seed: int, db: Path) -> CellResult:
    pen, expect, grace_us = _pen_for(kind, phase, seed)
    records_fail = kind == RECORDS_FAIL
    bench = Bench(pen, phase, db, records_fail=records_fail)
    clock = VirtualClock(0)
    wire = RecordingWire(VirtualWire(bench, clock, speed=1.0 if records_fail else 0.0), clock)
    with Store(db) as store:
        session_id = store.create_session(
            patient_ref=f"campaign {kind} {phase}", profile_name="campaign",
            profile_hash="hash", profile_text="", started_at="2026-01-01T00:00:00.000+00:00",
        )
    controller = Controller(
        plan_for, ZONE_MAP, StartFacts("campaign", frozenset()), nonce=0xC0DE, now_us=0
    )
    writer = RecordWriter(db, session_id, clock=clock)
    writer.start()
    session = Session(
        controller, wire=wire, writer=writer, policy=bench.policy, clock=clock,
        max_wait_us=VIRTUAL_MAX_WAIT_US,
    )
    bench.session = session
    session.start()
    crash = _print_events(session)
    session.wait(120.0)
    outcome = session.outcome
    writer.close(outcome.value if outcome else None, "2026-01-01T00:00:10.000+00:00")
    if session.error is not None:
        crash = crash or f"{type(session.error).__name__}: {session.error}"
    end_us = clock.now_us
    host_gone_stamping = pen.firmware.state is p.PenState.STAMPING
    bench.host_gone = True
    now = end_us
    while now < end_us + AFTER_US:  # the host has gone quiet: the pen by itself
        now += STEP_US
        bench.advance(now)
    stopped_after_host = pen.firmware.state is not p.PenState.STAMPING
    pen_stopped = stopped_after_host and not host_gone_stamping
    first_bad = _first_bad(kind, pen, bench)
    if first_bad is not None and first_bad > end_us:
        first_bad = None  # it showed only after the host had gone
    stamped_after = None
    if first_bad is not None:
        stamped_after = max(0, (bench.last_stamping_us or 0) - first_bad)
    bound = None
    if first_bad is not None:
        bound = BOUND_US + grace_us
    sent = [m for _, m in wire.sent if not isinstance(m, p.Unknown) and m.TYPE in p.ACK_REQ_TYPES]
    return CellResult(
        kind=kind, phase=phase, pen_stopped=pen_stopped, stopped_after_host=stopped_after_host,
        outcome=outcome.value if outcome else "none",
        exit_code=outcome.exit_code if outcome else -1,
        sent=len(sent), recorded=min(len(sent), _recorded_commands(db, session_id)),
        first_bad_us=first_bad, stamped_after_us=stamped_after, bound_us=bound,
        estops=tuple(_reason(m.reason) for m in sent if isinstance(m, p.Estop)),
        expect=expect, crash=crash, accepted_bad_pen=_accepted_bad_pen(pen, wire),
        flight=_flight_kept(db, session_id, wire),
    )


def _accepted_bad_pen(pen: VirtualPen | MisbehavingPen, wire: RecordingWire) -> bool | None:
    bad_info_us = getattr(pen, "first_bad_info_us", None)
    if bad_info_us is None:
        return None
    go = (p.Configure, p.SetTarget, p.Start)
    return any(t >= bad_info_us and isinstance(m, go) for t, m in wire.sent)


def _reason(code: int) -> str:
    try:
        return EstopReason(code).name
    except ValueError:
        return str(code)


def _first_bad(kind: str, pen: VirtualPen | MisbehavingPen, bench: Bench) -> int | None:
    if isinstance(pen, MisbehavingPen):
        if pen.misbehaviour.expect.startswith("carry on"):
            return None
        return pen.first_bad_us
    if kind == RECORDS_FAIL:
        return bench.fire_us
    rule = SCENARIO_RULES.get(kind, (None, 0))[0]
    if rule == "fire":
        return pen.faults.fired_at_us
    if rule == "frame":
        return bench.first_frame_bad_us
    return None


def _print_events(session: Session) -> str | None:
    """`devicectl run`'s own plain view (no terminal), into a buffer: it must not raise."""
    from rich.console import Console

    from devicectl.commands.run_cmd import _Feed, _plain

    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    try:
        _plain(console, session, _Feed(console, False, ZONE_MAP))  # the session's own map
    except Exception as exc:  # what the technician's terminal would have died of
        session.request_stop("the view crashed")
        return f"the plain view: {type(exc).__name__}: {exc}"
    return None


def _recorded_commands(db: Path, session_id: int) -> int:
    """Commands the records hold (SENT and RESEND events): in the database, in the one
    moved away under the writer (what it held was saved), and in the unsaved file."""
    return sum(e.kind in ("SENT", "RESEND") for e in _events(db, session_id))


def _events(db: Path, session_id: int) -> list[EventRecord]:
    out: list[EventRecord] = []
    for path in (moved_path(db), db):
        if path.exists():
            with Store(path, create=False) as store:
                out += store.events(session_id)
    if unsaved_path(db).exists():
        out += [e for seg in read_unsaved(unsaved_path(db)) for e in seg.events]
    return out


def _flight_kept(db: Path, session_id: int, wire: RecordingWire) -> tuple[int, int] | None:
    """Of the frames the host sent in the last flight recording's window, how many it holds."""
    kept = [e for e in _events(db, session_id) if e.kind == "FLIGHT"]
    if not kept:
        return None
    last = kept[-1]
    recorded = collections.Counter(
        f.raw for f in unpack(last.data["frames"]) if f.direction == TX
    )
    window = [raw for t, raw in wire.raw if last.t_us - WINDOW_US < t <= last.t_us]
    sent = collections.Counter(window)
    missing = sum((sent - recorded).values())
    return len(window), len(window) - missing


def moved_path(db: Path) -> Path:
    return db.with_name(db.name + ".moved")
