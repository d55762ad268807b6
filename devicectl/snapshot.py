"""What the pen process shows the world: one frozen, typed snapshot, and how a session ends.

The pen process (devicectl/penloop.py) alone owns the controller. At up to
20 Hz its loop copies what views need into a Snapshot: the status, the pen,
the plan, the go/no-go, the coverage (a copied crop, only when it changed),
the recent events. Views and the CLI (devicectl/penproc.py's handle, the web
page, the terminal view) read these and nothing else; they are plain data
(picklable, arrays read-only), so no screen ever touches a live object.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from devicectl.plan import Plan
from devicectl.protocol import DeviceInfo
from devicectl.transitions import Command, ControlEvent, State

#: Events kept in each snapshot for a view that starts late (the stream has them all).
RECENT_EVENTS: Final = 20
#: Snapshot fields that change seldom (the coverage copies at most every 500 ms): the
#: pen process sends each only when it is not the object it sent last, and the handle
#: puts back the one it has (penloop._Publisher, penproc.PenProcess). The active zone's
#: crop alone was ~220 KB pickled 20 times a second, the recent events most of the rest.
KEPT_FIELDS: Final = ("coverage", "zone_crop", "plan", "device", "recent")


class Outcome(enum.Enum):
    """How a session ended; the value is what the records say, `exit_code` the CLI's."""

    COMPLETE = "complete"
    REFUSED = "refused"
    ABORTED = "aborted"
    FAULT = "fault"
    LINK_LOST = "link_lost"

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Outcome.COMPLETE: 0,
    Outcome.REFUSED: 1,
    Outcome.ABORTED: 2,
    Outcome.FAULT: 3,
    Outcome.LINK_LOST: 4,
}
_OUTCOME_OF_STATE = {
    State.COMPLETE: Outcome.COMPLETE,
    State.REFUSED: Outcome.REFUSED,
    State.ABORTED: Outcome.ABORTED,
    State.FAULT: Outcome.FAULT,
    State.LINK_LOST: Outcome.LINK_LOST,
}


def outcome_of(state: State) -> Outcome:
    """The outcome a session ending in `state` has; an unfinished one counts as aborted."""
    return _OUTCOME_OF_STATE.get(state, Outcome.ABORTED)


@dataclass(frozen=True, slots=True)
class CoverageLayout:
    """The part of the coverage grid holding the plan's zones: fixed for a plan."""

    #: zone id of each cell of the crop (0: no zone)
    labels: npt.NDArray[np.uint8]
    #: the crop's corner on the scalp map (mm) and its cell size
    x0_mm: float
    y0_mm: float
    cell_mm: float
    #: zone id -> (target, maximum) strokes over a spot ("hits", coverage.py's unit)
    hits_of: Mapping[int, tuple[int, int]]
    #: position tracking: the grid is measured, not estimated
    tracked: bool


@dataclass(frozen=True, slots=True)
class CoverageFrame:
    """The hits on the layout's cells at one `version` of the coverage (a copy)."""

    version: int
    hits: npt.NDArray[np.int32]
    layout: CoverageLayout


@dataclass(frozen=True, slots=True)
class ZoneCrop:
    """The active zone's hits and mask cropped to its bounding box (the terminal's map)."""

    zone_id: int
    hits: npt.NDArray[np.int32]
    mask: npt.NDArray[np.bool_]
    target_hits: int
    max_hits: int

    def as_view(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_], int, int]:
        """What monitor/terminal.py draws (Coverage.zone_view's shape)."""
        return self.hits, self.mask, self.target_hits, self.max_hits


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The session as one moment of the pen process saw it."""

    #: session time of this snapshot, and of the session's start (µs)
    now_us: int = 0
    t0_us: int = 0
    state: State = State.CONNECTING
    #: the controller's status (controller_status.py), and `records_failure` when set
    status: Mapping[str, Any] = field(default_factory=dict)
    device: DeviceInfo | None = None
    plan: Plan | None = None
    go_no_go: tuple[str, ...] = ()
    position_mode: str = "estimated"
    coverage: CoverageFrame | None = None
    zone_crop: ZoneCrop | None = None
    #: zone id -> cells over the zone's maximum (the summary's last column)
    over_max: Mapping[int, int] = field(default_factory=dict)
    recent: tuple[ControlEvent, ...] = ()
    #: the cartridge's claim at the GO (claim.py): asked, answered, refused (why)
    claim_requested: bool = False
    claim_decided: bool = False
    claim_refused: str | None = None
    #: set on the last snapshot, when the loop has ended
    finished: bool = False
    outcome: Outcome | None = None

    def __reduce__(self) -> tuple[type[Snapshot], tuple[Any, ...]]:
        """Pickled as its fields' values, in the constructor's order, read in one C call:
        the slots dataclass's own __getstate__/__setstate__ walk the fields in Python,
        and the pen process pickles a snapshot 20 times a second (docs/performance.md)."""
        return Snapshot, _field_values(self)

    @property
    def elapsed_s(self) -> float:
        """Session time since it began: one clock for every view, as the events have."""
        return max(0.0, (self.now_us - self.t0_us) / 1e6)

    def view_status(self) -> dict[str, Any]:
        """The status as views draw it, with the session's elapsed time."""
        return dict(self.status, elapsed_s=self.elapsed_s)


#: A snapshot's fields' values, in the order of the constructor's arguments (all init).
_field_values: Final = operator.attrgetter(*(f.name for f in fields(Snapshot)))


def seal(snap: Snapshot) -> Snapshot:
    """Make the snapshot's arrays read-only again (pickling drops the flag): a view
    that tried to change one would be changing what every other view shows."""
    arrays: list[npt.NDArray[Any]] = []
    if snap.coverage is not None:
        arrays += [snap.coverage.hits, snap.coverage.layout.labels]
    if snap.zone_crop is not None:
        arrays += [snap.zone_crop.hits, snap.zone_crop.mask]
    for a in arrays:
        a.setflags(write=False)
    return snap


class Watched(Protocol):
    """A running session as views and the CLI see it: Session in-process (tests,
    the fault campaign), penproc.PenProcess across processes."""

    @property
    def snapshot(self) -> Snapshot: ...

    def wait(self, timeout_s: float | None = None) -> bool: ...
    def submit(self, cmd: Command) -> None: ...
    def request_stop(self, reason: str) -> None: ...
    def drain_events(self) -> list[ControlEvent]: ...
    def drain_progress(self) -> list[tuple[int, dict[str, Any]]]: ...
