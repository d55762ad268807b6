"""Byte transports for the pen link: one small interface over real and simulated wires.

`open_transport` opens a serial device path (exclusively), any pyserial URL
(`socket://`, `loop://`, `spy://`) or a pseudo-terminal's path; `open_pty`
serves a new pseudo-terminal; `pipe_pair` joins two ends in memory, in real
or virtual time, with impairments (bit errors, drops, duplicates, delay,
rate limit) that are deterministic for a seed. Every failure is a LinkError
naming the port.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import select
import threading
import time
import tty
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import serial

from devicectl.clock import monotonic_us
from devicectl.errors import LinkError
from devicectl.fd_port import FdPort
from devicectl.fd_port import disconnected as _disconnected

DEFAULT_BAUDRATE: Final = 921600
_BUSY_ERRNOS: Final = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})
_DENIED_ERRNOS: Final = frozenset({errno.EACCES, errno.EPERM})


class Transport(ABC):
    """A byte stream: read with a timeout, write, close. `name` is for messages."""

    name: str

    @abstractmethod
    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Up to `max_bytes` bytes: what is there now, or waits up to `timeout_s`
        for the first byte (b"" when none came)."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of `data`."""

    @abstractmethod
    def close(self) -> None:
        """Release the port; closing twice is harmless."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- serial ports and pyserial URLs ------------------------------------------


class SerialTransport(Transport):
    """A pyserial port: a device path, a pseudo-terminal, or a URL."""

    def __init__(self, port: serial.SerialBase, name: str) -> None:
        self._port = port
        self.name = name
        self._timeout_s: float | None = None
        #: A device or pty on POSIX is read and written through its descriptor: one
        #: select and one read per read, one write per write (compiled:
        #: devicectl/fd_port.py), where pyserial's read takes ~6 system calls and
        #: builds a Timeout, and its write waits for ever on a port that takes
        #: nothing; the pen process reads once per frame, 1000 times a second, and
        #: calls `fd_port.read` itself.
        fd = port.fd if os.name == "posix" and isinstance(port, serial.Serial) else None
        self.fd_port: FdPort | None = FdPort(fd, name) if fd is not None else None

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        fd_port = self.fd_port
        if fd_port is not None:
            return fd_port.read(max_bytes, timeout_s)
        try:
            if timeout_s != self._timeout_s:
                self._port.timeout = timeout_s
                self._timeout_s = timeout_s
            port: Any = self._port  # in_waiting is on every concrete pyserial class
            waiting: int = port.in_waiting
            if waiting:
                return bytes(port.read(min(max_bytes, waiting)))
            # Nothing yet: block for the first byte, then take what came with it.
            data = bytes(port.read(1))
            if data and max_bytes > 1:
                more: int = port.in_waiting
                if more:
                    data += port.read(min(max_bytes - 1, more))
            return data
        except (serial.SerialException, OSError) as exc:
            raise _disconnected(self.name, exc) from None

    def wake(self) -> None:
        """Make a read that waits return at once (a descriptor's; others wait their
        timeout out, as before)."""
        if self.fd_port is not None:
            self.fd_port.wake()

    def write(self, data: bytes) -> None:
        fd_port = self.fd_port
        if fd_port is not None:
            fd_port.write(data)
            return
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise _disconnected(self.name, exc) from None

    def close(self) -> None:
        if self.fd_port is not None:
            self.fd_port.close()
        # A port that is already gone is closed enough.
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()


def _open_error(spec: str, exc: BaseException) -> LinkError:
    """One sentence for why `spec` could not be opened, and what to try."""
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc, serial.SerialException) and exc.args:
        first = exc.args[0]
        code = first if isinstance(first, int) else None
    if code == errno.ENOENT or isinstance(exc, FileNotFoundError):
        return LinkError(f"port {spec} does not exist; run `devicectl ports` to list ports")
    if code in _BUSY_ERRNOS:
        return LinkError(
            f"port {spec} is in use by another program; close it (or the other "
            "devicectl) and try again"
        )
    if code in _DENIED_ERRNOS:
        return LinkError(
            f"no permission to open port {spec}; add yourself to the dialout group "
            "(`sudo usermod -aG dialout $USER`, then log in again)"
        )
    if isinstance(exc, ValueError):
        return LinkError(
            f"{spec!r} is not a port: give a device path like /dev/ttyUSB0 or a "
            "pyserial URL like socket://host:port"
        )
    return LinkError(f"cannot open port {spec} ({exc}); run `devicectl ports` to list ports")


def open_transport(spec: str, *, baudrate: int = DEFAULT_BAUDRATE) -> Transport:
    """Open a device path (exclusively), a pseudo-terminal path or a pyserial URL."""
    try:
        if "://" in spec:
            port: serial.SerialBase = serial.serial_for_url(spec, baudrate=baudrate, timeout=0)
        else:
            port = serial.Serial(spec, baudrate=baudrate, timeout=0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise _open_error(spec, exc) from None
    return SerialTransport(port, spec)


# --- pseudo-terminal ---------------------------------------------------------


class PtyTransport(Transport):
    """The serving end of a new pseudo-terminal; `slave_path` is for the other side.

    The simulator serves the pen here; the host opens `slave_path` with
    `open_transport` like any serial port.
    """

    def __init__(self) -> None:
        self._master, slave = os.openpty()
        tty.setraw(slave)  # bytes through untouched: no echo, no line discipline
        self.slave_path = os.ttyname(slave)
        self._slave = slave  # held open so the pty lives until we close
        self.name = f"pty {self.slave_path}"
        self._closed = False

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        if self._closed:
            raise LinkError(f"port {self.name} is closed")
        try:
            ready, _, _ = select.select([self._master], [], [], max(0.0, timeout_s))
            return os.read(self._master, max_bytes) if ready else b""
        except OSError as exc:
            raise _disconnected(self.name, exc) from None

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkError(f"port {self.name} is closed")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._master, view) :]
        except OSError as exc:
            raise _disconnected(self.name, exc) from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)


def open_pty() -> PtyTransport:
    """A new pseudo-terminal, served from this end."""
    try:
        return PtyTransport()
    except OSError as exc:
        raise LinkError(f"cannot create a pseudo-terminal ({exc})") from None


# --- virtual time ------------------------------------------------------------


class VirtualClock:
    """Simulated time (µs), read by calling it: the clock of a virtual session, which
    its transport moves (firmware_sim.virtual.VirtualWire) and everything else reads."""

    __slots__ = ("now_us",)

    def __init__(self, start_us: int = 0) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us


# --- in-memory pipe ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction of a pipe does to bytes on purpose; rates are per byte.

    `delay_us` is added to every byte's delivery; `bytes_per_s` serialises the
    bytes like a slow wire. Deterministic for a `seed`.
    """

    bit_error_rate: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_us: int = 0
    bytes_per_s: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("bit_error_rate", "drop_rate", "duplicate_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"Impairment.{name} = {rate} must be from 0 to 1")
        if self.delay_us < 0:
            raise ValueError(f"Impairment.delay_us = {self.delay_us} must not be negative")
        if self.bytes_per_s is not None and self.bytes_per_s <= 0:
            raise ValueError(f"Impairment.bytes_per_s = {self.bytes_per_s} must be positive")


class _Sparse:
    """Positions of rare events in a byte stream, drawn by geometric skips.

    Skipping to the next event costs one draw per event, not one per byte, so
    a clean-ish virtual session of megabytes stays fast.
    """

    def __init__(self, rate: float, rng: random.Random) -> None:
        self._rate = rate
        self._rng = rng
        self._gap = self._draw()

    def _draw(self) -> int:
        if self._rate <= 0.0:
            return -1
        if self._rate >= 1.0:
            return 0
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - self._rate))

    def hits(self, length: int, scale: int = 1) -> list[int]:
        """Event positions in the next `length * scale` units, divided by `scale`."""
        out: list[int] = []
        if self._gap < 0:
            return out
        units = length * scale
        pos = self._gap
        while pos < units:
            out.append(pos)
            pos += 1 + self._draw()
        self._gap = pos - units
        return out


