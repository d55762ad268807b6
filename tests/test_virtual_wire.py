"""The simulated pen as a transport: the VirtualWire steps the virtual clock to the
pen's next frame or the reader's timeout, and a session on it runs one iteration
per frame with the controller's timers firing at their exact virtual time."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.controller import HELLO_RETRY_US, Controller, EventKind, StartFacts, State
from devicectl.link import VirtualClock
from devicectl.linkstate import HEARTBEAT_US
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.protocol import Decoder, DeviceInfo, Hello, Stop, Telemetry, encode
from devicectl.safety import ACK_TIMEOUT_US
from devicectl.session import VIRTUAL_MAX_WAIT_US, Policy, Session
from devicectl.zones import load_zone_map
from firmware_sim.virtual import VirtualPen, VirtualWire, tenths

DATA = Path(__file__).parent / "data"
ZONE_MAP = load_zone_map()


def test_a_silent_pen_moves_the_clock_by_the_timeout_and_answers_without_it() -> None:
    clock = VirtualClock(5_000_000)
    wire = VirtualWire(VirtualPen(seed=1, zone_map=ZONE_MAP), clock)
    assert wire.read(4096, 0.0073) == b""  # nothing unasked before HELLO
    assert clock.now_us == 5_007_300
    wire.write(encode(Hello(1, 42), 0))
    (info,) = Decoder().feed(wire.read(4096, 0.5))
    assert isinstance(info.message, DeviceInfo) and info.message.nonce == 42
    assert clock.now_us == 5_007_300  # the answer was there at once


def test_each_read_steps_to_the_next_telemetry_frame_at_its_time() -> None:
    clock = VirtualClock(0)
    pen = VirtualPen(seed=1, zone_map=ZONE_MAP)
    wire = VirtualWire(pen, clock)
    wire.write(encode(Hello(1, 1), 0))
    dec = Decoder()
    dec.feed(wire.read(4096, 0.0))  # DEVICE_INFO
    period_us = 1_000_000 // pen.firmware.telemetry_hz
    times = []
    for _ in range(20):
        frames = dec.feed(wire.read(4096, 1.0))
        assert [type(f.message) for f in frames] == [Telemetry]
        times.append(clock.now_us)
    assert {b - a for a, b in itertools.pairwise(times)} == {period_us}


def test_an_unfed_watchdog_faults_at_its_own_time_not_the_next_frames() -> None:
    clock = VirtualClock(0)
    pen = VirtualPen(seed=1, zone_map=ZONE_MAP)
    wire = VirtualWire(pen, clock)
    wire.write(encode(Hello(1, 1), 0))
    dec = Decoder()
    while True:
        frames = dec.feed(wire.read(4096, 1.0))
        if any(type(f.message).__name__ == "Fault" for f in frames):
            break
    assert clock.now_us == pen.firmware.watchdog_us + 1  # fed by the HELLO at 0


def test_the_controller_names_its_next_timer() -> None:
    ctl = Controller(
        lambda dev: make_plan(load_profile(DATA / "short-two-zones.yaml"), dev, ZONE_MAP),
        ZONE_MAP, StartFacts("S-1", frozenset()), nonce=1, now_us=0,
    )
    assert ctl.next_deadline_us(0) is None  # nothing runs before connect
    ctl.connect(1_000)
    t = 1_000
    sent: dict[int, list[str]] = {}
    while t < 1_000 + HELLO_RETRY_US:  # heartbeats, then the HELLO again
        due = ctl.next_deadline_us(t)
        assert due is not None and due > t
        assert not ctl.tick(due - 1).data
        frames = Decoder().feed(ctl.tick(due).data)  # sent right then, not a step later
        sent[due] = [type(f.message).__name__ for f in frames]
        t = due
    assert sent[1_000 + HEARTBEAT_US] == ["Heartbeat"]
    assert "Hello" in sent[1_000 + HELLO_RETRY_US]


class _Muted:
    """The real pen that stops talking once it stamps, and drops the host's STOPs:
    the controller's telemetry-gap hold and ACK resends are what is left."""

    def __init__(self, pen: VirtualPen) -> None:
        self.pen = pen
        self.firmware = pen.firmware
        self.muted = False
        self.last_out_us = 0
        self._decoder = Decoder()

    def receive_data(self, data: bytes, now_us: int) -> None:
        kept = b"".join(
            encode(f.message, f.seq, f.flags)  # type: ignore[arg-type]
            for f in self._decoder.feed(data) if not isinstance(f.message, Stop)
        )
        self.pen.receive_data(kept, now_us)

    def next_event_us(self, now_us: int) -> int:
        return self.pen.next_event_us(now_us)

    def advance(self, now_us: int) -> bytes:
        out = self.pen.advance(now_us)
        if self.firmware.state.name == "STAMPING":
            self.muted = True
        if self.muted:
            return b""
        if out:
            self.last_out_us = now_us
        return out


