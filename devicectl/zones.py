"""The scalp zone map: zone outlines on the spec's flat scalp map, their areas, and masks.

Outlines are data (profiles/zones.yaml); areas come from them (shoelace), and
numpy rasterises them for coverage. A map with overlapping, self-intersecting,
unknown or uncovered zones is refused at load, every problem located.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from devicectl.errors import ProfileError
from devicectl.safety import DEPTH_CAP_UM

DEFAULT_ZONES_PATH: Final = Path(__file__).resolve().parent.parent / "profiles" / "zones.yaml"
#: The zone names profiles may use, in wire-id order of the shipped map.
KNOWN_ZONE_NAMES: Final = (
    "frontal",
    "mid_scalp",
    "vertex",
    "left_temporal",
    "right_temporal",
    "occipital",
)
_ZONE_FIELDS: Final = ("id", "name", "label", "outline_mm", "max_depth_mm", "max_depth_source")
#: Cell size (mm) of the raster used to check overlap and cover at load, and by zone_at.
CHECK_CELL_MM: Final = 0.5
#: Scalp area the zones may leave uncovered (rounding of curved borders), as a fraction.
MAX_UNCOVERED_FRACTION: Final = 0.005

Point = tuple[float, float]


@dataclass(frozen=True)
class Zone:
    """One zone: `id` is the zone_id on the wire, `name` the key profiles use."""

    id: int
    name: str
    label: str
    outline_mm: tuple[Point, ...]
    area_mm2: float
    #: the deepest a profile may treat this region (None: the device cap), and why
    max_depth_um: int | None = None
    max_depth_source: str = ""


@dataclass(frozen=True)
class ZoneRaster:
    """Zone ids on a grid: labels[row, col] is the zone holding that cell's centre, 0 if none."""

    x0_mm: float
    y0_mm: float
    cell_mm: float
    labels: npt.NDArray[np.uint8]

    def cell_of(self, x_mm: float, y_mm: float) -> tuple[int, int] | None:
        """(row, col) of the cell holding the point, or None outside the grid."""
        col_f = (x_mm - self.x0_mm) / self.cell_mm
        row_f = (y_mm - self.y0_mm) / self.cell_mm
        if not (math.isfinite(col_f) and math.isfinite(row_f)):
            return None
        row, col = math.floor(row_f), math.floor(col_f)
        ny, nx = self.labels.shape
        if 0 <= row < ny and 0 <= col < nx:
            return row, col
        return None


def polygon_area_mm2(outline: tuple[Point, ...] | list[Point]) -> float:
    """Shoelace area of a simple polygon (either winding)."""
    s = 0.0
    for i, (x1, y1) in enumerate(outline):
        x2, y2 = outline[(i + 1) % len(outline)]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def points_in_polygon(
    xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], outline: tuple[Point, ...]
) -> npt.NDArray[np.bool_]:
    """Vectorised crossing-number test; half-open, so a shared border counts for one side only.

    `xs` and `ys` broadcast together: on a grid, pass a row of x and a column of y
    (`xs[None, :]`, `ys[:, None]`), and the per-edge work on y is done once per row.
    """
    inside = np.zeros(np.broadcast(xs, ys).shape, dtype=bool)
    n = len(outline)
    for i in range(n):
        xi, yi = outline[i]
        xj, yj = outline[(i + 1) % n]
        if yi == yj:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (yi > ys) != (yj > ys)
        x_at = xi + (xj - xi) * (ys - yi) / (yj - yi)
        inside ^= crosses & (xs < x_at)
    return inside


def point_in_polygon(x: float, y: float, outline: tuple[Point, ...]) -> bool:
    """The same test as points_in_polygon, for one point, without numpy overhead."""
    inside = False
    n = len(outline)
    for i in range(n):
        xi, yi = outline[i]
        xj, yj = outline[(i + 1) % n]
        if (yi > y) != (yj > y) and x < xi + (xj - xi) * (y - yi) / (yj - yi):
            inside = not inside
    return inside


def _bbox(outline: tuple[Point, ...]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in outline]
    ys = [p[1] for p in outline]
    return min(xs), min(ys), max(xs), max(ys)