@dataclass(slots=True)
class _Segment:
    """Bytes of one write in flight: the first arrives at `first_us`, then one per
    `us_per_byte`; `taken` of them have been read."""

    first_us: float
    us_per_byte: float
    data: bytes
    taken: int = 0


class _Channel:
    """One direction of a pipe: impairs bytes on write, delivers them on time."""

    def __init__(self, clock: Callable[[], int], impairment: Impairment | None) -> None:
        self._clock = clock
        self._imp = impairment or Impairment()
        rng = random.Random(self._imp.seed)
        self._bit_errors = _Sparse(self._imp.bit_error_rate, rng)
        self._drops = _Sparse(self._imp.drop_rate, rng)
        self._dups = _Sparse(self._imp.duplicate_rate, rng)
        self._us_per_byte = 1e6 / self._imp.bytes_per_s if self._imp.bytes_per_s else 0.0
        self._busy_until_us = 0.0
        self._segments: deque[_Segment] = deque()
        self.cond = threading.Condition()
        self.closed = False

    def _impair(self, data: bytes) -> bytes:
        buf = bytearray(data)
        for bit in self._bit_errors.hits(len(buf), 8):
            buf[bit >> 3] ^= 1 << (bit & 7)
        drops = set(self._drops.hits(len(buf)))
        dups = set(self._dups.hits(len(buf)))
        if drops or dups:
            out = bytearray()
            for i, byte in enumerate(buf):
                if i in drops:
                    continue
                out.append(byte)
                if i in dups:
                    out.append(byte)
            buf = out
        return bytes(buf)

    def put(self, data: bytes) -> None:
        with self.cond:
            data = self._impair(data)
            if not data:
                return
            now_us = self._clock()
            start_us = max(float(now_us), self._busy_until_us)
            self._busy_until_us = start_us + self._us_per_byte * len(data)
            first_us = start_us + self._us_per_byte + self._imp.delay_us
            self._segments.append(_Segment(first_us, self._us_per_byte, data))
            self.cond.notify_all()

    def take(self, max_bytes: int) -> bytes:
        """What is deliverable now, up to `max_bytes`. Caller holds `cond`."""
        now_us = self._clock()
        parts: list[bytes] = []
        room = max_bytes
        while self._segments and room > 0:
            seg = self._segments[0]
            if now_us < seg.first_us:
                break
            size = len(seg.data)
            if seg.us_per_byte == 0.0:
                arrived = size
            else:
                arrived = min(size, int((now_us - seg.first_us) / seg.us_per_byte) + 1)
            n = min(arrived - seg.taken, room)
            if n <= 0:
                break
            parts.append(seg.data[seg.taken : seg.taken + n])
            room -= n
            seg.taken += n
            if seg.taken == size:
                self._segments.popleft()
        return b"".join(parts)

    def next_delivery_us(self) -> float | None:
        """When the next undelivered byte arrives. Caller holds `cond`."""
        if not self._segments:
            return None
        seg = self._segments[0]
        return seg.first_us + seg.us_per_byte * seg.taken


