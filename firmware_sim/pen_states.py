"""The pen's state machine as one table: every (state, trigger) -> next state or NACK.

Commands and faults become a `Trigger`; `TRANSITIONS` alone says where each
leads (spec: pen-protocol.md, Behaviour). The firmware (pen_core.py,
firmware.py) checks arguments and guards and then applies the table.
"""

from __future__ import annotations

import enum
from typing import Final

from devicectl.protocol import Nack, PenState


class Trigger(enum.Enum):
    """What moves the state machine: commands, and faults latching."""

    HELLO = "hello"
    CONFIGURE = "configure"
    SET_TARGET = "set_target"
    START = "start"
    STOP = "stop"
    LATCH = "latch"  # any fault, ESTOP included
    CLEAR_TO_READY = "clear_to_ready"
    CLEAR_TO_IDLE = "clear_to_idle"
    AUTH = "auth"  # AUTH_BEGIN and AUTH_CONFIRM
    FW_BEGIN = "fw_begin"
    FW_CHUNK = "fw_chunk"
    FW_COMMIT = "fw_commit"  # a good image: the pen restarts into it
    FW_ABORT = "fw_abort"


_B, _I, _R, _S, _F, _U = PenState
_BS, _FA = Nack.BAD_STATE, Nack.FAULT_ACTIVE

#: Every transition of the pen, in one place: for each trigger, the next state
#: or the NACK that refuses it (the state then stays as it was), in each state.
#: Commands before the first HELLO are refused BAD_STATE, except ESTOP, which
#: a pen obeys in every state, and AUTH_BEGIN (no ACK asked). UPDATING: motor
#: off, needle retracted; only the FW_* commands move it.
_TABLE: Final[dict[Trigger, tuple[PenState | Nack, ...]]] = {
    #                        BOOT IDLE READY STAMPING FAULT UPDATING
    Trigger.HELLO:          (_I,  _I,  _R,   _S,      _F,   _U),
    Trigger.CONFIGURE:      (_BS, _I,  _R,   _S,      _F,   _U),
    # in STAMPING from the next stroke; in FAULT kept for after CLEAR_FAULT
    Trigger.SET_TARGET:     (_BS, _R,  _R,   _S,      _F,   _BS),
    Trigger.START:          (_BS, _BS, _S,   _S,      _FA,  _BS),
    Trigger.STOP:           (_BS, _I,  _R,   _R,      _F,   _U),
    Trigger.LATCH:          (_F,  _F,  _F,   _F,      _F,   _F),
    Trigger.CLEAR_TO_READY: (_BS, _I,  _R,   _S,      _R,   _U),
    Trigger.CLEAR_TO_IDLE:  (_BS, _I,  _R,   _S,      _I,   _U),
    Trigger.AUTH:           (_B,  _I,  _R,   _BS,     _F,   _U),
    Trigger.FW_BEGIN:       (_BS, _U,  _U,   _BS,     _BS,  _BS),
    Trigger.FW_CHUNK:       (_BS, _BS, _BS,  _BS,     _BS,  _U),
    Trigger.FW_COMMIT:      (_BS, _BS, _BS,  _BS,     _BS,  _B),
    Trigger.FW_ABORT:       (_BS, _I,  _R,   _S,      _F,   _I),
}  # fmt: skip
TRANSITIONS: Final[dict[tuple[PenState, Trigger], PenState | Nack]] = {
    (state, trigger): row[state] for trigger, row in _TABLE.items() for state in PenState
}


__all__ = ["TRANSITIONS", "Trigger"]