@dataclass
class ZoneMap:
    """The zones of the scalp map, in wire-id order, with lookups and cached rasters."""

    zones: tuple[Zone, ...]
    scalp_outline_mm: tuple[Point, ...] = ()
    bounds_mm: tuple[float, float, float, float] = field(init=False)
    _boxes: tuple[tuple[float, float, float, float], ...] = field(init=False, repr=False)
    _rasters: dict[float, ZoneRaster] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._boxes = tuple(_bbox(z.outline_mm) for z in self.zones)
        self.bounds_mm = (
            min(b[0] for b in self._boxes),
            min(b[1] for b in self._boxes),
            max(b[2] for b in self._boxes),
            max(b[3] for b in self._boxes),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(z.name for z in self.zones)

    @property
    def area_mm2(self) -> float:
        return sum(z.area_mm2 for z in self.zones)

    def by_name(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise ProfileError(f"unknown zone {name!r}; the map has {', '.join(self.names)}")

    def by_id(self, zone_id: int) -> Zone:
        for zone in self.zones:
            if zone.id == zone_id:
                return zone
        ids = ", ".join(str(z.id) for z in self.zones)
        raise ProfileError(f"unknown zone id {zone_id}; the map has ids {ids}")

    def zone_at(self, x_mm: float, y_mm: float) -> Zone | None:
        """The zone holding the point (exact polygon test; bounding boxes first)."""
        for zone, (x0, y0, x1, y1) in zip(self.zones, self._boxes, strict=True):
            if (
                x0 <= x_mm <= x1
                and y0 <= y_mm <= y1
                and point_in_polygon(x_mm, y_mm, zone.outline_mm)
            ):
                return zone
        return None

    def raster(self, cell_mm: float = 1.0) -> ZoneRaster:
        """Zone ids of the cells of a grid covering the map; computed once per cell size."""
        if not (math.isfinite(cell_mm) and cell_mm > 0):
            raise ValueError(f"cell size must be a positive number of mm, not {cell_mm}")
        cached = self._rasters.get(cell_mm)
        if cached is not None:
            return cached
        xmin, ymin, xmax, ymax = self.bounds_mm
        x0 = math.floor(xmin / cell_mm) * cell_mm
        y0 = math.floor(ymin / cell_mm) * cell_mm
        nx = math.ceil((xmax - x0) / cell_mm)
        ny = math.ceil((ymax - y0) / cell_mm)
        xs = x0 + (np.arange(nx, dtype=np.float64) + 0.5) * cell_mm
        ys = y0 + (np.arange(ny, dtype=np.float64) + 0.5) * cell_mm
        gx, gy = xs[None, :], ys[:, None]  # broadcast to (ny, nx): row = y, col = x
        labels = np.zeros((ny, nx), dtype=np.uint8)
        for zone in self.zones:
            # Earlier zones win a cell; load_zone_map has refused overlaps anyway.
            labels[(labels == 0) & points_in_polygon(gx, gy, zone.outline_mm)] = zone.id
        labels.setflags(write=False)
        raster = ZoneRaster(x0_mm=x0, y0_mm=y0, cell_mm=cell_mm, labels=labels)
        self._rasters[cell_mm] = raster
        return raster


def _segments_cross(p1: Point, p2: Point, p3: Point, p4: Point, *, proper: bool) -> bool:
    """Whether segments p1p2 and p3p4 intersect (properly: crossing in their interiors)."""

    def orient(a: Point, b: Point, c: Point) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = orient(p3, p4, p1), orient(p3, p4, p2)
    d3, d4 = orient(p1, p2, p3), orient(p1, p2, p4)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    if proper:
        return False

    def on(a: Point, b: Point, c: Point) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(
            a[1], b[1]
        )

    return (
        (d1 == 0 and on(p3, p4, p1))
        or (d2 == 0 and on(p3, p4, p2))
        or (d3 == 0 and on(p1, p2, p3))
        or (d4 == 0 and on(p1, p2, p4))
    )


def self_intersection(outline: tuple[Point, ...]) -> tuple[int, int] | None:
    """Indices of two non-adjacent edges that touch or cross, or None for a simple polygon."""
    n = len(outline)
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a vertex by construction
            a1, a2 = outline[i], outline[(i + 1) % n]
            b1, b2 = outline[j], outline[(j + 1) % n]
            if _segments_cross(a1, a2, b1, b2, proper=False):
                return i, j
    return None


def _edges_cross(a: tuple[Point, ...], b: tuple[Point, ...]) -> bool:
    for i in range(len(a)):
        for j in range(len(b)):
            if _segments_cross(a[i], a[(i + 1) % len(a)], b[j], b[(j + 1) % len(b)], proper=True):
                return True
    return False


def load_zone_map(path: Path | None = None) -> ZoneMap:
    """The zone map in `path` (default: the shipped profiles/zones.yaml), or a ProfileError."""

    from devicectl.yaml_reader import profile_error, read_yaml  # YAML only when a map is read

    doc = read_yaml(path or DEFAULT_ZONES_PATH, what="zone map")
    return _ZoneMapReader(doc, profile_error).read()


_default_cache: dict[tuple[int, int], ZoneMap] = {}


def default_zone_map() -> ZoneMap:
    """The shipped map, loaded once per version of the file (checking it costs ~50 ms)."""
    try:
        st = DEFAULT_ZONES_PATH.stat()
        key = (st.st_mtime_ns, st.st_size)
    except OSError:
        return load_zone_map()  # raises the located ProfileError
    if key not in _default_cache:
        _default_cache.clear()
        _default_cache[key] = load_zone_map()
    return _default_cache[key]


class _ZoneMapReader:
    """Checks the plain data of a zone map, collecting every located problem."""

    def __init__(self, doc: Any, make_error: Any) -> None:
        self.doc = doc
        self.make_error = make_error
        self.problems: list[str] = []

    def fail(self, loc: tuple[str | int, ...], why: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(loc, why, key=key))

    def read(self) -> ZoneMap:
        data = self.doc.data
        if not isinstance(data, dict):
            self.fail((), "a zone map is a mapping with scalp_outline_mm and zones")
            raise self.make_error(self.problems)
        for key in data:
            if key not in ("scalp_outline_mm", "zones"):
                self.fail((key,), "unknown field; allowed: scalp_outline_mm, zones", key=True)
        scalp = self.outline(data.get("scalp_outline_mm"), ("scalp_outline_mm",))
        zones = self.zones(data.get("zones"))
        if not self.problems:
            self.geometry(zones, scalp)
        if self.problems:
            raise self.make_error(self.problems)
        return ZoneMap(zones=tuple(zones), scalp_outline_mm=scalp or ())

    def outline(self, raw: Any, loc: tuple[str | int, ...]) -> tuple[Point, ...] | None:
        if raw is None:
            self.fail(loc, "missing; give the outline as a list of [x, y] points in mm")
            return None
        if not isinstance(raw, list) or len(raw) < 3:
            self.fail(loc, "must be a list of at least 3 [x, y] points in mm")
            return None
        points: list[Point] = []
        for i, p in enumerate(raw):
            ok = isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p)
            if not ok:
                self.fail((*loc, i), "must be a point [x, y] of two finite numbers (mm)")
                return None
            points.append((float(p[0]), float(p[1])))
        outline = tuple(points)
        if len(set(outline)) != len(outline):
            self.fail(loc, "repeats a vertex; each vertex once")
            return None
        crossing = self_intersection(outline)
        if crossing is not None:
            i, j = crossing
            self.fail(
                loc, f"self-intersecting: edge {i}-{i + 1} meets edge {j}-{(j + 1) % len(outline)}"
            )
            return None
        if polygon_area_mm2(outline) <= 0:
            self.fail(loc, "has no area")
            return None
        return outline

    def zones(self, raw: Any) -> list[Zone]:
        if not isinstance(raw, list) or not raw:
            self.fail(("zones",), "must be a non-empty list of zones")
            return []
        zones: list[Zone] = []
        seen: dict[str, int] = {}
        for i, z in enumerate(raw):
            loc: tuple[str | int, ...] = ("zones", i)
            if not isinstance(z, dict):
                self.fail(loc, "a zone is a mapping with id, name, label and outline_mm")
                continue
            for key in z:
                if key not in _ZONE_FIELDS:
                    self.fail((*loc, key), f"unknown field; allowed: {', '.join(_ZONE_FIELDS)}",
                              key=True)
            zone_id, name, label = z.get("id"), z.get("name"), z.get("label")
            if type(zone_id) is not int or zone_id != i + 1:
                self.fail((*loc, "id"), f"must be {i + 1}: ids run 1..N in the order of the list")
            if name not in KNOWN_ZONE_NAMES:
                self.fail(
                    (*loc, "name"),
                    f"{name!r} is not a known zone; known: {', '.join(KNOWN_ZONE_NAMES)}",
                )
            elif name in seen:
                self.fail(
                    (*loc, "name"), f"{name!r} is already zones[{seen[name]}]; each zone once"
                )
            else:
                seen[name] = i
            if not isinstance(label, str) or not label.strip():
                self.fail((*loc, "label"), "must be a display name (text)")
            outline = self.outline(z.get("outline_mm"), (*loc, "outline_mm"))
            max_um, source = self.max_depth(z, loc)
            if outline is not None and isinstance(name, str) and isinstance(label, str):
                zones.append(Zone(i + 1, name, label, outline, polygon_area_mm2(outline),
                                  max_um, source))
        for name in KNOWN_ZONE_NAMES:
            if name not in seen:
                self.fail(
                    ("zones",),
                    f"zone {name!r} is missing; the map needs all of {', '.join(KNOWN_ZONE_NAMES)}",
                )
        return zones

    def max_depth(self, z: dict[str, Any], loc: tuple[str | int, ...]) -> tuple[int | None, str]:
        """The region's depth limit (µm) and its source; both or neither."""
        raw, source = z.get("max_depth_mm"), z.get("max_depth_source")
        if raw is None:
            if source is not None:
                self.fail((*loc, "max_depth_source"), "a source without max_depth_mm")
            return None, ""
        if not _is_number(raw) or not 0 < raw * 1000 <= DEPTH_CAP_UM:
            self.fail((*loc, "max_depth_mm"),
                      f"must be a depth in mm above 0 and at most the cap ({DEPTH_CAP_UM} µm)")
            return None, ""
        if not isinstance(source, str) or not source.strip():
            self.fail((*loc, "max_depth_source"), "give the source of max_depth_mm (text)")
            return None, ""
        return round(raw * 1000), source.strip()

    def geometry(self, zones: list[Zone], scalp: tuple[Point, ...] | None) -> None:
        probe = ZoneMap(zones=tuple(zones))
        cell = CHECK_CELL_MM
        raster = probe.raster(cell)
        ny, nx = raster.labels.shape
        gx = (raster.x0_mm + (np.arange(nx, dtype=np.float64) + 0.5) * cell)[None, :]
        gy = (raster.y0_mm + (np.arange(ny, dtype=np.float64) + 0.5) * cell)[:, None]
        masks = [points_in_polygon(gx, gy, z.outline_mm) for z in zones]
        for a in range(len(zones)):
            for b in range(a + 1, len(zones)):
                za, zb = zones[a], zones[b]
                if np.any(masks[a] & masks[b]) or _edges_cross(za.outline_mm, zb.outline_mm):
                    self.fail(
                        ("zones", b, "outline_mm"),
                        f"overlaps zone {za.name!r}; zones must not overlap",
                    )
        if scalp is None:
            return
        in_scalp = points_in_polygon(gx, gy, scalp)
        for i, (zone, mask) in enumerate(zip(zones, masks, strict=True)):
            outside = int(np.count_nonzero(mask & ~in_scalp))
            if outside or _edges_cross(zone.outline_mm, scalp):
                self.fail(
                    ("zones", i, "outline_mm"),
                    f"reaches outside scalp_outline_mm (about {outside * cell * cell:.0f} mm²)",
                )
        uncovered = float(np.count_nonzero(in_scalp & (raster.labels == 0))) * cell * cell
        scalp_area = polygon_area_mm2(scalp)
        if uncovered > MAX_UNCOVERED_FRACTION * scalp_area:
            self.fail(
                ("scalp_outline_mm",),
                f"the zones leave {uncovered:.0f} mm² of the scalp uncovered; they must cover it",
            )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
