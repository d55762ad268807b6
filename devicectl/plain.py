"""Text from outside (the pen, a profile, a patient reference, the records) made
safe to print: never read as rich markup, control characters escaped.

A pen's frame body `[/]` or a patient reference `[bold]` is shown as written;
an escape sequence or a newline in it cannot move the cursor or forge a line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # rich loads with the first view, not with the CLI (cli.py uses escape_controls)
    from rich.text import Text

#: C0, DEL and C1: everything that is not printable text on a terminal.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def escape_controls(text: object) -> str:
    """`text` as a string with each control character written as an escape (\\n, \\x1b)."""
    return _CONTROL.sub(_escape, str(text))


def control_at(text: str) -> int | None:
    """Where the first control character in `text` is, or None."""
    found = _CONTROL.search(text)
    return None if found is None else found.start()


def plain(text: object, style: str = "") -> Text:
    """A rich Text of `text`, controls escaped: markup in it is shown, never applied."""
    from rich.text import Text

    return Text(escape_controls(text), style=style)
