"""Patch treatment: a zone treated only on its patches (circles or polygons), with a margin.

A profile's zone may list `patches` in the zone map's mm coordinates and a
`patch_margin_mm`. The plan then treats only the patches and the margin around
them (clipped to the zone). The zone's area, dose and target fraction are the
patches' own; the margin may be treated up to the zone's maximum, so the ring
at a patch's border, which footprints reach only by overhanging it, gets its
dose without spill. On the coverage grid the rest of the zone reads like skin
off the plan: strokes there are held, and spill past the margin is capped and
recorded as at any zone border. Pure geometry on numpy grids; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from devicectl.footprint import Raster
from devicectl.zones import (
    CHECK_CELL_MM,
    Point,
    ZoneMap,
    ZoneRaster,
    points_in_polygon,
)

#: The widest margin a profile may give around its patches (mm).
MAX_MARGIN_MM: Final = 20.0
#: The most patches one zone may list.
MAX_PATCHES: Final = 20
#: On the coverage grid, the cells of a patched zone outside its patches and
#: margin carry the zone's id with this bit set: off the plan, yet that zone's skin.
REST_BIT: Final = 0x80
#: ... and the cells of its margin this bit: treated up to the zone's maximum,
#: but the zone's dose and target fraction are measured on the patches themselves.
MARGIN_BIT: Final = 0x40


def zone_of_label(label: int) -> int:
    """The zone a grid label belongs to (margin and rest of a patched zone are that zone's)."""
    return label & ~(REST_BIT | MARGIN_BIT)


@dataclass(frozen=True, slots=True)
class Patch:
    """A patch in the plan: a circle (centre, radius) or a polygon, and the margin around it."""

    name: str
    centre_mm: Point | None
    radius_mm: float
    outline_mm: tuple[Point, ...]
    margin_mm: float

    @property
    def bounds_mm(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the patch grown by its margin."""
        m = self.margin_mm
        if self.centre_mm is not None:
            (x, y), r = self.centre_mm, self.radius_mm + m
            return x - r, y - r, x + r, y + r
        xs = [p[0] for p in self.outline_mm]
        ys = [p[1] for p in self.outline_mm]
        return min(xs) - m, min(ys) - m, max(xs) + m, max(ys) + m

    def contains(
        self, gx: npt.NDArray[np.float64], gy: npt.NDArray[np.float64], *, margin: bool = True
    ) -> npt.NDArray[np.bool_]:
        """Which points lie in the patch (grown by its margin unless `margin` is False)."""
        m = self.margin_mm if margin else 0.0
        if self.centre_mm is not None:
            cx, cy = self.centre_mm
            r = self.radius_mm + m
            inside: npt.NDArray[np.bool_] = (gx - cx) ** 2 + (gy - cy) ** 2 <= r * r
            return inside
        inside = points_in_polygon(gx, gy, self.outline_mm)
        if m > 0:
            inside = inside | (_distance_to_outline(gx, gy, self.outline_mm) <= m)
        return inside

    def describe(self) -> str:
        what = self.name or "patch"
        if self.centre_mm is not None:
            x, y = self.centre_mm
            return f"{what}: circle r {self.radius_mm:g} mm at ({x:g}, {y:g})"
        return f"{what}: polygon of {len(self.outline_mm)} points"


def _distance_to_outline(
    gx: npt.NDArray[np.float64], gy: npt.NDArray[np.float64], outline: tuple[Point, ...]
) -> npt.NDArray[np.float64]:
    """Per point, the distance (mm) to the nearest edge of the polygon."""
    best = np.full(np.broadcast(gx, gy).shape, np.inf)
    n = len(outline)
    for i in range(n):
        (ax, ay), (bx, by) = outline[i], outline[(i + 1) % n]
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = np.clip(((gx - ax) * dx + (gy - ay) * dy) / length2, 0.0, 1.0)
        best = np.minimum(best, np.hypot(gx - (ax + t * dx), gy - (ay + t * dy)))
    return best


def patches_mask(
    grid: Raster, patches: Iterable[Patch], *, margin: bool = True
) -> npt.NDArray[np.bool_]:
    """The grid's cells whose centres lie in any of the patches (with their margins)."""
    ny, nx = grid.labels.shape
    out = np.zeros((ny, nx), dtype=bool)
    cell = grid.cell_mm
    for patch in patches:
        x0, y0, x1, y1 = patch.bounds_mm
        c0 = max(0, math.floor((x0 - grid.x0_mm) / cell))
        c1 = min(nx, math.ceil((x1 - grid.x0_mm) / cell) + 1)
        r0 = max(0, math.floor((y0 - grid.y0_mm) / cell))
        r1 = min(ny, math.ceil((y1 - grid.y0_mm) / cell) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        xs = grid.x0_mm + (np.arange(c0, c1, dtype=np.float64) + 0.5) * cell
        ys = grid.y0_mm + (np.arange(r0, r1, dtype=np.float64) + 0.5) * cell
        gx, gy = np.meshgrid(xs, ys)
        out[r0:r1, c0:c1] |= patch.contains(gx, gy, margin=margin)
    return out


class PatchedZone(Protocol):
    """What the grid needs of a plan's zone (plan.ZonePlan)."""

    @property
    def zone_id(self) -> int: ...
    @property
    def patches(self) -> tuple[Patch, ...]: ...


def patched_raster(raster: Raster, zones: Sequence[PatchedZone]) -> Raster:
    """The raster with each patched zone's margin cells relabelled zone_id |
    MARGIN_BIT and its cells outside patches and margin zone_id | REST_BIT (off
    the plan, so never treated); the same raster when no zone has patches."""
    patched = [z for z in zones if z.patches]
    if not patched:
        return raster
    labels = np.array(raster.labels, dtype=np.uint8, copy=True)
    for z in patched:
        if not 0 < z.zone_id < MARGIN_BIT:
            raise ValueError(f"zone id {z.zone_id} cannot carry patches (ids run 1 to 63)")
        own = raster.labels == z.zone_id
        core = patches_mask(raster, z.patches, margin=False)
        grown = patches_mask(raster, z.patches)
        labels[own & ~grown] = z.zone_id | REST_BIT
        labels[own & grown & ~core] = z.zone_id | MARGIN_BIT
    labels.setflags(write=False)
    return ZoneRaster(x0_mm=raster.x0_mm, y0_mm=raster.y0_mm, cell_mm=raster.cell_mm,
                      labels=labels)


def patch_area_mm2(
    zone_map: ZoneMap, zone_name: str, patches: Sequence[Patch], *, margin: bool = False
) -> float:
    """The patches' skin within the zone (with their margins if `margin`), on the
    CHECK_CELL_MM grid (the coverage grid's cell size)."""
    raster = zone_map.raster(CHECK_CELL_MM)
    zone_id = zone_map.by_name(zone_name).id
    mask = patches_mask(raster, patches, margin=margin) & (raster.labels == zone_id)
    return float(np.count_nonzero(mask)) * CHECK_CELL_MM * CHECK_CELL_MM


def placement_problems(
    zone_map: ZoneMap, zone_name: str, patches: Sequence[Patch]
) -> list[tuple[int, str]]:
    """(patch index, why) for every patch not wholly inside its zone, or too small
    to fall on a cell of the grid. The margin may reach past the zone: it is clipped."""
    raster = zone_map.raster(CHECK_CELL_MM)
    zone = zone_map.by_name(zone_name)
    out: list[tuple[int, str]] = []
    cell2 = CHECK_CELL_MM * CHECK_CELL_MM
    for i, patch in enumerate(patches):
        mask = patches_mask(raster, [patch], margin=False)
        cells = int(np.count_nonzero(mask))
        if cells == 0:
            out.append((i, f"{patch.describe()} is smaller than the map's "
                           f"{CHECK_CELL_MM:g} mm grid, or off the map"))
            continue
        outside = mask & (raster.labels != zone.id)
        n_out = int(np.count_nonzero(outside))
        if n_out == cells:
            found = sorted({int(v) for v in raster.labels[mask]} - {0})
            where = (f"it lies in {', '.join(zone_map.by_id(v).name for v in found)}" if found
                     else "it lies off the scalp map")
            out.append((i, f"{patch.describe()} is outside zone {zone_name!r}; {where}"))
        elif n_out:
            out.append((i, f"{patch.describe()} reaches {n_out * cell2:.0f} mm² outside zone "
                           f"{zone_name!r}; a patch lies in its zone (split one that crosses a "
                           "border, a part in each zone)"))
    return out


def patch_problems_untracked(zones: Sequence[Any], tracked: bool) -> list[str]:
    """A patch plan needs the pen's position: without it, strokes cannot be kept to the patches."""
    if tracked:
        return []
    return [f"zone {z.name} is treated as patches, which needs a pen that reports its "
            "position; this pen does not" for z in zones if getattr(z, "patches", ())]



def hand_mask(
    treat: npt.NDArray[np.bool_], allowed: npt.NDArray[np.bool_], footprint_cells: float
) -> npt.NDArray[np.bool_]:
    """A patched zone as a hand should see it: the cells where a tip may stamp
    (`allowed`: no footprint past patch and margin) grown by a quarter of the
    footprint (half its radius, the inset a hand keeps inside what it sees:
    HandParams.border_inset_fraction), within the `treat`ed skin. So the hand
    works where the host lets it, and its footprints reach the patches' borders."""
    reach = allowed.copy()
    r = footprint_cells / 4
    n = math.ceil(r)
    ny, nx = allowed.shape
    for dy in range(-n, n + 1):
        for dx in range(-n, n + 1):
            if dy * dy + dx * dx <= r * r and (dy or dx):
                ys, ye = max(0, dy), min(ny, ny + dy)
                xs, xe = max(0, dx), min(nx, nx + dx)
                reach[ys:ye, xs:xe] |= allowed[ys - dy:ye - dy, xs - dx:xe - dx]
    out: npt.NDArray[np.bool_] = reach & treat
    return out


def zone_patch_problems(
    zones: Sequence[Any], zone_map: ZoneMap, raw_zones: list[Any]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(where, why) for a profile's patches: each inside its zone; a margin only with
    patches. `zones` are the profile's ZoneTargets, `raw_zones` the file's data."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for i, z in enumerate(zones):
        raw = raw_zones[i] if i < len(raw_zones) and isinstance(raw_zones[i], dict) else {}
        if not z.patches:
            if "patch_margin_mm" in raw:
                out.append((("zones", i, "patch_margin_mm"),
                            "a margin without patches; list the patches, or remove the margin"))
            continue
        if z.zone not in zone_map.names:
            continue  # reported at the zone
        shapes = z.patch_shapes
        found = placement_problems(zone_map, z.zone, shapes)
        out += [(("zones", i, "patches", j), why) for j, why in found]
        if not found and patch_area_mm2(zone_map, z.zone, shapes) <= 0:
            out.append((("zones", i, "patches"), "the patches cover no skin of the zone"))
    return out


PATCH_HEAD: Final = ("zone", "patch", "shape", "margin mm", "patch cm²", "with margin cm²")


def patch_rows(zones: Sequence[Any], zone_map: ZoneMap) -> list[tuple[str, ...]]:
    """The report's table of a profile's patches (`zones`: its ZoneTargets)."""
    rows: list[tuple[str, ...]] = []
    for z in zones:
        if not z.patches or z.zone not in zone_map.names:
            continue
        for i, patch in enumerate(z.patch_shapes):
            alone = patch_area_mm2(zone_map, z.zone, [patch])
            grown = patch_area_mm2(zone_map, z.zone, [patch], margin=True)
            shape = patch.describe().split(": ", 1)[1]
            rows.append((z.zone, patch.name or str(i + 1), shape, f"{patch.margin_mm:g}",
                         f"{alone / 100:.1f}", f"{grown / 100:.1f}"))
    return rows