class PipeEnd(Transport):
    """One end of an in-memory pipe (see `pipe_pair`)."""

    def __init__(self, name: str, rx: _Channel, tx: _Channel, virtual: bool) -> None:
        self.name = name
        self._rx = rx
        self._tx = tx
        self._virtual = virtual
        self._closed = False

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        if self._closed:
            raise LinkError(f"port {self.name} is closed")
        rx = self._rx
        deadline = time.monotonic() + timeout_s
        with rx.cond:
            while True:
                data = rx.take(max_bytes)
                if data:
                    return data
                if rx.closed and rx.next_delivery_us() is None:
                    raise LinkError(f"port {self.name} disconnected: the other end closed")
                if self._virtual:
                    return b""
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    return b""
                due = rx.next_delivery_us()
                if due is not None:
                    left_s = min(left_s, max(0.0, (due - monotonic_us()) / 1e6))
                rx.cond.wait(left_s)

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkError(f"port {self.name} is closed")
        if self._tx.closed:
            raise LinkError(f"port {self.name} disconnected: the other end closed")
        self._tx.put(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for channel in (self._tx, self._rx):
            with channel.cond:
                channel.closed = True
                channel.cond.notify_all()


def pipe_pair(
    clock: Callable[[], int] | None = None,
    *,
    impair_a_to_b: Impairment | None = None,
    impair_b_to_a: Impairment | None = None,
) -> tuple[Transport, Transport]:
    """Two joined ends, a and b. With `clock` (µs, virtual time) reads never wait:
    they return what has arrived by `clock()`. Without it the pipe runs in real
    time and a read waits up to its timeout."""
    virtual = clock is not None
    tick = clock if clock is not None else monotonic_us
    a_to_b = _Channel(tick, impair_a_to_b)
    b_to_a = _Channel(tick, impair_b_to_a)
    a = PipeEnd("pipe:a", rx=b_to_a, tx=a_to_b, virtual=virtual)
    b = PipeEnd("pipe:b", rx=a_to_b, tx=b_to_a, virtual=virtual)
    return a, b


# --- listing ports -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortInfo:
    """A serial port the system knows, and whether it looks like the pen."""

    device: str
    description: str
    hwid: str
    likely_pen: bool


def list_serial_ports() -> list[PortInfo]:
    """The system's serial ports (pyserial's list_ports), likely pens marked.

    The spec gives the pen no USB ids, only "USB CDC-ACM or UART", so a USB
    CDC-ACM port (ttyACM*, or a usbmodem on macOS) is the likely pen.
    """
    from serial.tools import list_ports  # scans sysfs; only the `ports` command needs it

    out = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        base = os.path.basename(port.device)
        likely = port.vid is not None and ("ACM" in base or "usbmodem" in base)
        out.append(PortInfo(port.device, port.description or "", port.hwid or "", likely))
    return out
