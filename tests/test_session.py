"""The session runner: the inner loop on its thread, its stops and its failures.

Sessions here join a real Controller to the simulated pen through its
VirtualWire (virtual time); pytest-mock appears only where a port fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytest_mock import MockerFixture

from devicectl.controller import (
    TELEMETRY_HZ,
    Command,
    Controller,
    EventKind,
    StartFacts,
    State,
)
from devicectl.errors import LinkError
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.protocol import Decoder, Estop, Stop
from devicectl.safety import NOT_STOPPED_RESEND_US, NOT_STOPPED_WAIT_US
from devicectl.session import (
    VIRTUAL_MAX_WAIT_US,
    Outcome,
    Policy,
    Session,
    VirtualClock,
    outcome_of,
)
from devicectl.store import RecordWriter, Store
from devicectl.zones import load_zone_map
from firmware_sim.virtual import Pen, VirtualPen, VirtualWire

DATA = Path(__file__).parent / "data"


def controller(clock: VirtualClock, profile: str = "short-two-zones.yaml",
               telemetry_hz: int = TELEMETRY_HZ) -> Controller:
    """A controller for patient S-1 with the profile's plan, on a virtual clock."""
    zone_map = load_zone_map()
    loaded = load_profile(DATA / profile)
    return Controller(
        lambda dev: make_plan(loaded, dev, zone_map), zone_map,
        StartFacts(patient_ref="S-1", used_cartridge_ids=frozenset()),
        nonce=1234, now_us=clock.now_us, telemetry_hz=telemetry_hz,
    )


def virtual_session(
    *, profile: str = "short-two-zones.yaml", policy: Policy | None = None,
    writer: RecordWriter | None = None, scenario: str | None = None, seed: int = 3,
    speed: float = 0, telemetry_hz: int = TELEMETRY_HZ,
) -> tuple[Session, VirtualPen]:
    clock = VirtualClock(1_000_000)
    pen = VirtualPen(seed=seed, scenario=scenario, zone_map=load_zone_map())
    ctl = controller(clock, profile, telemetry_hz)
    session = Session(
        ctl, wire=VirtualWire(pen, clock, speed=speed), writer=writer,
        policy=policy or Policy(auto_confirm=True), clock=clock, max_wait_us=VIRTUAL_MAX_WAIT_US,
    )
    return session, pen


def records(tmp_path: Path, patient: str) -> tuple[Path, int, RecordWriter]:
    """A real records file with one open session and its running writer."""
    db = tmp_path / "s.db"
    with Store(db) as store:
        sid = store.create_session(patient_ref=patient, profile_name="p", profile_hash="h",
                                   profile_text="", started_at="2026-01-01T00:00:00+00:00")
    writer = RecordWriter(db, sid)
    writer.start()
    return db, sid, writer


def test_outcomes_map_to_the_documented_exit_codes() -> None:
    assert [o.exit_code for o in Outcome] == [0, 1, 2, 3, 4]
    assert outcome_of(State.COMPLETE) is Outcome.COMPLETE
    assert outcome_of(State.LINK_LOST) is Outcome.LINK_LOST
    assert outcome_of(State.STAMPING) is Outcome.ABORTED  # an unfinished session


def test_the_pen_is_configured_at_the_rate_the_controller_was_given() -> None:
    """The product asks for TELEMETRY_HZ; a bench asks for 1 kHz, and gets it."""
    for hz in (TELEMETRY_HZ, 1000):
        session, pen = virtual_session(telemetry_hz=hz)
        session.start()
        fw = pen.firmware
        assert wait_for(session, lambda fw=fw: fw.state.name == "STAMPING")
        session.request_stop("test over")
        assert session.wait(30)
        assert pen.firmware.telemetry_hz == hz


