"""What the CLI does with an error that is not a DevicectlError: a bug in devicectl
(its own fault, or an input it should have refused with a sentence and did not).

The person at the terminal gets one sentence saying so, and where the details are
kept; the traceback goes to a file for the developers, not onto the technician's
screen. The file is under $XDG_STATE_HOME/devicectl/crashes (else
~/.local/state/devicectl/crashes), else the temporary directory; where neither can
be written, the traceback is printed after the sentence: nothing is lost.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from devicectl.plain import escape_controls

#: The exit code of a bug in devicectl (sysexits' EX_SOFTWARE): distinct from every
#: outcome of a session (0-4) and from a refusal.
EXIT_BUG: Final = 70
#: The most of the exception's own text the sentence carries.
_TEXT_MAX: Final = 200


def crash_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "devicectl" / "crashes"


def keep(exc: BaseException, argv: list[str]) -> Path | None:
    """The traceback of `exc` and the command line, in a new file; None if no place
    could be written."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    text = (f"devicectl {' '.join(argv)}\n{datetime.now(UTC).isoformat()}\n\n"
            + "".join(traceback.format_exception(exc)))
    for folder in (crash_dir(), Path(tempfile.gettempdir()) / "devicectl-crashes"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{stamp}-{os.getpid()}.txt"
            # owner-only, as the records: it holds the command line (the patient's
            # reference) and the traceback's text; backslashreplace: argv's bytes that
            # are not UTF-8 (surrogate escapes) as \udcff
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return None


def report(exc: BaseException, argv: list[str]) -> int:
    """One sentence on stderr (the details kept, or printed where nothing could be
    written); returns EXIT_BUG."""
    where = keep(exc, argv)
    what = escape_controls(f"{type(exc).__name__}: {exc}").encode(
        "utf-8", "backslashreplace").decode("utf-8")  # printable on any stderr
    if len(what) > _TEXT_MAX:
        what = what[: _TEXT_MAX - 1] + "…"
    kept = (f"the details are in {where}" if where is not None
            else "the details follow (no file could be written)")
    print(f"devicectl: unexpected error, a bug in devicectl ({what}); {kept}: please "
          "send them to its developers", file=sys.stderr)
    if where is None:
        traceback.print_exception(exc, file=sys.stderr)
    return EXIT_BUG


__all__ = ["EXIT_BUG", "crash_dir", "keep", "report"]
