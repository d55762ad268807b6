"""A coverage saved and taken back: the grid's counts as an .npz archive.

`CoverageArchive` is mixed into coverage.Coverage. `snapshot` copies the counts
on the loop and archives them later (the record writer's thread); `restore`
takes them back after a crash and rebuilds every counter from the grid.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from devicectl.coverage_views import CoverageViews
from devicectl.errors import DevicectlError
from devicectl.footprint import HITS, LABELS, IntArray

#: zlib's fastest level: the archive is made once a second on the record writer's
#: thread, and the grid is mostly zeros; level 1 takes ~2 ms where savez_compressed's
#: default (6) took ~10 ms, for an archive about a third larger (docs/performance.md).
ARCHIVE_LEVEL = 1


def _npz(arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    """The arrays as an .npz archive (what np.savez_compressed writes, at ARCHIVE_LEVEL)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=ARCHIVE_LEVEL) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def _narrowest(hits: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The counts in the narrowest unsigned type that holds them all (uint8 while every
    cell is under 256): the grid's int32 is 4× the bytes to deflate once a second.
    Readers take them back as their own type (`restore`: HITS, dose.py: int64)."""
    if hits.size == 0 or int(hits.min()) < 0:
        return hits
    top = int(hits.max())
    if top <= np.iinfo(np.uint8).max:
        return hits.astype(np.uint8)
    if top <= np.iinfo(np.uint16).max:
        return hits.astype(np.uint16)
    return hits


class CoverageArchive(CoverageViews):
    """Save and restore for a Coverage; the attributes are Coverage's (coverage.py).
    One chain of bases (views, archive, Coverage): mypyc compiles no other shape."""

    punctures_per_hit: float
    version: int
    _spilled: npt.NDArray[np.bool_]
    _strokes: dict[int, int]
    _sum_hits: list[int]
    _at_target: list[int]
    _at_max: list[int]
    _spill_cells: IntArray
    _spill_depth_um: IntArray

    def to_bytes(self) -> bytes:
        """The grid and what it means, as an .npz archive: enough to resume after
        a crash, and for the records' dose measures (dose.zone_dose_stats)."""
        return self.snapshot()()

    def snapshot(self) -> Callable[[], bytes]:
        """A copy of the counts now (a memcpy), serialised to `to_bytes` form only
        when called: the inner loop takes the copy, the record writer's thread
        pays for the archive (a few ms that must stay off the loop)."""
        shape = np.array([self._ny, self._nx], dtype=np.int64)
        hits = self.hits.copy()
        spilled = self._spilled.copy()
        labels = self._labels  # never written after construction
        ids = np.array(sorted(self._strokes), dtype=np.int64)
        strokes = np.array([self._strokes[i] for i in ids], dtype=np.int64)
        lims = [self.limits[int(i)] for i in ids if int(i) in self.limits]
        lim_ids = np.array([lim.zone_id for lim in lims], dtype=np.int64)
        target_hits = np.array([lim.target_hits for lim in lims], dtype=np.int64)
        max_hits = np.array([lim.max_hits for lim in lims], dtype=np.int64)
        hits_per_pass = np.array([lim.hits_per_pass for lim in lims], dtype=np.float64)
        per_hit = np.array(self.punctures_per_hit, dtype=np.float64)
        spill_depth = self._spill_depth_um.copy()
        cell_mm = np.array(self.cell_mm, dtype=np.float64)

        def archive() -> bytes:
            return _npz({
                "shape": shape, "hits": _narrowest(hits), "labels": labels, "spilled": spilled,
                "stroke_zone_ids": ids, "strokes": strokes, "zone_ids": lim_ids,
                "target_hits": target_hits, "max_hits": max_hits,
                "hits_per_pass": hits_per_pass, "punctures_per_hit": per_hit,
                "cell_mm": cell_mm, "spill_depth_um": spill_depth,
            })

        return archive

    def restore(self, data: bytes) -> None:
        """Take the counts of `to_bytes` back; refuses those of another grid."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                shape = tuple(int(v) for v in saved["shape"])
                hits = np.asarray(saved["hits"], dtype=HITS)
                spilled = np.asarray(saved["spilled"], dtype=bool)
                ids = [int(v) for v in saved["stroke_zone_ids"]]
                strokes = [int(v) for v in saved["strokes"]]
                depth = np.asarray(saved["spill_depth_um"], dtype=np.int64)
        except (OSError, ValueError, KeyError) as exc:
            raise DevicectlError(f"the saved coverage cannot be read: {exc}") from None
        if shape != (self._ny, self._nx) or hits.shape != self.hits.shape:
            raise DevicectlError(
                f"the saved coverage is for a {shape[0]}×{shape[1]} grid, "
                f"not this map's {self._ny}×{self._nx}"
            )
        self.hits[:] = hits
        self._spilled[:] = spilled
        for i, n in zip(ids, strokes, strict=True):
            self._strokes[i] = n
        self._sum_hits = np.bincount(self._labels, weights=self.hits, minlength=LABELS).astype(
            np.int64
        ).tolist()
        reached = self.hits >= self._target
        self._at_target = np.bincount(self._labels[reached & self.reach.reachable],
                                      minlength=LABELS).tolist()
        maxed = self.hits >= self._max
        self._at_max = np.bincount(self._labels[maxed], minlength=LABELS).tolist()
        self.reach.rebuild(maxed, ~reached)
        self._spill_cells = np.bincount(self._labels[self._spilled], minlength=LABELS)
        self._spill_depth_um = np.asarray(depth, dtype=np.int64)
        self.version += 1


__all__ = ["CoverageArchive"]