def wait_for(session: Session, predicate: object, timeout_s: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        session.wait(0.005)
    return False


def test_a_stop_request_stops_the_pen_and_ends_as_aborted() -> None:
    session, pen = virtual_session(speed=1.0)
    session.start()
    assert wait_for(session, lambda: pen.firmware.state.name == "STAMPING")
    session.request_stop("SIGTERM")
    assert session.wait(10)
    assert session.outcome is Outcome.ABORTED
    assert pen.firmware.state.name != "STAMPING"  # the STOP reached the pen before the end


def test_without_confirmation_the_session_waits_for_the_technician() -> None:
    session, pen = virtual_session(policy=Policy(auto_confirm=False), speed=1.0)
    session.start()
    assert not session.wait(0.5)
    assert session.state is State.READY  # nobody said go
    assert not [e for e in session.drain_events() if e.data.get("type") == "START"]
    session.submit(Command.START)
    assert wait_for(session, lambda: pen.firmware.state.name == "STAMPING")
    session.request_stop("test over")
    assert session.wait(10)


def test_a_port_that_fails_mid_session_ends_as_link_lost(mocker: MockerFixture) -> None:
    session, _ = virtual_session()
    wire = session._wire
    real_read = wire.read
    calls = {"n": 0}

    def failing_read(max_bytes: int, timeout_s: float) -> bytes:
        calls["n"] += 1
        if calls["n"] > 300:
            raise LinkError("port /dev/ttyACM0 disconnected; check the cable")
        return real_read(max_bytes, timeout_s)

    mocker.patch.object(wire, "read", side_effect=failing_read)
    written = mocker.spy(wire, "write")
    session.start()
    assert session.wait(10)
    assert session.outcome is Outcome.LINK_LOST
    assert isinstance(session.error, LinkError)
    last = Decoder().feed(written.call_args_list[-1].args[0])
    assert isinstance(last[-1].message, Estop)  # it still tried to stop the pen


class _Tap:
    """A wire that keeps every write and hands the rest to the wire it wraps (the
    compiled VirtualWire is a native class: it takes no spy and no patch)."""

    def __init__(self, wire: VirtualWire) -> None:
        self.wire, self.written = wire, list[bytes]()

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        return self.wire.read(max_bytes, timeout_s)

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        self.wire.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.wire, name)


def test_an_internal_error_stops_the_pen_first_and_ends_as_fault() -> None:
    """The loop's clock fails once the pen is stamping: a bug in the loop itself,
    wherever it is, ends the session in FAULT with ESTOP the last thing sent."""
    clock = VirtualClock(1_000_000)
    ctl = controller(clock)
    failed = []

    def failing_clock() -> int:
        if ctl.state is State.STAMPING and not failed:
            failed.append(clock.now_us)
            raise RuntimeError("bug")
        return clock()

    tap = _Tap(VirtualWire(VirtualPen(seed=3, zone_map=load_zone_map()), clock))
    session = Session(ctl, wire=tap, writer=None, policy=Policy(auto_confirm=True),
                      clock=failing_clock, max_wait_us=VIRTUAL_MAX_WAIT_US)
    session.start()
    assert session.wait(10)
    assert failed, "the session never reached STAMPING"
    assert session.outcome is Outcome.FAULT and isinstance(session.error, RuntimeError)
    assert isinstance(Decoder().feed(tap.written[-1])[-1].message, Estop)


def test_records_get_every_event_and_the_pen_and_close_with_the_outcome(tmp_path: Path) -> None:
    db, sid, writer = records(tmp_path, "S-1")
    session, _ = virtual_session(writer=writer)
    session.start()
    assert session.wait(30)
    shown = [e for e in session.drain_events()]
    writer.close(session.outcome.value if session.outcome else None, "2026-01-01T00:10:00+00:00")
    with Store(db) as store:
        rec = store.session(sid)
        recorded = store.events(sid)
    assert rec.outcome == "complete" and rec.cartridge_id and rec.device_serial
    assert [e.kind for e in recorded if e.kind != "SAMPLE"] == [e.kind.name for e in shown]
    samples = [e for e in recorded if e.kind == "SAMPLE"]
    assert samples and all(0 < e.data["depth_meas_um"] <= 1550 for e in samples[1:])
    assert all(z.done for z in rec.zones) and len(rec.zones) == 2
    assert any(e.kind == EventKind.ZONE_DONE.name for e in recorded)


