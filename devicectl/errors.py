"""The one error hierarchy of devicectl.

A `DevicectlError` is something a person can act on: its message is one
sentence naming the file, line, field or port and what to do. The CLI prints
it and exits non-zero; anything else escaping is a bug in devicectl.
"""

from __future__ import annotations


class DevicectlError(Exception):
    """Base of every error a user may see. `exit_code` is what the CLI returns."""

    exit_code: int = 1


class ProtocolError(DevicectlError):
    """A message cannot be put on the wire as asked (a field out of its range)."""


class LinkError(DevicectlError):
    """The byte transport failed: a port missing, busy, forbidden or gone."""

    exit_code = 4


class ProfileError(DevicectlError):
    """A treatment profile or the zone map is invalid; `problems` lists each one."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class SafetyError(DevicectlError):
    """A command would break a safety rule; it was refused, never adjusted."""


class RefusedError(DevicectlError):
    """A session was refused before it started (cartridge, interval, pen, plan)."""


class StoreError(DevicectlError):
    """The session records cannot be read or written."""
