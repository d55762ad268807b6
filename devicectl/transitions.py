"""The controller's vocabulary: states, technician commands, events, and the one transition table.

Theory of operation: a session goes CONNECTING → CONFIGURING → per zone
READY → STAMPING ⇄ PAUSED → ZONE_DONE → (CONFIGURING for the next zone) … →
COMPLETE. FAULT is entered from any live state on an ESTOP or a pen fault and
left only through a CLEAR_FAULT the pen accepts (back to CONFIGURING, then
READY: never straight to stamping); a faulty pen (spec 1.1, H1-H5) ends the
session in FAULT, with no CLEAR_FAULT. LINK_LOST, ABORTED, REFUSED and
COMPLETE end the session; LINK_LOST alone can be left, by RECONNECT.

As in the firmware (firmware_sim/firmware.py), the table decides: the
controller names what happened (a `Trigger`) and `TRANSITIONS` gives the next
state. A (state, trigger) pair the table does not hold leaves the state as it
is: a fault latched while CONNECTING waits for the configuration to end, a
link lost after COMPLETE changes nothing. Every command goes through
`command_refusal` (`COMMAND_STATES`) first.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from devicectl.frozen import by_fields


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

    #: Members are singletons compared by identity, so hashed by identity too: enum's
    #: own __hash__ is a Python function (hash of the name), and `state in LIVE` and
    #: the like run it several times per loop step (~0.2 µs each, compiled or not).
    __hash__ = object.__hash__


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


class Trigger(enum.Enum):
    """What moves the session: the controller's verdicts and the technician's commands."""

    CONNECTED = "connected"  # the pen answered and the go/no-go said go: configure it
    CONFIGURED = "configured"  # CONFIGURE and SET_TARGET ACKed
    CONFIGURED_IN_FAULT = "configured_in_fault"  # ... while a fault is latched
    REFUSED = "refused"  # the go/no-go (or the pen's identity) said no
    START = "start"  # START (or RESUME) accepted
    STOPPED = "stopped"  # paused: the technician, or a safety stop
    ZONE_DONE = "zone_done"
    COMPLETE = "complete"  # the last zone done, or no zone left
    NEXT_ZONE = "next_zone"
    FAULT = "fault"  # an ESTOP sent or a fault the pen reports
    FAULT_CLEARED = "fault_cleared"  # the pen accepted CLEAR_FAULT: configure again
    ABORT = "abort"
    LINK_LOST = "link_lost"
    RECONNECT = "reconnect"


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
    #: spec H3: after the session's last STOP, telemetry shows the pen stopped
    PEN_STOPPED = "pen_stopped"
    #: the session ends without telemetry showing the pen stopped (it did not, or went silent)
    STOP_UNVERIFIED = "stop_unverified"
    #: strokes measured in the tolerance band (above the cap, up to the ESTOP limit)
    TOLERANCE = "tolerance"
    #: measured depth far below the command for many strokes: stamping stopped
    SENSOR_SUSPECT = "sensor_suspect"
    #: spec H5: a second over-depth; the cartridge is recorded as failed
    CARTRIDGE_FAILED = "cartridge_failed"


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

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


@dataclass(frozen=True, slots=True)
class Output:
    """What one controller call produced: bytes for the pen, events for the rest."""

    data: bytes
    events: tuple[ControlEvent, ...]

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return by_fields(self)  # pickles when compiled (devicectl/frozen.py)


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
_T = Trigger
_ALIVE: Final = (_S.CONNECTING, _S.CONFIGURING, _S.READY, _S.STAMPING, _S.PAUSED,
                 _S.ZONE_DONE, _S.FAULT)
#: The one transition table: (state, trigger) -> the next state. A pair not
#: here leaves the state as it is (see the theory of operation).
TRANSITIONS: Final[Mapping[tuple[State, Trigger], State]] = MappingProxyType(
    {
        (_S.CONNECTING, _T.CONNECTED): _S.CONFIGURING,
        (_S.CONNECTING, _T.REFUSED): _S.REFUSED,
        (_S.CONFIGURING, _T.REFUSED): _S.REFUSED,
        (_S.CONFIGURING, _T.CONFIGURED): _S.READY,
        (_S.CONFIGURING, _T.CONFIGURED_IN_FAULT): _S.FAULT,
        (_S.READY, _T.START): _S.STAMPING,
        (_S.PAUSED, _T.START): _S.STAMPING,
        (_S.STAMPING, _T.STOPPED): _S.PAUSED,
        (_S.STAMPING, _T.ZONE_DONE): _S.ZONE_DONE,
        (_S.STAMPING, _T.COMPLETE): _S.COMPLETE,
        (_S.ZONE_DONE, _T.COMPLETE): _S.COMPLETE,
        (_S.ZONE_DONE, _T.NEXT_ZONE): _S.CONFIGURING,
        (_S.FAULT, _T.FAULT_CLEARED): _S.CONFIGURING,
        (_S.LINK_LOST, _T.RECONNECT): _S.CONNECTING,
        **{(s, _T.FAULT): _S.FAULT for s in _ALIVE if s not in (_S.CONNECTING, _S.CONFIGURING)},
        **{(s, _T.ABORT): _S.ABORTED for s in (*_ALIVE, _S.LINK_LOST)},
        **{(s, _T.LINK_LOST): _S.LINK_LOST for s in _ALIVE},
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
        Command.RECORDS_FAILED: frozenset(State) - frozenset(
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


def next_state(state: State, trigger: Trigger) -> State:
    """The state `trigger` leads to from `state` (the same one when the table has no move)."""
    return TRANSITIONS.get((state, trigger), state)


def resolve_command(cmd: Command, state: State) -> Command:
    """What a command means in a state: RESUME on a ready zone is its START (the
    pen's button and the views' one "go on" key both say RESUME)."""
    if cmd is Command.RESUME and state is State.READY:
        return Command.START
    return cmd


def command_refusal(cmd: Command, state: State) -> str | None:
    """Why `cmd` makes no sense in `state`, or None when it does."""
    if state in COMMAND_STATES[cmd]:
        return None
    return f"{cmd.name} refused in state {state.name}: {_REFUSAL_HINT[cmd]}"
