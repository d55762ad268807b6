"""Building snapshots from the live controller, on the loop's own thread (the pen process).

The only code besides the session that reads the controller for a view: it
copies what views need into frozen data (devicectl/snapshot.py). The coverage
crop is copied only when its version changed, at most every COPY_PERIOD_US of
wall time: the hits grid is large, the status is small; the cells over their
maximum are counted on that copy.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Final

import numpy as np
import numpy.typing as npt

from devicectl.claim import CartridgeClaim
from devicectl.controller import Controller
from devicectl.coverage import Coverage
from devicectl.footprint import LABELS
from devicectl.snapshot import (
    RECENT_EVENTS,
    CoverageFrame,
    CoverageLayout,
    Outcome,
    Snapshot,
    ZoneCrop,
)
from devicectl.transitions import ControlEvent

#: Coverage copies (the grid, the active zone's crop, cells over max) at most this often.
COPY_PERIOD_US: Final = 500_000
#: The layout's crop starts on a multiple of this many cells, so coarser maps line up.
ALIGN_CELLS: Final = 12


def _layout(cov: Coverage) -> tuple[tuple[slice, slice], CoverageLayout,
                                    npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
    """The crop of the grid holding the plan's zones, what each of its cells is, each
    cell's maximum (the largest int32 off the plan) and the zone each counts for over
    its maximum (Coverage.treated_grid: a patch's margin counts for its zone, as in the
    records). The layout's labels keep a margin's own label (zone id | MARGIN_BIT): it is
    not one of the heat map's zones, the layout's hits_of."""
    labels = np.asarray(cov.raster.labels)
    zone_of, maxima = cov.treated_grid()
    planned = zone_of != 0
    ys, xs = np.nonzero(planned)
    if ys.size == 0:
        crop = (slice(0, 0), slice(0, 0))
    else:
        y0 = int(ys.min()) // ALIGN_CELLS * ALIGN_CELLS
        x0 = int(xs.min()) // ALIGN_CELLS * ALIGN_CELLS
        crop = (slice(y0, int(ys.max()) + 1), slice(x0, int(xs.max()) + 1))
    cell_mm = float(cov.raster.cell_mm)
    cropped = np.where(planned, labels, 0)[crop].astype(np.uint8)
    cropped.setflags(write=False)
    most = np.where(planned, maxima, np.iinfo(np.int32).max)[crop].astype(np.int32)
    return crop, CoverageLayout(
        labels=cropped,
        x0_mm=float(cov.raster.x0_mm) + crop[1].start * cell_mm,
        y0_mm=float(cov.raster.y0_mm) + crop[0].start * cell_mm,
        cell_mm=cell_mm,
        hits_of={zid: (lim.target_hits, lim.max_hits) for zid, lim in cov.limits.items()},
        tracked=cov.tracked,
    ), most, zone_of[crop]


class SnapshotBuilder:
    """Turns the controller into Snapshots; owned by the thread that owns the controller."""

    def __init__(self) -> None:
        self._recent: collections.deque[ControlEvent] = collections.deque(maxlen=RECENT_EVENTS)
        #: the recent events as the last snapshot had them: the same tuple until new ones
        #: come, so that the publisher sends it once (snapshot.KEPT_FIELDS)
        self._recent_tuple: tuple[ControlEvent, ...] | None = ()
        self._cov: Coverage | None = None
        self._crop: tuple[slice, slice] = (slice(0, 0), slice(0, 0))
        self._layout: CoverageLayout | None = None
        self._most: npt.NDArray[np.int32] = np.zeros((0, 0), dtype=np.int32)
        self._counted: npt.NDArray[np.uint8] = np.zeros((0, 0), dtype=np.uint8)
        self._frame: CoverageFrame | None = None
        self._zone_crop: ZoneCrop | None = None
        self._over_max: dict[int, int] = {}
        self._copied_us = -(10**18)

    def note(self, events: Iterable[ControlEvent]) -> None:
        self._recent.extend(events)
        self._recent_tuple = None

    def build(self, ctl: Controller, now_us: int, t0_us: int, wall_us: int, *,
              records_failure: str | None = None, finished: bool = False,
              outcome: Outcome | None = None, claim: CartridgeClaim | None = None) -> Snapshot:
        status = ctl.status(now_us)
        if records_failure is not None:
            status["records_failure"] = records_failure
        if finished or wall_us - self._copied_us >= COPY_PERIOD_US:
            self._copied_us = wall_us
            self._copy_coverage(ctl)
        if self._recent_tuple is None:
            self._recent_tuple = tuple(self._recent)
        return Snapshot(
            now_us=now_us,
            t0_us=t0_us,
            state=ctl.state,
            status=status,
            device=ctl.device,
            plan=ctl.plan,
            go_no_go=tuple(ctl.go_no_go),
            position_mode=ctl.position_mode,
            coverage=self._frame,
            zone_crop=self._zone_crop,
            over_max=dict(self._over_max),
            recent=self._recent_tuple,
            finished=finished,
            outcome=outcome,
            claim_requested=claim is not None and claim.requested,
            claim_decided=claim is not None and claim.decided,
            claim_refused=claim.refused if claim is not None else None,
        )

    def _copy_coverage(self, ctl: Controller) -> None:
        cov = ctl.coverage
        if cov is None:
            self._frame, self._zone_crop = None, None
            return
        if cov is not self._cov or self._layout is None:
            self._cov = cov
            self._crop, self._layout, self._most, self._counted = _layout(cov)
            self._frame = None
        if self._frame is None or self._frame.version != cov.version:
            hits = cov.hits.reshape(np.shape(cov.raster.labels))[self._crop].copy()
            hits.setflags(write=False)
            self._frame = CoverageFrame(cov.version, hits, self._layout)
            # Coverage.cells_over_max's counts, every zone's in one pass over the copy
            # (the crop holds all of their cells) instead of three passes over the
            # whole grid a zone
            over = np.bincount(self._counted[hits > self._most], minlength=LABELS)
            self._over_max = {zid: int(over[zid]) for zid in cov.zones}
        zone = ctl.zone
        view = cov.zone_view(zone.zone_id) if zone is not None else None
        if zone is None or view is None:
            self._zone_crop = None
        else:
            self._zone_crop = ZoneCrop(zone.zone_id, view[0], view[1], view[2], view[3])
