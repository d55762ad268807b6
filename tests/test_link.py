"""Transports: real ports, URLs and pseudo-terminals, their errors as one sentence,
and the in-memory pipe's impairments in virtual and real time."""

from __future__ import annotations

import errno
import threading
import time

import pytest
import serial
from pytest_mock import MockerFixture

from devicectl.errors import LinkError
from devicectl.link import Impairment, SerialTransport, open_pty, open_transport, pipe_pair
from devicectl.protocol import Decoder, Heartbeat, Telemetry, encode

# --- open_transport and its errors -------------------------------------------


def test_loop_url_gives_back_what_was_written() -> None:
    with open_transport("loop://") as port:
        port.write(b"\x01\x02\x00")
        assert port.read(100, 0.5) == b"\x01\x02\x00"
        assert port.read(100, 0.01) == b""
        assert port.name == "loop://"


def test_missing_port_is_a_link_error_naming_it_and_what_to_run() -> None:
    with pytest.raises(
        LinkError, match=r"^port /dev/ttyUSB9 does not exist; run `devicectl ports`"
    ):
        open_transport("/dev/ttyUSB9")


def test_port_opened_twice_is_in_use_by_another_program() -> None:
    with (
        open_pty() as pen,
        open_transport(pen.slave_path),
        pytest.raises(LinkError, match=f"port {pen.slave_path} is in use by another program"),
    ):
        open_transport(pen.slave_path)


def test_port_without_permission_says_to_join_dialout(mocker: MockerFixture) -> None:
    # Root can open anything, so EACCES is simulated at the serial edge only.
    denied = serial.SerialException(errno.EACCES, "could not open port /dev/ttyACM0: denied")
    mocker.patch("devicectl.link.serial.Serial", side_effect=denied)
    with pytest.raises(LinkError, match=r"^no permission to open port /dev/ttyACM0; .*dialout"):
        open_transport("/dev/ttyACM0")


def test_unknown_url_scheme_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="'nosuch://x' is not a port"):
        open_transport("nosuch://x")


def test_unreachable_socket_url_is_a_link_error_naming_it() -> None:
    with pytest.raises(LinkError, match=r"socket://127\.0\.0\.1:1"):
        open_transport("socket://127.0.0.1:1")


def test_port_that_disappears_mid_session_is_a_link_error_naming_it() -> None:
    pen = open_pty()
    host = open_transport(pen.slave_path)
    try:
        pen.write(b"\x01\x00")
        got = host.read(10, 1.0)
        got += host.read(10, 0.2) if len(got) < 2 else b""
        assert got == b"\x01\x00"
        pen.close()  # the pen side vanishes, like a cable pulled
        with pytest.raises(LinkError, match=f"^port {pen.slave_path} disconnected"):
            for _ in range(10):
                host.read(10, 0.05)
    finally:
        host.close()


def test_read_error_from_serial_layer_becomes_disconnected(mocker: MockerFixture) -> None:
    port = open_transport("loop://")
    assert isinstance(port, SerialTransport)
    inner = port._port
    gone = serial.SerialException("device reports readiness to read but returned no data")
    mocker.patch.object(inner, "read", side_effect=gone)
    with pytest.raises(LinkError, match=r"^port loop:// disconnected"):
        port.read(10, 0.01)
    port.close()


def test_pty_carries_frames_both_ways_through_the_codec() -> None:
    with open_pty() as pen, open_transport(pen.slave_path) as host:
        frame = encode(Telemetry(1, 3, 0, 800, 790, 1000, 5, 0, 0, 1, 2, 3900), 9)
        pen.write(frame)
        got = b""
        while not got.endswith(b"\x00"):
            chunk = host.read(100, 1.0)
            assert chunk, "no bytes from the pen within 1 s"
            got += chunk
        assert got == frame  # raw mode: no byte altered by the line discipline
        host.write(encode(Heartbeat(7), 1))
        assert Decoder().feed(pen.read(100, 1.0))[0].message == Heartbeat(7)


def test_a_pty_read_takes_what_is_there_up_to_max_bytes_and_times_out_empty() -> None:
    """The host reads a pty through its descriptor: at most `max_bytes`, the rest
    left for the next read, and b"" when nothing comes within the timeout."""
    with open_pty() as pen, open_transport(pen.slave_path) as host:
        assert isinstance(host, SerialTransport) and host.fd_port is not None
        data = bytes(range(1, 201))
        pen.write(data)
        got = host.read(64, 1.0)
        assert 0 < len(got) <= 64
        while len(got) < len(data):
            more = host.read(64, 1.0)
            assert 0 < len(more) <= 64, "bytes written were not read within 1 s"
            got += more
        assert got == data
        assert host.read(64, 0.01) == b""


