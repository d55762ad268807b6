"""The controller's vocabulary: states, technician commands, events, and the one transition table.

Theory of operation: a session goes CONNECTING → CONFIGURING → per zone
READY → STAMPING ⇄ PAUSED → ZONE_DONE → (CONFIGURING for the next zone) … →
COMPLETE. FAULT is entered from any live state on an ESTOP or a pen fault and
left only through a CLEAR_FAULT the pen accepts (back to CONFIGURING, then
READY: never straight to stamping). LINK_LOST, ABORTED, REFUSED and COMPLETE
end the session; LINK_LOST alone can be left, by RECONNECT. Every state change
goes through `check_transition`, and every command through `COMMAND_STATES`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final


class State(enum.Enum):
    CONNECTING = "connecting"
    CONFIGURING = "configuring"
    READY = "ready"
    STAMPING = "stamping"
    PAUSED = "paused"
    ZONE_DONE = "zone_done"
    COMPLETE = "complete"
    FAULT = "fault"
    ABORTED = "aborted"
    LINK_LOST = "link_lost"
    #: the go/no-go said no (plan, cartridge, interval): terminal, like ABORTED
    REFUSED = "refused"


class Command(enum.Enum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    NEXT_ZONE = "next_zone"
    ABORT = "abort"
    CLEAR_FAULT = "clear_fault"
    RECONNECT = "reconnect"
    #: from the session, not the technician: the record writer cannot commit
    RECORDS_FAILED = "records_failed"


class EventKind(enum.Enum):
    STATE = "state"
    DEVICE = "device"
    PLAN = "plan"
    GO_NO_GO = "go_no_go"
    STOP_REQUESTED = "stop_requested"  # a signal, a closed terminal, the technician's abort
    SENT = "sent"
    NACK = "nack"
    PEN_FAULT = "pen_fault"
    ESTOP = "estop"
    FAULT_CLEARED = "fault_cleared"
    SAFETY_STOP = "safety_stop"
    COVERAGE_HOLD = "coverage_hold"
    RESUMED_STAMPING = "resumed_stamping"
    ZONE_STARTED = "zone_started"
    ZONE_DONE = "zone_done"
    PAUSED = "paused"
    RESUMED = "resumed"
    OVERRIDE = "override"
    WARNING = "warning"
    PEN_EVENT = "pen_event"
    RESEND = "resend"
    LINK_LOST = "link_lost"
    COMMAND_REFUSED = "command_refused"


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """Something for the records and the monitor; `text` is one plain sentence."""

    t_us: int
    kind: EventKind
    text: str
    zone_id: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    #: the record writer commits at once when True
    safety: bool = False


@dataclass(frozen=True, slots=True)
class Output:
    """What one controller call produced: bytes for the pen, events for the rest."""

    data: bytes
    events: tuple[ControlEvent, ...]


#: Why stamping stops when the record writer cannot commit (no treatment without a record).
RECORDS_FAILED_REASON: Final = "records cannot be written"

TERMINAL: Final = frozenset({State.COMPLETE, State.ABORTED, State.REFUSED, State.LINK_LOST})
#: States in which the pen may be carrying a target and the host stays in charge.
LIVE: Final = frozenset(
    {
        State.CONFIGURING,
        State.READY,
        State.STAMPING,
        State.PAUSED,
        State.ZONE_DONE,
        State.FAULT,
    }
)

_S = State
#: The one transition table: from each state, the states it may go to.
TRANSITIONS: Final[Mapping[State, frozenset[State]]] = MappingProxyType(
    {
        _S.CONNECTING: frozenset(
            {_S.CONFIGURING, _S.REFUSED, _S.LINK_LOST, _S.ABORTED, _S.FAULT}
        ),
        _S.CONFIGURING: frozenset(
            {_S.READY, _S.FAULT, _S.REFUSED, _S.LINK_LOST, _S.ABORTED, _S.COMPLETE}
        ),
        _S.READY: frozenset(
            {_S.STAMPING, _S.CONFIGURING, _S.COMPLETE, _S.FAULT, _S.LINK_LOST, _S.ABORTED}
        ),
        _S.STAMPING: frozenset(
            {_S.PAUSED, _S.ZONE_DONE, _S.COMPLETE, _S.FAULT, _S.LINK_LOST, _S.ABORTED}
        ),
        _S.PAUSED: frozenset(
            {_S.STAMPING, _S.CONFIGURING, _S.COMPLETE, _S.FAULT, _S.LINK_LOST, _S.ABORTED}
        ),
        _S.ZONE_DONE: frozenset(
            {_S.CONFIGURING, _S.COMPLETE, _S.FAULT, _S.LINK_LOST, _S.ABORTED}
        ),
        _S.FAULT: frozenset({_S.CONFIGURING, _S.LINK_LOST, _S.ABORTED}),
        _S.LINK_LOST: frozenset({_S.CONNECTING, _S.ABORTED}),
        _S.COMPLETE: frozenset(),
        _S.ABORTED: frozenset(),
        _S.REFUSED: frozenset(),
    }
)

#: The states in which each technician command makes sense.
COMMAND_STATES: Final[Mapping[Command, frozenset[State]]] = MappingProxyType(
    {
        Command.START: frozenset({_S.READY}),
        Command.PAUSE: frozenset({_S.STAMPING}),
        Command.RESUME: frozenset({_S.PAUSED}),
        # Only a zone that reached its target moves on: a session is complete only
        # when every zone is. Skipping a zone is an abort, recorded as one.
        Command.NEXT_ZONE: frozenset({_S.ZONE_DONE}),
        Command.ABORT: frozenset(
            {
                _S.CONNECTING,
                _S.CONFIGURING,
                _S.READY,
                _S.STAMPING,
                _S.PAUSED,
                _S.ZONE_DONE,
                _S.FAULT,
                _S.LINK_LOST,
            }
        ),
        Command.CLEAR_FAULT: frozenset({_S.FAULT}),
        Command.RECONNECT: frozenset({_S.LINK_LOST}),
        Command.RECORDS_FAILED: frozenset(TRANSITIONS) - frozenset(
            {_S.COMPLETE, _S.ABORTED, _S.REFUSED}
        ),
    }
)

#: Why a command is refused in a state, in the technician's words.
_REFUSAL_HINT: Final[Mapping[Command, str]] = MappingProxyType(
    {
        Command.START: "START is for a zone that is ready (target set, not stamping)",
        Command.PAUSE: "PAUSE only applies while stamping",
        Command.RESUME: "RESUME only applies to a paused zone; use START for a ready one",
        Command.NEXT_ZONE: "NEXT_ZONE is for a zone that reached its target; "
        "to leave a zone unfinished, abort the session",
        Command.ABORT: "the session has already ended",
        Command.CLEAR_FAULT: "there is no fault to clear",
        Command.RECONNECT: "RECONNECT only applies after the link was lost",
        Command.RECORDS_FAILED: "the session has already ended",
    }
)


def check_transition(old: State, new: State) -> None:
    """Raise AssertionError for a transition the table does not allow (a bug)."""
    if new not in TRANSITIONS[old]:
        raise AssertionError(f"controller bug: no transition {old.name} -> {new.name}")


def command_refusal(cmd: Command, state: State) -> str | None:
    """Why `cmd` makes no sense in `state`, or None when it does."""
    if state in COMMAND_STATES[cmd]:
        return None
    return f"{cmd.name} refused in state {state.name}: {_REFUSAL_HINT[cmd]}"
