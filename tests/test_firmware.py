"""Conformance of the simulated pen's firmware to the spec's Behaviour section.

Every test drives `Firmware` only through encoded bytes (the project's codec)
and reads only the bytes it answers; one test per rule, named after it.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.protocol import (
    FLAG_ACK_REQ,
    Ack,
    ClearFault,
    Configure,
    Decoder,
    DeviceInfo,
    Estop,
    Event,
    Fault,
    FaultBit,
    Heartbeat,
    Hello,
    Message,
    Nack,
    PenEvent,
    PenState,
    SetTarget,
    Start,
    Stop,
    Telemetry,
    encode,
    encode_raw,
)
from devicectl.safety import DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM
from firmware_sim.firmware import (
    PEN_DEPTH_LIMIT_UM,
    PEN_OVERDEPTH_UM,
    TRANSITIONS,
    Firmware,
    Trigger,
)
from firmware_sim.physics import PenParams, Physics


class Bench:
    """A host on a bench: talks to a Firmware through real frames, virtual time in µs."""

    def __init__(self, pen: PenParams | None = None, seed: int = 0) -> None:
        self.pen = pen or PenParams()
        self.physics = Physics(self.pen, seed=seed)
        self.fw = Firmware(self.pen, self.physics, seed=seed)
        self.decoder = Decoder()
        self.now_us = 0
        self.seq = 0
        self.got: list[tuple[int, Message]] = []
        self.last_sent_us = 0
        self.fw.tick(0)

    def _take(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            assert not isinstance(frame.message, type(None))
            self.got.append((self.now_us, frame.message))  # type: ignore[arg-type]

    def send(self, msg: Message, flags: int | None = None) -> Ack | None:
        """Send one frame; returns the ACK it got (if any) among the answer's frames."""
        seq = self.seq
        self.seq = (seq + 1) & 0xFF
        self.last_sent_us = self.now_us
        return self.send_raw(encode(msg, seq, flags), seq)

    def send_raw(self, data: bytes, seq: int | None = None) -> Ack | None:
        mark = len(self.got)
        self._take(self.fw.receive_data(data, self.now_us))
        acks = [m for _, m in self.got[mark:] if isinstance(m, Ack) and m.acked_seq == seq]
        return acks[-1] if acks else None

    def run(self, dt_us: int, *, heartbeat_us: int | None = 20_000, step_us: int = 1000) -> None:
        end = self.now_us + dt_us
        while self.now_us < end:
            self.now_us = min(end, self.now_us + step_us)
            self._take(self.fw.tick(self.now_us))
            if heartbeat_us is not None and self.now_us - self.last_sent_us >= heartbeat_us:
                self.send(Heartbeat(self.now_us // 1000))

    def of(self, cls: type, since_us: int = 0) -> list:  # type: ignore[type-arg]
        return [m for t, m in self.got if t >= since_us and isinstance(m, cls)]

    def state(self) -> PenState:
        return self.fw.state

    def telemetry(self) -> Telemetry:
        return self.of(Telemetry)[-1]  # type: ignore[no-any-return]

    def greet(self) -> DeviceInfo:
        self.send(Hello(1, 0xABCD))
        return self.of(DeviceInfo)[-1]  # type: ignore[no-any-return]

    def stamping(self, depth_um: int = 1000, rate_dhz: int = 1000, zone_id: int = 2) -> None:
        self.greet()
        assert self.send(SetTarget(depth_um, rate_dhz, zone_id)).status == Nack.OK  # type: ignore[union-attr]
        assert self.send(Start()).status == Nack.OK  # type: ignore[union-attr]
        self.run(300_000)


def status(ack: Ack | None) -> Nack:
    assert ack is not None, "no ACK"
    return Nack(ack.status)


# --- handshake and telemetry ------------------------------------------------------


def test_hello_is_answered_with_device_info_echoing_the_nonce() -> None:
    b = Bench()
    b.send(Hello(1, 0xDEADBEEF))
    info = b.of(DeviceInfo)[-1]
    assert info.nonce == 0xDEADBEEF and info.proto == 1
    assert info.max_depth_um == 2500 and (info.min_rate_dhz, info.max_rate_dhz) == (500, 1500)
    assert info.capabilities == 11 and info.cartridge_id != 0 and info.cartridge_stamps == 0


def test_hello_in_every_state_answers_device_info_and_changes_nothing_else() -> None:
    b = Bench()
    b.stamping()
    before = b.fw.state
    b.send(Hello(1, 77))
    assert b.of(DeviceInfo)[-1].nonce == 77
    assert b.fw.state is before is PenState.STAMPING
    b.send(Estop(1))
    b.send(Hello(1, 78))
    assert b.of(DeviceInfo)[-1].nonce == 78 and b.state() is PenState.FAULT


def test_pen_sends_nothing_before_the_first_hello() -> None:
    b = Bench()
    b.run(500_000, heartbeat_us=None)
    assert b.got == []


def test_telemetry_at_default_500_hz_after_hello_in_every_state() -> None:
    b = Bench()
    b.greet()
    b.run(1_000_000)
    assert 499 <= len(b.of(Telemetry)) <= 501
    b.send(Estop(3))
    mark = b.now_us
    b.run(200_000)
    tl = b.of(Telemetry, since_us=mark + 1)
    assert 99 <= len(tl) <= 101 and all(t.state == PenState.FAULT for t in tl)


def test_telemetry_at_the_configured_rate() -> None:
    b = Bench()
    b.greet()
    assert status(b.send(Configure(1000, 100))) is Nack.OK
    mark = b.now_us
    b.run(1_000_000)
    tl = b.of(Telemetry, since_us=mark + 1)
    assert 999 <= len(tl) <= 1001
    ts = [t.t_us for t in tl]
    assert all(b - a == 1000 for a, b in itertools.pairwise(ts))


@pytest.mark.parametrize(("hz", "wd_ms"), [(49, 100), (2001, 100), (500, 19), (500, 1001)])
def test_configure_out_of_range_is_nacked_bad_arg(hz: int, wd_ms: int) -> None:
    b = Bench()
    b.greet()
    assert status(b.send(Configure(hz, wd_ms))) is Nack.BAD_ARG
    assert b.fw.telemetry_hz == 500 and b.fw.watchdog_us == 100_000


def test_commands_before_hello_are_nacked_bad_state() -> None:
    b = Bench()
    assert status(b.send(Configure(500, 100))) is Nack.BAD_STATE
    assert status(b.send(SetTarget(500, 1000, 1))) is Nack.BAD_STATE
    assert status(b.send(Start())) is Nack.BAD_STATE
    assert b.fw.state is PenState.BOOT


def test_estop_is_obeyed_even_before_hello() -> None:
    b = Bench()
    assert status(b.send(Estop(1))) is Nack.OK
    assert b.fw.state is PenState.FAULT


# --- SET_TARGET and the pen's own limit ------------------------------------------------


def test_pen_depth_limit_agrees_with_host_cap() -> None:
    assert PEN_DEPTH_LIMIT_UM == DEPTH_CAP_UM
    assert PEN_OVERDEPTH_UM == OVERDEPTH_LIMIT_UM


@given(depth_um=st.integers(PEN_DEPTH_LIMIT_UM + 1, 0xFFFF))
@settings(max_examples=100, deadline=None)
def test_set_target_above_pen_limit_is_nacked_depth_limit_and_changes_nothing(
    depth_um: int,
) -> None:
    b = Bench()
    b.greet()
    b.send(SetTarget(800, 1000, 2))
    assert status(b.send(SetTarget(depth_um, 1000, 3))) is Nack.DEPTH_LIMIT
    b.run(5000)
    t = b.telemetry()
    assert (t.depth_cmd_um, t.zone_id, t.state) == (800, 2, PenState.READY)


def test_set_target_above_mechanical_max_is_nacked_depth_limit() -> None:
    b = Bench(replace(PenParams(), max_depth_um=1000))
    b.greet()
    assert status(b.send(SetTarget(1050, 1000, 1))) is Nack.DEPTH_LIMIT
    assert status(b.send(SetTarget(1000, 1000, 1))) is Nack.OK


def test_set_target_at_pen_limit_is_accepted() -> None:
    b = Bench()
    b.greet()
    assert status(b.send(SetTarget(PEN_DEPTH_LIMIT_UM, 1000, 1))) is Nack.OK


@pytest.mark.parametrize("rate_dhz", [0, 499, 1501, 0xFFFF])
def test_set_target_rate_outside_device_range_is_nacked_rate_limit(rate_dhz: int) -> None:
    b = Bench()
    b.greet()
    assert status(b.send(SetTarget(1000, rate_dhz, 1))) is Nack.RATE_LIMIT
    assert b.fw.state is PenState.IDLE and b.fw.target is None


def test_set_target_moves_idle_to_ready_and_telemetry_reports_it() -> None:
    b = Bench()
    b.greet()
    assert status(b.send(SetTarget(900, 1200, 4))) is Nack.OK
    b.run(5000)
    t = b.telemetry()
    assert (t.state, t.depth_cmd_um, t.zone_id, t.depth_meas_um) == (PenState.READY, 900, 4, 0)


def test_new_set_target_while_stamping_takes_effect_from_the_next_stroke() -> None:
    b = Bench()
    b.stamping(depth_um=1000)
    strokes = b.physics.strokes
    assert status(b.send(SetTarget(600, 1000, 2))) is Nack.OK
    assert b.fw.state is PenState.STAMPING
    while b.physics.strokes == strokes:
        b.run(1000)
    assert abs(b.physics.depth_meas_um - 600) <= 10  # shallower: at once, next stroke
    assert status(b.send(SetTarget(1400, 1000, 2))) is Nack.OK
    strokes = b.physics.strokes
    while b.physics.strokes == strokes:
        b.run(1000)
    assert 600 < b.physics.depth_meas_um < 1400  # deeper: settles over a few strokes
    b.run(200_000)
    assert abs(b.telemetry().depth_meas_um - 1400) <= 20


# --- START / STOP --------------------------------------------------------------------


def test_start_without_target_is_nacked_bad_state() -> None:
    b = Bench()
    b.greet()
    assert status(b.send(Start())) is Nack.BAD_STATE
    assert b.fw.state is PenState.IDLE


def test_start_in_fault_is_nacked_fault_active() -> None:
    b = Bench()
    b.greet()
    b.send(SetTarget(1000, 1000, 1))
    b.send(Estop(2))
    assert status(b.send(Start())) is Nack.FAULT_ACTIVE


def test_start_without_cartridge_is_nacked_cartridge() -> None:
    b = Bench(replace(PenParams(), cartridge_id=0))
    info = b.greet()
    assert info.cartridge_id == 0
    b.send(SetTarget(1000, 1000, 1))
    assert status(b.send(Start())) is Nack.CARTRIDGE
    assert b.fw.state is PenState.READY


def test_start_stamps_at_the_target_rate_and_depth_is_measured() -> None:
    b = Bench()
    b.stamping(depth_um=1200, rate_dhz=1000)
    b.run(1_000_000)
    t = b.telemetry()
    assert t.state == PenState.STAMPING and t.rate_meas_dhz == 1000
    assert abs(t.depth_meas_um - 1200) <= 150
    assert 115 <= t.stamp_count <= 135  # 100 strokes/s for ~1.3 s, after the ramp
    metas = {x.depth_meas_um for x in b.of(Telemetry)[-200:]}
    assert len(metas) > 3  # a measurement, with noise, not a copy of the command


def test_stop_returns_to_ready_and_measured_depth_to_zero() -> None:
    b = Bench()
    b.stamping()
    assert status(b.send(Stop())) is Nack.OK
    b.run(10_000)
    t = b.telemetry()
    assert (t.state, t.depth_meas_um, t.rate_meas_dhz) == (PenState.READY, 0, 0)
    strokes = t.stamp_count
    b.run(200_000)
    assert b.telemetry().stamp_count == strokes


# --- repeats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [SetTarget(1000, 1000, 2), Start(), Stop(), Estop(9), ClearFault(), Configure(800, 200)],
    ids=lambda m: type(m).__name__,
)
def test_repeated_command_has_the_effect_of_one_and_every_repeat_is_acked(msg: Message) -> None:
    b = Bench()
    b.greet()
    if not isinstance(msg, SetTarget):
        b.send(SetTarget(1000, 1000, 2))
    if isinstance(msg, ClearFault):
        b.send(Estop(1))
    first = b.send(msg)
    state, flags, faults = b.fw.state, b.fw.fault_flags, len(b.of(Fault))
    again = [b.send(msg) for _ in range(3)]
    assert all(a is not None for a in [first, *again])
    assert [a.status for a in again] == [first.status] * 3  # type: ignore[union-attr]
    assert (b.fw.state, b.fw.fault_flags, len(b.of(Fault))) == (state, flags, faults)


# --- faults -----------------------------------------------------------------------------


def test_estop_latches_fault_retracts_and_sends_fault_once() -> None:
    b = Bench()
    b.stamping()
    assert status(b.send(Estop(7))) is Nack.OK
    faults = b.of(Fault)
    assert len(faults) == 1 and faults[0].code == FaultBit.ESTOP and faults[0].detail == 7
    b.run(10_000)
    t = b.telemetry()
    assert (t.state, t.rate_meas_dhz, t.depth_meas_um) == (PenState.FAULT, 0, 0)
    assert t.fault_flags == 1 << FaultBit.ESTOP


def test_watchdog_latches_after_default_100_ms_of_silence() -> None:
    b = Bench()
    b.stamping()
    mark = b.now_us
    b.run(99_000, heartbeat_us=None)
    assert b.fw.state is PenState.STAMPING
    b.run(3000, heartbeat_us=None)
    faults = b.of(Fault, since_us=mark)
    assert [f.code for f in faults] == [FaultBit.WATCHDOG]
    assert b.state() is PenState.FAULT


def test_watchdog_uses_the_configured_period() -> None:
    b = Bench()
    b.greet()
    b.send(Configure(500, 300))
    b.run(290_000, heartbeat_us=None)
    assert not b.of(Fault)
    b.run(20_000, heartbeat_us=None)
    assert b.of(Fault)[0].code == FaultBit.WATCHDOG


def test_watchdog_is_not_armed_before_the_first_hello() -> None:
    b = Bench()
    b.run(1_000_000, heartbeat_us=None)
    assert b.fw.state is PenState.BOOT and b.fw.fault_flags == 0


def test_any_valid_host_frame_feeds_the_watchdog() -> None:
    b = Bench()
    b.greet()
    b.run(5_000_000, heartbeat_us=90_000)
    assert b.fw.fault_flags == 0
    for _ in range(20):  # unknown types are valid frames too
        b.send_raw(encode_raw(0x30, b"", b.seq, 0))
        b.run(90_000, heartbeat_us=None)
    assert b.fw.fault_flags == 0


def test_clear_fault_returns_to_ready_with_a_target_and_needs_a_new_start() -> None:
    b = Bench()
    b.stamping()
    b.send(Estop(1))
    assert status(b.send(ClearFault())) is Nack.OK
    assert b.fw.state is PenState.READY and b.fw.fault_flags == 0
    b.run(100_000)
    assert b.telemetry().rate_meas_dhz == 0


def test_clear_fault_without_a_target_returns_to_idle() -> None:
    b = Bench()
    b.greet()
    b.send(Estop(1))
    assert status(b.send(ClearFault())) is Nack.OK
    assert b.fw.state is PenState.IDLE


def test_clear_fault_is_nacked_fault_active_while_low_battery_persists() -> None:
    b = Bench()
    b.stamping()
    b.physics.battery_uv = 3200_000.0
    b.run(2000)
    assert b.of(Fault)[-1].code == FaultBit.LOW_BATTERY
    assert status(b.send(ClearFault())) is Nack.FAULT_ACTIVE
    assert b.fw.state is PenState.FAULT
    b.physics.battery_uv = 3900_000.0  # charged
    assert status(b.send(ClearFault())) is Nack.OK


def test_cartridge_removed_while_stamping_latches_cartridge_and_clear_waits_for_a_new_one() -> None:
    b = Bench()
    b.stamping()
    b.fw.remove_cartridge(b.now_us)
    b.run(1000)
    assert [e.event for e in b.of(Event)] == [PenEvent.CARTRIDGE_REMOVED]
    assert b.of(Fault)[-1].code == FaultBit.CARTRIDGE
    assert status(b.send(ClearFault())) is Nack.FAULT_ACTIVE
    b.fw.insert_cartridge(0x1111, 0, b.now_us)
    assert status(b.send(ClearFault())) is Nack.OK


def test_overdepth_latches_when_measured_exceeds_command_plus_100() -> None:
    b = Bench()
    b.stamping(depth_um=1000)
    b.physics.extra_target_um, b.physics.extra_ramp_um = 200.0, 20.0
    b.run(300_000)
    f = b.of(Fault)[-1]
    assert f.code == FaultBit.OVERDEPTH and 1100 < f.detail <= 1135
    assert b.fw.state is PenState.FAULT


def test_overdepth_latches_when_measured_exceeds_1550_even_within_command_margin() -> None:
    b = Bench()
    b.stamping(depth_um=PEN_DEPTH_LIMIT_UM)
    b.physics.extra_target_um, b.physics.extra_ramp_um = 90.0, 10.0
    b.run(300_000)
    f = b.of(Fault)[-1]
    assert f.code == FaultBit.OVERDEPTH and f.detail > PEN_OVERDEPTH_UM


def test_stall_latches_when_rate_stays_under_half_the_target_for_50_ms() -> None:
    b = Bench()
    b.stamping(rate_dhz=1000)
    b.physics.load_factor = 0.3
    mark = b.now_us
    b.run(200_000)
    f = b.of(Fault)[-1]
    t_fault = next(t for t, m in b.got if isinstance(m, Fault))
    assert f.code == FaultBit.STALL and f.detail < 500
    assert 50_000 <= t_fault - mark <= 120_000


def test_stall_timer_does_not_outlive_the_stamping_it_timed() -> None:
    # START→STOP inside the motor's spin-up, then START again: the pen is not stalled.
    b = Bench()
    b.greet()
    assert status(b.send(SetTarget(1000, 1000, 2))) is Nack.OK
    for _ in range(4):
        assert status(b.send(Start())) is Nack.OK
        b.run(5_000)
        assert status(b.send(Stop())) is Nack.OK
        b.run(60_000)
    assert status(b.send(Start())) is Nack.OK
    b.run(30_000)
    assert b.of(Fault) == [] and b.state() is PenState.STAMPING


def test_watchdog_latches_after_silence_but_not_for_frames_already_in_hand() -> None:
    b = Bench()
    b.stamping()
    b.now_us += 150_000  # the simulator ran late; a heartbeat waited in its buffer
    b.send(Heartbeat(b.now_us // 1000))
    assert b.state() is PenState.STAMPING and not b.of(Fault)
    b.run(150_000, heartbeat_us=None)  # real silence from the host
    assert b.state() is PenState.FAULT and b.of(Fault)[-1].code == FaultBit.WATCHDOG


def test_stuck_depth_sensor_latches_sensor() -> None:
    b = Bench()
    b.stamping()
    b.physics.sensor_stuck = True
    b.run(300_000)
    assert b.of(Fault)[-1].code == FaultBit.SENSOR


def test_overtemperature_latches_overtemp_and_clear_waits_for_cooling() -> None:
    b = Bench()
    b.stamping()
    b.physics.temp_c = 80.0
    b.run(2000)
    assert b.of(Fault)[-1].code == FaultBit.OVERTEMP
    assert status(b.send(ClearFault())) is Nack.FAULT_ACTIVE


def test_a_second_fault_while_in_fault_adds_its_flag_and_sends_fault_again() -> None:
    b = Bench()
    b.stamping()
    b.send(Estop(1))
    b.run(200_000, heartbeat_us=None)
    codes = [f.code for f in b.of(Fault)]
    assert codes == [FaultBit.ESTOP, FaultBit.WATCHDOG]
    assert b.of(Fault)[-1].fault_flags == (1 << FaultBit.ESTOP) | (1 << FaultBit.WATCHDOG)


def test_link_fault_latches_on_more_than_10_bad_frames_within_100_ms() -> None:
    b = Bench()
    b.greet()
    bad = bytearray(encode(Heartbeat(1), 5))
    bad[3] ^= 0xFF
    for _ in range(10):
        b.send_raw(bytes(bad))
    assert b.fw.fault_flags == 0
    b.send_raw(bytes(bad))
    assert b.of(Fault)[-1].code == FaultBit.LINK


def test_ten_bad_frames_spread_over_more_than_100_ms_do_not_latch_link() -> None:
    b = Bench()
    b.greet()
    bad = bytearray(encode(Heartbeat(1), 5))
    bad[3] ^= 0xFF
    for _ in range(30):
        b.send_raw(bytes(bad))
        b.run(15_000)
    assert b.fw.fault_flags == 0


# --- ACKs and unknown types ----------------------------------------------------------


def test_unknown_type_with_ack_req_is_nacked_unknown_type() -> None:
    b = Bench()
    b.greet()
    ack = b.send_raw(encode_raw(0x2A, b"\x01\x02", 40, FLAG_ACK_REQ), 40)
    assert ack is not None and (ack.acked_type, ack.status) == (0x2A, Nack.UNKNOWN_TYPE)


def test_unknown_type_without_ack_req_is_ignored() -> None:
    b = Bench()
    b.greet()
    n = len(b.got)
    b.send_raw(encode_raw(0x2A, b"", 41, 0), 41)
    assert b.got[n:] == []


def test_every_ack_names_the_seq_and_type_it_answers() -> None:
    b = Bench()
    b.greet()
    b.seq = 200
    ack = b.send(SetTarget(1000, 1000, 1))
    assert ack is not None and (ack.acked_seq, ack.acked_type) == (200, 0x04)


def test_pen_seq_counts_up_by_one_per_frame_and_wraps() -> None:
    b = Bench()
    b.greet()
    seqs: list[int] = []
    dec = Decoder()
    b.fw.decoder  # noqa: B018 - the pen's own decoder is not what we read here
    for _ in range(300):
        b.now_us += 2000
        seqs += [f.seq for f in dec.feed(b.fw.tick(b.now_us))]
        b.send(Heartbeat(1))
    assert all((b_ - a) & 0xFF == 1 for a, b_ in itertools.pairwise(seqs))
    assert 0 in seqs[1:]


# --- robustness -----------------------------------------------------------------------


@given(chunks=st.lists(st.binary(max_size=80), max_size=40))
@settings(max_examples=150, deadline=None)
def test_nothing_the_host_sends_crashes_or_stalls_the_pen(chunks: list[bytes]) -> None:
    b = Bench()
    b.greet()
    for chunk in chunks:
        b.send_raw(chunk)
        b.now_us += 1000
    b.send_raw(b"\x00")  # whatever was left unfinished ends here
    b.send(Hello(1, 5))
    assert b.of(DeviceInfo)[-1].nonce == 5


@given(cuts=st.lists(st.integers(0, 60), max_size=8))
@settings(max_examples=100, deadline=None)
def test_host_bytes_in_any_chunking_give_the_same_answers(cuts: list[int]) -> None:
    stream = (
        encode(Hello(1, 3), 0)
        + encode(SetTarget(1000, 1000, 1), 1)
        + encode(Start(), 2)
        + encode(SetTarget(2000, 1000, 1), 3)
    )
    a, c = Bench(), Bench()
    a.send_raw(stream)
    pos = 0
    for cut in sorted(set(cuts)):
        c.send_raw(stream[pos:cut])
        pos = max(pos, cut)
    c.send_raw(stream[pos:])
    assert [m for _, m in a.got] == [m for _, m in c.got]


def test_transition_table_covers_every_state_and_trigger() -> None:
    assert set(TRANSITIONS) == {(s, t) for s in PenState for t in Trigger}
    assert all(TRANSITIONS[(s, Trigger.LATCH)] is PenState.FAULT for s in PenState)