def test_virtual_time_is_paced_to_the_asked_speed() -> None:
    import time

    session, _ = virtual_session(profile="short-frontal.yaml", speed=4.0)
    t0 = time.monotonic()
    session.start()
    assert session.wait(30)
    wall = time.monotonic() - t0
    simulated = session.now_us - 1_000_000
    assert session.outcome is Outcome.COMPLETE
    assert wall >= 0.9 * simulated / 1e6 / 4.0  # never faster than asked


def test_a_session_that_faults_at_once_still_records_its_zones(tmp_path: Path) -> None:
    db, sid, writer = records(tmp_path, "S-2")
    session, _ = virtual_session(writer=writer, scenario="overshoot-no-limit",
                                 policy=Policy(auto_confirm=True, end_on_fault=True))
    session.start()
    assert session.wait(30)
    writer.close("fault", "2026-01-01T00:01:00+00:00")
    assert session.outcome is Outcome.FAULT
    assert session.snapshot.status["state"] == "FAULT"  # the views see the end state
    assert session.snapshot.state is State.FAULT and session.snapshot.finished
    with Store(db) as store:
        assert {z.name for z in store.session(sid).zones} == {"vertex", "mid_scalp"}


# --- the session's end: the stop is verified in the pen's telemetry (spec H3) -------


class _StopIgnoringPen:
    """The real simulated pen behind a liar: it ACKs the STOPs (and ESTOPs, if asked)
    the host sends and never passes them on, as the issue's misbehaving pens did."""

    def __init__(self, pen: VirtualPen, swallow: tuple[type, ...]) -> None:
        self.pen = pen
        self.firmware = pen.firmware
        self._swallow = swallow
        self._decoder = Decoder()
        self._acks = b""
        #: lying from the first time the pen stamps
        self.armed = False
        #: called once, on the loop's thread, as it arms (the test's stop request: made
        #: from the test's thread after a poll, it came at whatever virtual time the
        #: loop had reached by then, and a dose hold's swallowed STOP could end the
        #: session in FAULT first, on a busy machine or a fast one)
        self.on_armed: Callable[[], None] | None = None

    def receive_data(self, data: bytes, now_us: int) -> None:
        from devicectl.protocol import Ack, encode

        kept = b""
        for f in self._decoder.feed(data):
            m = f.message
            if self.armed and isinstance(m, self._swallow):
                self._acks += encode(Ack(f.seq, m.TYPE, 0), 0)  # type: ignore[union-attr]
            else:
                kept += encode(m, f.seq, f.flags)  # type: ignore[arg-type]
        self.pen.receive_data(kept, now_us)

    def next_event_us(self, now_us: int) -> int:
        return self.pen.next_event_us(now_us)

    def advance(self, now_us: int) -> bytes:
        out, self._acks = self._acks + self.pen.advance(now_us), b""
        if self.firmware.state.name == "STAMPING" and not self.armed:
            self.armed = True  # on a condition of the pen, not when a poll happens to look
            if self.on_armed is not None:
                self.on_armed()
        return out


def _session_with(pen: Pen, writer: RecordWriter | None = None) -> Session:
    clock = VirtualClock(1_000_000)
    return Session(controller(clock), wire=VirtualWire(pen, clock), writer=writer,
                   policy=Policy(auto_confirm=True), clock=clock, max_wait_us=VIRTUAL_MAX_WAIT_US)


