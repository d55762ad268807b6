"""The session report's figures (matplotlib, no display): the scalp map with each
zone's final coverage, depth over time with the cap, stamp rate over time.

Each function takes plain data and returns a matplotlib Figure; report.py saves
them as PNG and in the PDF.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devicectl.records import ZoneCoverage
from devicectl.safety import DEPTH_CAP_UM
from devicectl.zones import ZoneMap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from devicectl.patches import Patch

NO_SAMPLES = "no samples recorded"


@dataclass(frozen=True, slots=True)
class Sample:
    """One SAMPLE event: about a second of the pen, from the session's records."""

    t_s: float
    depth_cmd_um: int | None
    depth_meas_um: int | None
    rate_meas_dhz: int | None


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    # Figure() without pyplot: no global state, no display backend needed.
    return Figure(figsize=(width_in, height_in), dpi=110)


def coverage_map(zone_map: ZoneMap, zones: Sequence[ZoneCoverage], title: str,
                 patches: Mapping[str, Sequence[Patch]] | None = None) -> Figure:
    """The scalp map, each treated zone shaded by coverage reached over its target;
    a zone treated as patches shades its patches (margins dashed) instead."""
    from matplotlib.patches import Polygon

    from devicectl.mapstyle import NOT_PLANNED_FILL, reached, reached_colour, zone_caption

    fig = _figure(6.0, 6.4)
    ax = fig.add_subplot()
    by_name = {z.name: z for z in zones}
    if zone_map.scalp_outline_mm:
        ax.add_patch(Polygon(zone_map.scalp_outline_mm, closed=True, facecolor="#eeeeee",
                             edgecolor="#999999", linewidth=0.8))
    for zone in zone_map.zones:
        rec = by_name.get(zone.name)
        face: str | tuple[float, float, float, float]
        # The colours and words the live page's map uses too (devicectl/mapstyle.py).
        if rec is None:
            face, text = NOT_PLANNED_FILL, zone_caption(zone.label, None, None)
        else:
            face = reached_colour(reached(rec.fraction, rec.target_fraction))
            text = zone_caption(zone.label, rec.fraction, rec.target_fraction)
        shapes = (patches or {}).get(zone.name, ())
        ax.add_patch(Polygon(zone.outline_mm, closed=True, edgecolor="#333333", linewidth=1.0,
                             facecolor=NOT_PLANNED_FILL if shapes else face))
        for patch in shapes:
            _draw_patch(ax, patch, face)
        xs = [p[0] for p in zone.outline_mm]
        ys = [p[1] for p in zone.outline_mm]
        ax.text(sum(xs) / len(xs), sum(ys) / len(ys), text, ha="center", va="center",
                fontsize=7, parse_math=False)  # zone labels are data people write
    x0, y0, x1, y1 = zone_map.bounds_mm
    ax.set_xlim(x0 - 5, x1 + 5)
    ax.set_ylim(y1 + 5, y0 - 5)  # the hairline at the top, the nape at the bottom
    ax.set_aspect("equal")
    ax.set_xlabel("x, mm (patient's right +)")
    ax.set_ylabel("y, mm from the frontal hairline")
    ax.set_title(title, fontsize=10, parse_math=False)
    fig.tight_layout()
    return fig


def _draw_patch(ax: Any, patch: Patch, face: Any) -> None:
    """A patch filled in its zone's colour, its margin's edge dashed."""
    import numpy as np
    from matplotlib.patches import Circle, Polygon

    if patch.centre_mm is not None:
        ax.add_patch(Circle(patch.centre_mm, patch.radius_mm, facecolor=face,
                            edgecolor="#333333", linewidth=0.8))
    else:
        ax.add_patch(Polygon(patch.outline_mm, closed=True, facecolor=face,
                             edgecolor="#333333", linewidth=0.8))
    if patch.margin_mm > 0:
        x0, y0, x1, y1 = patch.bounds_mm
        gx, gy = np.meshgrid(np.arange(x0 - 1, x1 + 1, 0.25), np.arange(y0 - 1, y1 + 1, 0.25))
        ax.contour(gx, gy, patch.contains(gx, gy).astype(float), levels=[0.5],
                   colors="#333333", linestyles="--", linewidths=0.8)


def _no_samples(ax: object) -> None:
    ax.text(0.5, 0.5, NO_SAMPLES, ha="center", va="center",  # type: ignore[attr-defined]
            transform=ax.transAxes, fontsize=12, color="#666666")  # type: ignore[attr-defined]


def depth_over_time(samples: Sequence[Sample]) -> Figure:
    """Commanded and measured depth (mm) with the cap drawn as a line."""
    fig = _figure(7.5, 3.0)
    ax = fig.add_subplot()
    ax.axhline(DEPTH_CAP_UM / 1000, color="#d62728", linestyle="--", linewidth=1.2,
               label=f"cap {DEPTH_CAP_UM / 1000:.2f} mm")
    cmd = [(s.t_s, s.depth_cmd_um / 1000) for s in samples if s.depth_cmd_um is not None]
    meas = [(s.t_s, s.depth_meas_um / 1000) for s in samples if s.depth_meas_um is not None]
    if cmd:
        ax.step(*zip(*cmd, strict=True), where="post", color="#1f77b4", label="commanded")
    if meas:
        ax.plot(*zip(*meas, strict=True), color="#ff7f0e", linewidth=0.9,
                label="measured (peak per sample)")
    if not samples:
        _no_samples(ax)
    ax.set_ylim(0, DEPTH_CAP_UM / 1000 * 1.2)
    ax.set_xlabel("time since start, s")
    ax.set_ylabel("depth, mm")
    ax.set_title("Depth over time", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def rate_over_time(samples: Sequence[Sample]) -> Figure:
    """The measured stamp rate (Hz)."""
    fig = _figure(7.5, 2.6)
    ax = fig.add_subplot()
    pts = [(s.t_s, s.rate_meas_dhz / 10) for s in samples if s.rate_meas_dhz is not None]
    if pts:
        ax.plot(*zip(*pts, strict=True), color="#2ca02c", linewidth=0.9)
        ax.set_ylim(bottom=0)
    else:
        _no_samples(ax)
    ax.set_xlabel("time since start, s")
    ax.set_ylabel("stamp rate, Hz")
    ax.set_title("Stamp rate over time", fontsize=10)
    fig.tight_layout()
    return fig
