"""The technician's keys: single keypresses from a terminal, off the inner loop.

A reader thread puts characters on a queue; `KeyMap` turns them into
controller commands, asking for a second key before the ones that need
confirmation (clear fault, abort).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass

from devicectl.transitions import Command


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """The terminal in cbreak mode (keys without Enter), restored on the way out."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class KeyReader:
    """Reads single characters from a terminal on a daemon thread."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.keys: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.closed = threading.Event()  # the terminal went away
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keys", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self.fd, 32)
            except OSError:
                data = b""
            if not data:
                self.closed.set()
                return
            for ch in data.decode(errors="ignore"):
                self.keys.put(ch)


@dataclass
class KeyAction:
    command: Command | None = None
    stop: bool = False  # end the session (abort confirmed)
    prompt: str | None = None  # what to show until the next key


_DIRECT = {
    "p": Command.PAUSE,
    "r": Command.RESUME,
    "s": Command.START,
    "n": Command.NEXT_ZONE,
    "R": Command.RECONNECT,
}


class KeyMap:
    """Keys to commands; `c` and `q` ask first, and only `y` confirms."""

    def __init__(self) -> None:
        self._pending: str | None = None

    def press(self, key: str) -> KeyAction:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if key.lower() != "y":
                return KeyAction(prompt=None)
            if pending == "c":
                return KeyAction(command=Command.CLEAR_FAULT)
            return KeyAction(stop=True)
        if key == "c":
            self._pending = "c"
            return KeyAction(
                prompt="Clear the fault? The cause must be gone. y to confirm, any key to cancel"
            )
        if key == "q":
            self._pending = "q"
            return KeyAction(
                prompt="Abort the session? The pen stops now. y to confirm, any key to cancel"
            )
        return KeyAction(command=_DIRECT.get(key))
