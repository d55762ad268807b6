"""Starting a child process that a terminal's signals must not kill as it boots.

A terminal's Ctrl-C (and SIGHUP) reaches the whole process group: the pen process
and the view process too, as soon as they exist, and they ignore them only once their
modules are imported (a second or so). Blocked in the starting thread meanwhile, the
signals stay blocked in the child from its birth (the mask passes through fork and
exec), and the parent gets its own as soon as the child is started.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from multiprocessing import resource_tracker


@contextlib.contextmanager
def terminal_signals_blocked() -> Iterator[None]:
    """Around `Process.start()`: SIGINT and SIGHUP blocked in this thread, then as before."""
    # A spawned start runs multiprocessing's resource tracker first, whose first start
    # unblocks SIGINT in this thread when done (resource_tracker.ensure_running): started
    # now, before the block, a start inside finds it running and leaves the mask alone.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