def test_a_stop_request_ends_once_the_telemetry_shows_the_pen_stopped(tmp_path: Path) -> None:
    db, sid, writer = records(tmp_path, "S-3")
    session, pen = virtual_session(writer=writer, speed=1.0)
    session.start()
    assert wait_for(session, lambda: pen.firmware.state.name == "STAMPING")
    session.request_stop("SIGINT")
    assert session.wait(10)
    writer.close(session.outcome.value if session.outcome else None, "2026-01-01T00:10:00+00:00")
    assert session.outcome is Outcome.ABORTED and session.outcome.exit_code == 2
    with Store(db) as store:
        kinds = [e.kind for e in store.events(sid)]
    assert "PEN_STOPPED" in kinds and "STOP_UNVERIFIED" not in kinds
    assert kinds.index("PEN_STOPPED") > kinds.index("STOP_REQUESTED")


def test_a_complete_session_ends_with_the_pen_seen_stopped() -> None:
    session, _ = virtual_session()
    session.start()
    assert session.wait(30)
    assert session.outcome is Outcome.COMPLETE
    assert EventKind.PEN_STOPPED in [e.kind for e in session.drain_events()]


def test_a_pen_that_ignores_the_last_stop_gets_h3_and_the_session_ends_in_fault() -> None:
    liar = _StopIgnoringPen(VirtualPen(seed=3, zone_map=load_zone_map()), (Stop,))
    session = _session_with(liar)
    liar.on_armed = lambda: session.request_stop("SIGTERM")
    session.start()
    assert session.wait(60)
    assert liar.armed
    events = session.drain_events()
    estops = [e for e in events if e.kind is EventKind.ESTOP]
    assert estops and "switch the pen off" in estops[0].text
    assert session.outcome is Outcome.FAULT and session.outcome.exit_code == 3
    assert liar.firmware.state.name == "FAULT"  # it obeyed the ESTOP, and that was seen
    assert EventKind.PEN_STOPPED in [e.kind for e in events]


def test_a_pen_that_ignores_stop_and_estop_is_given_up_on_with_the_reason() -> None:
    liar = _StopIgnoringPen(VirtualPen(seed=3, zone_map=load_zone_map()), (Stop, Estop))
    session = _session_with(liar)
    liar.on_armed = lambda: session.request_stop("the terminal closed")
    session.start()
    assert session.wait(60)
    assert liar.armed
    events = session.drain_events()
    sent_estops = [e for e in events if e.kind is EventKind.SENT and e.data.get("type") == "ESTOP"]
    (asked,) = [e.t_us for e in events if e.kind is EventKind.STOP_REQUESTED]
    (gave_up,) = [e for e in events if e.kind is EventKind.STOP_UNVERIFIED]
    # again and again while it lasted (every 30 ms), and for NOT_STOPPED_WAIT_US only:
    # ten ESTOPs, as docs/safety.md says (the loop went on to STOP_VERIFY_US: 17)
    tries = NOT_STOPPED_WAIT_US // NOT_STOPPED_RESEND_US
    assert tries - 2 <= len(sent_estops) <= tries
    assert gave_up.t_us - asked <= NOT_STOPPED_WAIT_US
    assert "did not stop" in gave_up.text and "switch the pen off" in gave_up.text
    assert session.outcome is Outcome.FAULT
    assert liar.firmware.state.name == "STAMPING"  # the liar really never stopped


def test_a_command_wakes_the_loop_waiting_on_a_port() -> None:
    """Over a port (here a pty whose pen says nothing), a technician's command wakes
    the loop's read at once (the reader counts the wake-up it took), and the loop
    acts on the command; a stop request ends the session."""
    from devicectl.clock import monotonic_us
    from devicectl.link import SerialTransport, open_pty, open_transport

    with open_pty() as pen, open_transport(pen.slave_path) as host:
        assert isinstance(host, SerialTransport) and host.fd_port is not None
        session = Session(controller(VirtualClock(monotonic_us())), wire=host, writer=None,
                          policy=Policy())
        session.start()
        session.submit(Command.START)  # refused: no pen has answered

        def refused() -> bool:
            return any(e.kind is EventKind.COMMAND_REFUSED for e in session.drain_events())

        assert wait_for(session, refused)
        assert host.fd_port.wakeups >= 1
        session.request_stop("test over")
        assert session.wait(30)