def _session(pen: VirtualPen | _Muted) -> tuple[Session, VirtualWire]:
    loaded = load_profile(DATA / "short-two-zones.yaml")
    clock = VirtualClock(1_000_000)
    ctl = Controller(
        lambda dev: make_plan(loaded, dev, ZONE_MAP), ZONE_MAP,
        StartFacts(patient_ref="S-1", used_cartridge_ids=frozenset()),
        nonce=1234, now_us=clock.now_us,
    )
    wire = VirtualWire(pen, clock)
    session = Session(ctl, wire=wire, writer=None,
                      policy=Policy(auto_confirm=True, end_on_fault=True), clock=clock,
                      max_wait_us=VIRTUAL_MAX_WAIT_US)
    return session, wire


class _Counting:
    """The session's wire, counting reads and the reads that brought nothing."""

    def __init__(self, wire: VirtualWire) -> None:
        self.wire = wire
        self.reads = self.empty = 0

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        data = self.wire.read(max_bytes, timeout_s)
        self.reads += 1
        self.empty += not data
        return data

    def write(self, data: bytes) -> None:
        self.wire.write(data)


def test_a_virtual_session_runs_one_iteration_per_frame_not_per_millisecond() -> None:
    session, wire = _session(VirtualPen(seed=3, zone_map=ZONE_MAP))
    counting = _Counting(wire)
    session._wire = counting
    session.start()
    assert session.wait(60)
    assert session.state is State.COMPLETE
    simulated_ms = (wire.clock.now_us - session.t0_us) / 1000
    # At 500 Hz a 1 ms step read nothing every other time; now nearly every read
    # brings a frame, and there are about half as many reads as milliseconds.
    assert counting.reads < 0.6 * simulated_ms
    assert counting.empty < 0.05 * counting.reads


def test_the_telemetry_gap_hold_and_the_resends_fire_at_their_exact_virtual_time() -> None:
    muted = _Muted(VirtualPen(seed=3, zone_map=ZONE_MAP))
    session, _ = _session(muted)
    session.start()
    assert session.wait(60)
    events = session.drain_events()
    hold = next(e for e in events if e.kind is EventKind.SAFETY_STOP)
    gap_us = session.controller._gap_us
    assert hold.t_us == muted.last_out_us + gap_us + 1  # not a step later
    stop_sent = next(e.t_us for e in events
                     if e.kind is EventKind.SENT and e.data.get("type") == "STOP")
    resend = next(e for e in events if e.kind is EventKind.RESEND)
    assert resend.t_us == stop_sent + ACK_TIMEOUT_US


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(-200_000, 200_000).map(lambda k: k / 20),  # exact halves of a tenth
))
def test_the_pens_position_in_tenths_is_round_half_to_even(mm: float) -> None:
    """The simulated pen reports its tip as round(mm * 10), ties to even; `tenths` is that
    without the call into builtins, and must give the very same int (the session's end
    state depends on every frame's position)."""
    assert tenths(mm) == round(mm * 10)
