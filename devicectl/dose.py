"""The dose arithmetic: punctures per cm², what one pass is, and a zone's dose read from a grid.

Each stroke puts the cartridge's `needle_count` punctures into the skin under
its footprint; spread over the footprint's area that is a dose in punctures per
cm², the number clinicians compare with the literature. A *pass* is the mean
dose of one sweep over a zone at the nominal hand speed, in rows one footprint
wide: needle_count × rate ÷ (footprint × speed). docs/profiles.md does the sums.
Pure functions and plain numbers; no I/O.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from devicectl.errors import DevicectlError
from devicectl.mapstyle import share_text

#: The hand speed that defines a pass, and estimates passes without position (mm/s).
NOMINAL_HAND_SPEED_MM_S: Final = 10.0
#: The most a cell outside the plan may receive as spill, in passes of the zone treated.
SPILL_MAX_PASSES: Final = 1
_MM2_PER_CM2: Final = 100.0
#: patches.MARGIN_BIT: a patched zone's margin cells on a saved grid (zone id | this)
_MARGIN_BIT: Final = 0x40


def pass_punctures_per_cm2(needle_count: int, rate_dhz: int, footprint_dmm: int) -> float:
    """The dose of one pass: needles × strokes a second ÷ (footprint width × hand speed).

    One second of sweeping covers footprint × speed mm² with rate strokes of
    needle_count punctures each. 12 needles, 10 Hz, 5 mm, 10 mm/s: 2.4 per mm², 240 per cm².
    """
    if needle_count <= 0 or rate_dhz <= 0 or footprint_dmm <= 0:
        raise ValueError("needle count, rate and footprint must be positive")
    per_mm2 = needle_count * (rate_dhz / 10.0) / (footprint_dmm / 10.0 * NOMINAL_HAND_SPEED_MM_S)
    return per_mm2 * _MM2_PER_CM2


def stroke_punctures_per_cm2(needle_count: int, footprint_cells: int, cell_mm: float) -> float:
    """The dose one stroke gives each grid cell under its footprint."""
    return needle_count / (footprint_cells * cell_mm * cell_mm / _MM2_PER_CM2)


@dataclass(frozen=True, slots=True)
class ZoneLimits:
    """A zone's target and maximum as strokes over a cell (the grid's unit), and the units."""

    zone_id: int
    target_hits: int
    max_hits: int
    hits_per_pass: float
    punctures_per_hit: float  # per cm²


def zone_limits(
    zone_id: int,
    target_passes: int,
    max_passes: int,
    pass_dose: float,
    max_punctures_per_cm2: float | None,
    punctures_per_hit: float,
) -> ZoneLimits:
    """Target rounded up, maximum rounded down: a cell at the target has had the
    whole target dose, one at the maximum never more than the maximum dose."""
    per_pass = pass_dose / punctures_per_hit
    target = max(1, math.ceil(target_passes * per_pass - 1e-9))
    top = max_passes * pass_dose
    if max_punctures_per_cm2 is not None:
        top = min(top, max_punctures_per_cm2)
    most = math.floor(top / punctures_per_hit + 1e-9)
    return ZoneLimits(zone_id, target, most, per_pass, punctures_per_hit)


@dataclass(frozen=True, slots=True)
class DoseView:
    """What a technician sees of one zone on the live map: per cell of a crop
    of the grid (row = y), whether it is the zone's, its dose in strokes over
    it (hits), and the zone's target and maximum in the same unit."""

    x0_mm: float
    y0_mm: float
    cell_mm: float
    hits: npt.NDArray[np.int32]
    mask: npt.NDArray[np.bool_]
    target_hits: int
    max_hits: int
    hits_per_pass: float
    #: per tip cell, the strokes a stroke there may still give before a cell under
    #: its footprint (grown by one cell) reaches its maximum; 0 where the host holds
    #: (at a maximum, or the footprint overhangs the border too far). None: not known.
    room: npt.NDArray[np.int32] | None = None



# --- a zone's dose from a saved grid ------------------------------------------------


def zone_dose_stats(archive: bytes) -> dict[int, dict[str, Any]]:
    """Per zone of the plan, the dose measures computed from a saved coverage grid
    (Coverage.to_bytes): nothing here is taken from counters kept during the session."""
    try:
        with np.load(io.BytesIO(archive), allow_pickle=False) as saved:
            hits = np.asarray(saved["hits"], dtype=np.int64)
            labels = np.asarray(saved["labels"], dtype=np.int64)
            spilled = np.asarray(saved["spilled"], dtype=bool)
            ids = [int(v) for v in saved["zone_ids"]]
            targets = [int(v) for v in saved["target_hits"]]
            maxima = [int(v) for v in saved["max_hits"]]
            per_pass = [float(v) for v in saved["hits_per_pass"]]
            per_hit = float(saved["punctures_per_hit"])
            cell_mm = float(saved["cell_mm"])
    except (OSError, ValueError, KeyError) as exc:
        raise DevicectlError(f"the saved coverage cannot be read: {exc}") from None
    cell_cm2 = cell_mm * cell_mm / _MM2_PER_CM2
    out: dict[int, dict[str, Any]] = {}
    for zid, target, most, hpp in zip(ids, targets, maxima, per_pass, strict=True):
        mask = labels == zid
        h = hits[mask]
        cells = int(h.size)
        hist = np.bincount(h, minlength=1) if cells else np.zeros(1, dtype=np.int64)
        # a zone treated as patches: its margin is treated too, within the same maximum
        margin = hits[labels == (zid | _MARGIN_BIT)] if zid < _MARGIN_BIT else hits[:0]
        out[zid] = {
            "cells": cells,
            "area_cm2": round(cells * cell_cm2, 2),
            "margin_cm2": round(int(margin.size) * cell_cm2, 2),
            "target_hits": target,
            "max_hits": most,
            "cells_at_target": int(np.count_nonzero(h >= target)),
            "cells_at_max": int(np.count_nonzero(h == most)),
            "cells_over_max": int(np.count_nonzero(h > most) + np.count_nonzero(margin > most)),
            "mean_passes": round(float(h.mean()) / hpp, 3) if cells else 0.0,
            "punctures_per_cm2_mean": round(float(h.mean()) * per_hit, 1) if cells else 0.0,
            "punctures_per_cm2_max": round(float(h.max()) * per_hit, 1) if cells else 0.0,
            "spill_cm2": round(int(np.count_nonzero(spilled[mask])) * cell_cm2, 4),
            "at_max_cm2": round(int(np.count_nonzero(h >= most)) * cell_cm2, 4),
            "histogram": [int(v) for v in hist],
        }
    return out


