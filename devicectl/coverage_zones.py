"""A coverage's figures per zone: strokes, passes, the fraction at target, spill, maxima.

`CoverageZones` is mixed into coverage.Coverage. Each figure reads the counters the
strokes keep (O(1) a zone) or, for the maxima, the zone's cells on the grid; nothing
here changes them. Without position (`tracked` false) the figures are estimated from
the zone's strokes over its area.
"""

from __future__ import annotations

import numpy as np

from devicectl.coverage_archive import CoverageArchive
from devicectl.footprint import IntArray
from devicectl.patches import MARGIN_BIT, REST_BIT


class CoverageZones(CoverageArchive):
    """The figures per zone of a Coverage; the attributes are Coverage's (coverage.py).
    One chain of bases (views, archive, zones, Coverage): mypyc compiles no other shape."""

    needle_count: int
    _zone_cells: IntArray

    def strokes(self, zone_id: int) -> int:
        return self._strokes.get(zone_id, 0)

    def estimated_passes(self, zone_id: int) -> float:
        """Passes from the zone's strokes alone: its punctures over its area, in pass doses."""
        z = self.zones[zone_id]
        if z.area_mm2 <= 0 or z.pass_punctures_per_cm2 <= 0:
            return 0.0
        per_cm2 = self._strokes.get(zone_id, 0) * self.needle_count / (z.area_mm2 / 100.0)
        return per_cm2 / z.pass_punctures_per_cm2

    def mean_passes(self, zone_id: int) -> float:
        """The zone's mean dose in passes (estimated without position)."""
        if not self.tracked:
            return self.estimated_passes(zone_id)
        cells = int(self._zone_cells[zone_id])
        if not cells:
            return 0.0
        return int(self._sum_hits[zone_id]) / cells / self.limits[zone_id].hits_per_pass

    def mean_punctures_per_cm2(self, zone_id: int) -> float:
        z = self.zones[zone_id]
        return self.mean_passes(zone_id) * z.pass_punctures_per_cm2

    def fraction(self, zone_id: int) -> float:
        """The fraction of the zone at its target dose (estimated without position):
        of the cells a stroke may still reach, those at target (module reach)."""
        z = self.zones[zone_id]
        if not self.tracked:
            if z.target_passes <= 0:
                return 1.0
            return min(1.0, self.estimated_passes(zone_id) / z.target_passes)
        cells = self.treatable_cells(zone_id)
        return min(1.0, int(self._at_target[zone_id]) / cells) if cells else 1.0

    def treatable_cells(self, zone_id: int) -> int:
        """The zone's cells a stroke reaches, less those held below target by the maximum."""
        return int(self.reach.reachable_cells[zone_id]) - int(self.reach.held_cells[zone_id])

    def unreachable_cm2(self, zone_id: int) -> float:
        """Skin of the zone no allowed stroke can bring to its target (border, or held)."""
        return (int(self._zone_cells[zone_id]) - self.treatable_cells(zone_id)) * self.cell_cm2()

    def cells_at_max(self, zone_id: int) -> int:
        """Cells of the zone at their maximum (tracked mode; 0 otherwise)."""
        return int(self._at_max[zone_id])

    def fraction_at_max(self, zone_id: int) -> float:
        cells = int(self._zone_cells[zone_id])
        return int(self._at_max[zone_id]) / cells if cells else 0.0

    def cell_cm2(self) -> float:
        return self.cell_mm * self.cell_mm / 100.0

    def spill_cm2(self, zone_id: int) -> float:
        """Skin of zone `zone_id` reached by strokes while another zone was treated."""
        return int(self._spill_cells[zone_id]) * self.cell_cm2()

    def spills(self) -> dict[int, float]:
        """Every zone (0: off the zones) that took spill, and how much (cm²); the rest
        of a zone treated as patches counts as that zone."""
        out: dict[int, float] = {}
        for z in np.nonzero(self._spill_cells)[0]:
            zone = int(z) & ~(REST_BIT | MARGIN_BIT)
            out[zone] = out.get(zone, 0.0) + int(self._spill_cells[z]) * self.cell_cm2()
        return out

    def spill_depth_um(self, zone_id: int) -> int:
        """The deepest treatment that spilled onto zone `zone_id` (0: none)."""
        return int(self._spill_depth_um[zone_id])

    def zone_cells(self, zone_id: int) -> int:
        return int(self._zone_cells[zone_id])

    def done(self, zone_id: int) -> bool:
        """The zone reached its target: the target fraction, or the estimated target."""
        z = self.zones[zone_id]
        if not self.tracked:
            return self.estimated_passes(zone_id) >= z.target_passes
        return self.fraction(zone_id) >= z.target_fraction

    def at_estimated_max(self, zone_id: int) -> bool:
        """Without position: the zone's strokes reached one stroke short of its estimated
        maximum, so the stroke in flight cannot take it over."""
        z = self.zones[zone_id]
        if z.area_mm2 <= 0 or z.pass_punctures_per_cm2 <= 0:
            return True
        next_per_cm2 = (self._strokes.get(zone_id, 0) + 1) * self.needle_count / (z.area_mm2 / 100)
        top = z.max_passes * z.pass_punctures_per_cm2
        if z.max_punctures_per_cm2 is not None:
            top = min(top, z.max_punctures_per_cm2)
        return next_per_cm2 > top

    def cells_over_max(self, zone_id: int) -> int:
        """Cells the zone treats past their maximum, its patches' margins included (a
        margin is treated within the same maximum), as the records' dose counts them
        (dose.zone_dose_stats); counted on the grid (O(cells))."""
        mask = self._treat == zone_id
        return int(np.count_nonzero(self.hits[mask] > self._max[mask]))

    def max_hits_in(self, zone_id: int) -> int:
        """The most hits on any cell of the zone."""
        mask = self._labels == zone_id
        return int(self.hits[mask].max()) if mask.any() else 0
