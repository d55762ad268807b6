"""How `devicectl run` answers Ctrl-C, SIGTERM and SIGHUP, wherever they land.

The handlers are installed before anything is opened and kept until the answer is
printed. They never raise in the middle of the CLI's work (a record half-written, a
pen process begun but not yet watched, the end's note): they note the first signal,
and once the pen process runs the session they stop it through its door. `run` asks
`signal` at its steps: before the pen starts the session is refused (exit 1), after it
the session ends aborted (exit 2) as any stop does. Only a prompt (`ask`) is broken
by a signal, and its caller takes that as no answer.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from devicectl.snapshot import Watched

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Prompting:
    """True while the main thread waits at a prompt, which a signal must break."""

    active = False


class Interrupts:
    """The first signal's name (None: none yet), and the session it stops once there."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._session: Watched | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._handler) for sig in _SIGNALS}

    def restore(self) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous = {}

    def watch(self, session: Watched) -> None:
        """From now on a signal stops `session`; one that came before stops it now."""
        self._session = session
        if self.signal is not None:
            _stop(session, self.signal)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = name
        if _Prompting.active:  # the prompt's "no answer" says what happens (a refusal at
            raise KeyboardInterrupt  # the start question): a stop too would race with it
        if self._session is not None:
            _stop(self._session, name)


def _stop(session: Watched, name: str) -> None:
    # On a thread of its own: a handler runs on the main thread between two of its
    # steps, which may be inside a send to the pen process (its lock held: a second
    # Ctrl-C while the first one's stop was being sent), where taking the lock
    # again would wait for ever. The stop goes as soon as that send is over.
    threading.Thread(target=session.request_stop, name="signal-stop", daemon=True,
                     args=(f"stopped by {name}",)).start()


def ask(read: Callable[[], str]) -> str | None:
    """`read()`'s line, or None when a signal (or the end of input) broke the wait.
    The flag is set and cleared inside the outer try: a signal between any two of
    these steps still ends here, as no answer."""
    try:
        try:
            _Prompting.active = True
            return read()
        finally:
            _Prompting.active = False
    except (EOFError, KeyboardInterrupt):
        return None
