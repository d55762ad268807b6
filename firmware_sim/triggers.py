"""When a fault or a misbehaviour starts: a condition on the pen, never a clock.

A trigger holds when the pen reaches a state, or when a host frame of a given
type arrives (the nth one), and then, optionally, once the pen has stamped a
number of strokes since boot. Conditions are what keep a scenario at the same
point of a session on a fast machine and a slow one, in virtual and real time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from devicectl.errors import ProfileError
from devicectl.protocol import BY_NAME, Message, PenState

if TYPE_CHECKING:
    from firmware_sim.firmware import Firmware

#: boot: at once · hello: once greeted · ready / stamping / fault: the pen in that
#: state · received: a host frame of type `message` (the `count`th) · manual: only
#: when a layer above calls `fire` (the fault campaign).
CONDITIONS: Final = ("boot", "hello", "ready", "stamping", "fault", "received", "manual")
_STATES: Final = {"ready": PenState.READY, "stamping": PenState.STAMPING, "fault": PenState.FAULT}
#: Host -> pen messages: the spec's types 0x01-0x3F.
HOST_MESSAGES: Final = tuple(name for name, cls in BY_NAME.items() if cls.TYPE < 0x40)


@dataclass(frozen=True, slots=True)
class Trigger:
    on: str = "boot"
    #: with on=received: the host message's type name (STOP, SET_TARGET, …)
    message: str | None = None
    #: with on=received: the nth frame of that type
    count: int = 1
    #: the condition counts only once the pen has stamped this many strokes since boot
    strokes: int = 0

    def describe(self) -> str:
        what = f"{self.message} #{self.count} received" if self.on == "received" else self.on
        return f"{what}, after {self.strokes} strokes" if self.strokes else what


def trigger_from(raw: Mapping[str, Any], where: str) -> Trigger:
    """The `on`, `message`, `count` and `strokes` keys of a scenario; names what is wrong."""
    on = raw.get("on", "boot")
    if on not in CONDITIONS:
        raise ProfileError(f"{where}: unknown trigger {on!r}; known: {', '.join(CONDITIONS)}.")
    message = raw.get("message")
    if on == "received" and message not in HOST_MESSAGES:
        raise ProfileError(
            f"{where}: trigger 'received' needs a message, one of {', '.join(HOST_MESSAGES)}."
        )
    count, strokes = raw.get("count", 1), raw.get("strokes", 0)
    if not (isinstance(count, int) and count >= 1 and isinstance(strokes, int) and strokes >= 0):
        raise ProfileError(f"{where}: count is a whole number from 1, strokes from 0.")
    return Trigger(on, message if on == "received" else None, count, strokes)


class TriggerWatch:
    """Watches one trigger; `check` says True once, at the moment it fires."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.fired = False
        self._received = 0
        self._seen = False  # the condition held (strokes may still be due)

    @property
    def needs_frames(self) -> bool:
        return self.trigger.on == "received" and not self.fired

    def host_frame(self, message: Message) -> None:
        """A frame from the host, in order, before the pen acts on it."""
        if self.trigger.on == "received" and message.TYPE.name == self.trigger.message:
            self._received += 1
            if self._received >= self.trigger.count:
                self._seen = True

    def check(self, firmware: Firmware) -> bool:
        if self.fired:
            return False
        trig = self.trigger
        if firmware.physics.strokes < trig.strokes:
            if trig.on == "received":
                self._received = 0  # only frames after the strokes count
            return False
        if not self._seen:
            on = trig.on
            state = _STATES.get(on)
            self._seen = (
                on == "boot"
                or (on == "hello" and firmware.greeted)
                or (state is not None and firmware.state is state)
            )
        if self._seen:
            self.fired = True
        return self.fired

    def fire(self) -> None:
        """Fire now, whatever the condition (a `manual` trigger's only way)."""
        self._seen = True
