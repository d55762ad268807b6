"""Which recorded sessions are running now: a lock held by the process that runs one.

A session without an outcome is either running or interrupted (its process
died). The records cannot tell them apart, so `devicectl run` holds an
exclusive lock (flock) on `<db>.running/<session id>.lock` for as long as it
runs the session. The operating system drops the lock when the process ends,
however it ends (a crash, SIGKILL), so no stale "running" survives it, and
there is no clock or heartbeat to tune. Readers ask with a shared, non-blocking
lock; they need no write access to the records.

A session found running cannot be resumed by another process.

On the clinic's PostgreSQL the lock is the server's: a session advisory lock
(store_pg.RunningLockPg), which every room and the clinic view can see.
"""

from __future__ import annotations

import contextlib
import fcntl  # POSIX, as the serial ports and pseudo-terminals are
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devicectl.errors import RefusedError

if TYPE_CHECKING:
    from devicectl import store_pg

#: A writer retries this long when a reader holds the lock for a moment (s).
_ACQUIRE_S = 1.0


def lock_path(db_path: Path, session_id: int) -> Path:
    return db_path.with_name(db_path.name + ".running") / f"{session_id}.lock"


def is_running(db_path: Path | str, session_id: int) -> bool:
    """True while a process holds the session's lock."""
    if isinstance(db_path, str):
        from devicectl import store_pg

        return store_pg.is_running(db_path, session_id)
    try:
        fd = os.open(lock_path(db_path, session_id), os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody runs it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a lock we got
    return False


def holder_pid(db_path: Path, session_id: int) -> int | None:
    """The pid the running process wrote into its lock file, if it can be read."""
    with contextlib.suppress(OSError, ValueError):
        return int(lock_path(db_path, session_id).read_text(encoding="ascii").strip())
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def running_lock(db: Path | str, session_id: int) -> RunningLock | store_pg.RunningLockPg:
    """The running lock for records in a file (a lock file) or on a server."""
    if isinstance(db, str):
        from devicectl import store_pg

        return store_pg.RunningLockPg(db, session_id)
    return RunningLock(db, session_id)


class RunningLock:
    """Held by the process that runs a session, from before the pen is started to the end."""

    def __init__(self, db_path: Path, session_id: int) -> None:
        self.path = lock_path(db_path, session_id)
        self.session_id = session_id
        self._fd: int | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + _ACQUIRE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, self.path):
                    break
                # The last holder removed the file as we opened it: lock the new one.
                os.close(fd)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    pid = holder_pid(db_path, session_id)
                    raise RefusedError(
                        f"session {session_id} is running in another process"
                        f"{f' (pid {pid})' if pid else ''}; it cannot be run twice"
                    ) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # the lock goes with the descriptor
        self._fd = None

    def __enter__(self) -> RunningLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
