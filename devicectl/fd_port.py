"""A port's descriptor: read, written, and a read that waits woken (POSIX; compiled
by mypyc).

The pen process reads the pen 1000 times a second: each read is one `select` on
the port and on a wake-up pipe, then one `read`, in compiled code (no Python
frame per frame). `wake` (any thread: a technician's command, a stop request)
makes a waiting read return at once, so a command from a view reaches the loop
without waiting for the pen's next frame or the read's timeout.

A write is one `write` when the port takes it all (pyserial's took a `write`, a
`select` and a Python `Timeout` each). A port that takes nothing for
WRITE_STALL_S (a pen that stopped reading: its buffer full) is a lost link, not a
loop blocked for ever.
"""

from __future__ import annotations

import contextlib
import os
import threading
from os import read as os_read
from os import write as os_write
from select import select
from time import monotonic
from typing import Final

from devicectl.errors import LinkError
from devicectl.safety import WRITE_STALL_S

#: What a wake-up pipe's read takes at once: wake-ups that piled up are all drained.
_WAKE_DRAIN: Final = 512


def disconnected(name: str, exc: BaseException) -> LinkError:
    """The sentence for a port that went away."""
    return LinkError(
        f"port {name} disconnected ({exc}); check the cable and the pen's power, then start again"
    )


class FdPort:
    """Reads and writes a port's descriptor (not owned: the port closes it, after
    `close`); `wake` from any thread. The descriptor is non-blocking (pyserial's)."""

    def __init__(self, fd: int, name: str, write_stall_s: float = WRITE_STALL_S) -> None:
        self.fd = fd
        self.name = name
        self.write_stall_s = write_stall_s
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._fds = (fd, self._wake_r)
        #: held by `wake` and `close`: no byte goes to a descriptor number that
        #: was closed and given to another file
        self._lock = threading.RLock()  # a signal handler may stop the session mid-wake
        self._closed = False
        #: wake-ups taken by reads (tests: a command woke the loop)
        self.wakeups = 0

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """What the port has now, or waits up to `timeout_s` for its first byte or a
        `wake` (b"" when none came, or when woken before the port had anything)."""
        try:
            ready = select(self._fds, (), (), timeout_s)[0]
            if not ready:
                return b""
            if self._wake_r in ready:
                self._drain_wake()
                if self.fd not in ready:
                    return b""
            data = os_read(self.fd, max_bytes)
        except BlockingIOError:
            return b""  # readiness that went away: nothing this time
        except OSError as exc:
            raise disconnected(self.name, exc) from None
        except ValueError as exc:  # a closed descriptor (-1) in the select
            raise disconnected(self.name, exc) from None
        if not data:  # ready but empty: the device went away (as pyserial says it)
            raise disconnected(self.name, OSError("the port reports no data"))
        return data

    def write(self, data: bytes) -> None:
        """All of `data`, or LinkError: the port went away, or took nothing for
        `write_stall_s`."""
        if self._closed:
            raise LinkError(f"port {self.name} is closed")
        try:
            sent = os_write(self.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise disconnected(self.name, exc) from None
        if sent < len(data):
            self._write_rest(memoryview(data)[sent:])

    def _write_rest(self, view: memoryview) -> None:
        """The rest of a write the port did not take at once: waits for room, at most
        `write_stall_s` without progress."""
        deadline = monotonic() + self.write_stall_s
        while view:
            try:
                if not select((), (self.fd,), (), max(0.0, deadline - monotonic()))[1]:
                    raise LinkError(
                        f"port {self.name} has taken no data for "
                        f"{self.write_stall_s * 1000:.0f} ms (the pen is not reading); "
                        "check the cable and the pen's power, then start again")
                sent = os_write(self.fd, view)
            except BlockingIOError:
                continue  # room that went away: wait again
            except (OSError, ValueError) as exc:
                raise disconnected(self.name, exc) from None
            if sent:
                view = view[sent:]
                deadline = monotonic() + self.write_stall_s

    def _drain_wake(self) -> None:
        self.wakeups += 1
        with contextlib.suppress(BlockingIOError):
            os_read(self._wake_r, _WAKE_DRAIN)

    def wake(self) -> None:
        """Make a read that waits (or the next one) return at once."""
        with self._lock:
            if self._closed:
                return
            # A full pipe already wakes the reader: nothing is lost by not writing.
            with contextlib.suppress(BlockingIOError):
                os_write(self._wake_w, b"\0")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


__all__ = ["WRITE_STALL_S", "FdPort", "disconnected"]