def zone_spill(archive: bytes) -> dict[int, tuple[float, int]]:
    """Every zone (0: skin off the zones) that took spill in a saved coverage grid:
    zone id -> (cm², the deepest treatment that spilled onto it in µm). A zone with
    spill deeper than safety.INTERVAL_DEPTH_UM is bound by the minimum interval."""
    from devicectl.patches import REST_BIT  # geometry and pydantic: only when asked

    try:
        with np.load(io.BytesIO(archive), allow_pickle=False) as saved:
            labels = np.asarray(saved["labels"], dtype=np.int64)
            spilled = np.asarray(saved["spilled"], dtype=bool)
            depth = np.asarray(saved["spill_depth_um"], dtype=np.int64)
            cell_mm = float(saved["cell_mm"])
    except (OSError, ValueError, KeyError) as exc:
        raise DevicectlError(f"the saved coverage cannot be read: {exc}") from None
    counts = np.bincount(labels[spilled], minlength=depth.size)
    cell_cm2 = cell_mm * cell_mm / _MM2_PER_CM2
    out: dict[int, tuple[float, int]] = {}
    for z in np.nonzero(counts)[0]:
        # the rest of a zone treated as patches (patches.REST_BIT) is that zone's skin
        zone = int(z) & ~(REST_BIT | _MARGIN_BIT)
        cm2, deepest = out.get(zone, (0.0, 0))
        out[zone] = (round(cm2 + int(counts[z]) * cell_cm2, 4), max(deepest, int(depth[z])))
    return out


#: The dose measures `sessions export` adds to each zone (dose.zone_dose_stats).
EXPORT_FIELDS: Final = (
    "area_cm2", "margin_cm2", "cells_at_target", "cells_at_max", "cells_over_max", "mean_passes",
    "punctures_per_cm2_mean", "punctures_per_cm2_max", "spill_cm2", "at_max_cm2", "histogram",
)


def zones_with_dose(
    zones: Sequence[dict[str, Any]], archive: bytes | None
) -> list[dict[str, Any]]:
    """The export's zones[], each with its dose measures from the saved grid
    (None where the session saved no grid: no position, or never started)."""
    try:
        stats = zone_dose_stats(archive) if archive else {}
    except DevicectlError:
        stats = {}  # a grid saved before dose was recorded: no measures, not a failure
    out = []
    for z in zones:
        s = stats.get(int(z["zone_id"]))
        out.append(z | {k: (s[k] if s is not None else None) for k in EXPORT_FIELDS})
    return out


# --- one legend for every view -------------------------------------------------

#: The column headings every view uses for a zone's dose (summary, `sessions show`,
#: terminal, live page, report): the mean dose in passes, the share of the zone at
#: its target, the share (and skin) at its maximum.
DOSE_COLUMNS: Final = ("dose", "at target", "at maximum")
#: The map's classes, in order, with one colour each, the same in every view.
#: Red is not used: it read as "not reached" in one view and "at maximum" in another.
LEGEND: Final = (
    ("untouched", "grey50"),
    ("below target", "yellow"),
    ("at target", "green"),
    ("at maximum", "blue"),
)


def dose_cells(zone: Mapping[str, Any]) -> tuple[str, str, str]:
    """A zone's DOSE_COLUMNS as text, from a status zone: the mean dose against
    the target in passes, the share at target against the share asked for, and
    the share and skin at the maximum, e.g. ("1.8/3 passes", "45/90 %", "0.4 % 0.5 cm²")."""
    mean = zone.get("mean_passes")
    target = zone.get("target_passes")
    fraction = float(zone.get("fraction") or 0.0)
    goal = float(zone.get("target_fraction") or 0.0)
    at_max = zone.get("at_max_fraction")
    at_max_cm2 = float(zone.get("at_max_cm2") or 0.0)
    dose = "—" if mean is None else _given(float(mean), 1) + (f"/{target}" if target else "")
    return (
        dose + (" passes" if mean is not None else ""),
        f"{share_text(fraction, goal)}/{100 * goal:.0f} %",
        "—" if at_max is None else
        f"{_given(100 * float(at_max), 1)} % {_given(at_max_cm2, 1)} cm²",
    )


def _given(value: float, decimals: int) -> str:
    """`value` to `decimals` places; a dose given but too small to show is "<0.1" (or
    "<1"), never "0": zero is for nothing given."""
    step = 10.0 ** -decimals
    if 0 < value < step / 2:
        return f"<{step:.{decimals}f}"
    return f"{value:.{decimals}f}"