def test_a_wake_returns_a_waiting_pty_read_at_once_and_loses_no_byte() -> None:
    """`wake` (a technician's command) ends a read that waits for the pen, with b"";
    bytes the pen sent are read all the same, and a wake after close does nothing."""
    with open_pty() as pen, open_transport(pen.slave_path) as host:
        assert isinstance(host, SerialTransport) and host.fd_port is not None
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(host.read(64, 600.0)))
        reader.start()
        host.wake()
        reader.join(30.0)  # without the wake it would wait its 600 s
        assert not reader.is_alive() and got == [b""]
        assert host.fd_port.wakeups == 1
        host.wake()  # woken while the pen's bytes are there: the bytes come
        pen.write(b"abc")
        data = b""
        while len(data) < 3:
            data += host.read(64, 10.0)
        assert data == b"abc"
    host.wake()  # closed: nothing to wake, no error


def test_a_pty_write_larger_than_the_buffer_arrives_whole_as_the_pen_reads() -> None:
    """A write the port cannot take at once (the far side reads slowly) waits for
    room and sends the rest: every byte arrives, in order."""
    with open_pty() as pen, open_transport(pen.slave_path) as host:
        assert isinstance(host, SerialTransport) and host.fd_port is not None
        data = bytes(i % 251 + 1 for i in range(256 * 1024))  # far past a pty's buffer
        got = bytearray()

        def read_slowly() -> None:
            while len(got) < len(data):
                chunk = pen.read(4096, 10.0)
                if not chunk:
                    return
                got.extend(chunk)
        reader = threading.Thread(target=read_slowly)
        reader.start()
        host.write(data)
        reader.join(60.0)
        assert not reader.is_alive() and bytes(got) == data


def test_a_pen_that_stops_reading_is_a_lost_link_not_a_write_that_waits_for_ever() -> None:
    """The pen's side never reads: once the buffer is full, a write that the port
    takes nothing of for write_stall_s is a LinkError naming the port, and what
    went before is all there, in order."""
    with open_pty() as pen, open_transport(pen.slave_path) as host:
        assert isinstance(host, SerialTransport) and host.fd_port is not None
        host.fd_port.write_stall_s = 0.05
        frame = bytes(range(1, 256)) * 4
        sent = 0
        errors: list[LinkError] = []

        def fill() -> None:
            nonlocal sent
            try:
                for _ in range(100_000):  # a pty's buffer holds a few 10 kB at most
                    host.write(frame)
                    sent += 1
            except LinkError as exc:
                errors.append(exc)
        writer = threading.Thread(target=fill, daemon=True)
        writer.start()
        writer.join(60.0)
        assert not writer.is_alive(), "a write to a port that takes nothing never ended"
        (err,) = errors
        assert str(err).startswith(f"port {pen.slave_path} has taken no data for 50 ms")
        assert sent > 0
        got = b""
        while chunk := pen.read(65536, 0.2):
            got += chunk
        assert got[: sent * len(frame)] == frame * sent
    with pytest.raises(LinkError, match="is closed"):
        host.write(b"\x01\x00")


# --- the in-memory pipe, virtual time ----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_us = 0

    def __call__(self) -> int:
        return self.now_us


def test_virtual_pipe_delivers_after_delay_in_clock_time_without_sleeping() -> None:
    clock = Clock()
    a, b = pipe_pair(clock, impair_a_to_b=Impairment(delay_us=500))
    a.write(b"abc")
    t0 = time.monotonic()
    assert b.read(10, 5.0) == b""  # not due yet, and no waiting for it
    assert time.monotonic() - t0 < 0.5
    clock.now_us = 499
    assert b.read(10, 0) == b""
    clock.now_us = 500
    assert b.read(10, 0) == b"abc"


def test_virtual_pipe_rate_limit_serialises_bytes() -> None:
    clock = Clock()
    a, b = pipe_pair(clock, impair_a_to_b=Impairment(bytes_per_s=1000))  # 1 ms per byte
    a.write(b"0123456789")
    clock.now_us = 3000
    assert b.read(100, 0) == b"012"
    a.write(b"XY")  # queued behind the busy wire
    clock.now_us = 10_000
    assert b.read(100, 0) == b"3456789"
    clock.now_us = 12_000
    assert b.read(100, 0) == b"XY"


def test_virtual_pipe_respects_max_bytes() -> None:
    clock = Clock()
    a, b = pipe_pair(clock)
    a.write(b"0123456789")
    assert b.read(4, 0) == b"0123"
    assert b.read(100, 0) == b"456789"


