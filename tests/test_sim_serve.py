"""`python -m firmware_sim serve` in real time: a pseudo-terminal opened with pyserial."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import serial

from devicectl.protocol import (
    Ack,
    Configure,
    Decoder,
    DeviceInfo,
    Fault,
    FaultBit,
    Heartbeat,
    Hello,
    Message,
    Nack,
    PenState,
    SetTarget,
    Start,
    Telemetry,
    encode,
)

pytestmark = pytest.mark.realtime


def test_serve_handshake_stamping_second_and_watchdog_expiry_over_a_real_port() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "serve", "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[0] == "PORT"
        port = serial.Serial(first[1], timeout=0.01)
        dec = Decoder()
        got: list[Message] = []
        seq = 0

        def send(msg: Message) -> None:
            nonlocal seq
            port.write(encode(msg, seq))
            seq = (seq + 1) & 0xFF

        def pump_until(done: Callable[[], bool], heartbeat: bool, within_s: float = 20) -> bool:
            """Read (and feed the watchdog) until `done`: a condition, not a duration."""
            end = time.monotonic() + within_s
            while not done() and time.monotonic() < end:
                if heartbeat:
                    send(Heartbeat(int(time.monotonic() * 1000) & 0xFFFF_FFFF))
                got.extend(f.message for f in dec.feed(port.read(4096)))  # type: ignore[misc]
            return done()

        def stamping() -> list[Telemetry]:
            return [m for m in got if isinstance(m, Telemetry) and m.state == PenState.STAMPING]

        send(Hello(1, 0xC0DE))
        assert pump_until(lambda: any(isinstance(m, DeviceInfo) and m.nonce == 0xC0DE
                                      for m in got), heartbeat=True)
        send(Configure(500, 100))
        send(SetTarget(1000, 1000, 2))
        send(Start())
        assert pump_until(lambda: len(stamping()) > 300, heartbeat=True)
        acks = [m for m in got if isinstance(m, Ack)]
        assert [a.status for a in acks] == [Nack.OK] * 3
        last = stamping()[-1]
        assert abs(last.depth_meas_um - 1000) <= 150 and last.stamp_count > 50
        # No heartbeat from here: the pen's own watchdog must fault it.
        assert pump_until(lambda: any(isinstance(m, Fault) for m in got), heartbeat=False)
        faults = [m for m in got if isinstance(m, Fault)]
        assert faults[0].code == FaultBit.WATCHDOG
        port.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def test_serve_a_misbehaving_pen_and_name_an_unknown_one() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "serve", "--misbehave", "wrong-protocol"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[0] == "PORT"
        with serial.Serial(first[1], timeout=0.05) as port:
            port.write(encode(Hello(1, 0xC0DE), 0))
            dec = Decoder()
            deadline = time.monotonic() + 2
            infos: list[DeviceInfo] = []
            while not infos and time.monotonic() < deadline:
                infos = [f.message for f in dec.feed(port.read(4096))  # type: ignore[misc]
                         if isinstance(f.message, DeviceInfo)]
        assert infos and infos[0].proto == 2
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    bad = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "serve", "--misbehave", "sulks"],
        capture_output=True, text=True, timeout=30,
    )
    assert bad.returncode != 0 and "unknown misbehaving pen 'sulks'" in bad.stderr
    assert "Traceback" not in bad.stderr