def test_pipe_directions_are_independent() -> None:
    clock = Clock()
    a, b = pipe_pair(clock, impair_a_to_b=Impairment(drop_rate=1.0))
    a.write(b"lost")
    b.write(b"kept")
    assert b.read(10, 0) == b""
    assert a.read(10, 0) == b"kept"


def test_drop_rate_one_drops_every_byte_and_duplicate_rate_one_doubles_each() -> None:
    clock = Clock()
    a, b = pipe_pair(clock, impair_a_to_b=Impairment(duplicate_rate=1.0))
    a.write(b"ab")
    assert b.read(10, 0) == b"aabb"


def _impaired(seed: int, rate: float) -> bytes:
    clock = Clock()
    a, b = pipe_pair(clock, impair_a_to_b=Impairment(bit_error_rate=rate, seed=seed))
    a.write(bytes(20_000))
    return b.read(100_000, 0)


def test_bit_errors_are_deterministic_for_a_seed_and_near_their_rate() -> None:
    first = _impaired(seed=1, rate=1e-3)
    assert first == _impaired(seed=1, rate=1e-3)
    assert first != _impaired(seed=2, rate=1e-3)
    flipped_bits = sum(bin(byte).count("1") for byte in first)
    assert 100 < flipped_bits < 240  # 160 expected over 160,000 bits


def test_codec_over_a_noisy_pipe_never_yields_a_wrong_message() -> None:
    clock = Clock()
    noise = Impairment(bit_error_rate=2e-4, drop_rate=1e-4, duplicate_rate=1e-4, seed=7)
    pen, host = pipe_pair(clock, impair_a_to_b=noise)
    sent = [Telemetry(i, 3, 0, 800, 790, 1000, i, 0, 0, 1, 2, 3900) for i in range(2000)]
    for i, message in enumerate(sent):
        pen.write(encode(message, i % 256))
    decoder = Decoder()
    got = decoder.feed(host.read(1_000_000, 0))
    by_t = {m.t_us: m for m in sent}
    assert all(f.message == by_t[f.message.t_us] for f in got)  # type: ignore[union-attr]
    assert 1500 < len(got) < 2000 and decoder.bad_frames > 0


def test_closed_peer_is_a_link_error_on_read_and_write() -> None:
    clock = Clock()
    a, b = pipe_pair(clock)
    a.write(b"last")
    a.close()
    assert b.read(10, 0) == b"last"  # what was sent before still arrives
    with pytest.raises(LinkError, match=r"^port pipe:b disconnected"):
        b.read(10, 0)
    with pytest.raises(LinkError, match=r"^port pipe:b disconnected"):
        b.write(b"x")
    with pytest.raises(LinkError, match=r"^port pipe:a is closed"):
        a.read(10, 0)


@pytest.mark.parametrize(
    "kwargs",
    [{"bit_error_rate": 1.5}, {"drop_rate": -0.1}, {"delay_us": -1}, {"bytes_per_s": 0}],
)
def test_impossible_impairment_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Impairment"):
        Impairment(**kwargs)  # type: ignore[arg-type]


# --- the in-memory pipe, real time ---------------------------------------------


def test_real_time_pipe_read_waits_for_bytes_from_another_thread() -> None:
    a, b = pipe_pair()
    timer = threading.Timer(0.05, a.write, args=(b"late",))
    timer.start()
    t0 = time.monotonic()
    assert b.read(10, 2.0) == b"late"
    assert 0.03 < time.monotonic() - t0 < 1.5
    timer.join()


def test_real_time_pipe_read_times_out_empty() -> None:
    _a, b = pipe_pair()
    t0 = time.monotonic()
    assert b.read(10, 0.05) == b""
    assert 0.04 < time.monotonic() - t0 < 1.0


def test_real_time_pipe_delay_is_in_wall_clock_time() -> None:
    """The byte is held back 50 ms of wall-clock time after the write, however busy the
    machine: it is never readable sooner (t0 is taken before the write), and it does come
    (the upper bound only says it is not lost, or delayed in some other unit)."""
    a, b = pipe_pair(impair_a_to_b=Impairment(delay_us=50_000))
    t0 = time.monotonic()
    a.write(b"x")
    got = b""
    while not got:
        got = b.read(10, 0.005)
        arrived = time.monotonic() - t0
        assert got or arrived < 30.0, "the delayed byte never arrived"
    assert got == b"x"
    assert arrived >= 0.049  # the pipe counts whole µs


def test_a_write_is_given_as_long_as_a_silent_pen() -> None:
    """The write stall and the telemetry silence are the one limit: a port that takes
    nothing is lost exactly as soon as a pen that sends nothing."""
    from devicectl.safety import SILENCE_LOST_US, WRITE_STALL_S

    assert round(WRITE_STALL_S * 1_000_000) == SILENCE_LOST_US
