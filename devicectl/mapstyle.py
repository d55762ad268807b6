"""The scalp map's colours and words, shared by the session report's map and the live page.

A zone is shaded by the share of its target reached (0 → red, ½ → yellow, 1 →
green: matplotlib's RdYlGn, reproduced here without matplotlib so the page's
server can use it) and captioned with its label and "N % of T %". A zone the
plan does not treat is pale grey and says so.
"""

from __future__ import annotations

import math
from typing import Final

#: ColorBrewer RdYlGn, 11 classes: the anchors of matplotlib's "RdYlGn" colormap.
RDYLGN: Final = ("#a50026", "#d73027", "#f46d43", "#fdae61", "#fee08b", "#ffffbf",
                 "#d9ef8b", "#a6d96a", "#66bd63", "#1a9850", "#006837")
#: matplotlib's colormaps are lookup tables of this many entries.
_LUT = 256
NOT_PLANNED_FILL: Final = "#f7f7f7"
NOT_PLANNED: Final = "not in the plan"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def reached_colour(reached: float) -> str:
    """The shade of a zone that reached `reached` of its target (clipped to 0..1),
    as matplotlib's colormaps["RdYlGn"](reached) gives it (to within 1/255)."""
    x = min(1.0, max(0.0, reached))
    x = min(int(x * _LUT), _LUT - 1) / (_LUT - 1)  # the colormap's lookup-table step
    pos = x * (len(RDYLGN) - 1)
    i = min(int(pos), len(RDYLGN) - 2)
    f = pos - i
    a, b = _rgb(RDYLGN[i]), _rgb(RDYLGN[i + 1])
    r, g, bl = (round(ca + (cb - ca) * f) for ca, cb in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


def reached(fraction: float, target_fraction: float) -> float:
    return fraction / target_fraction if target_fraction else 1.0


def share_text(fraction: float, target_fraction: float) -> str:
    """A zone's share at target as a whole percent (no sign), never rounded up to its
    target when short of it (89.6 of 90 is "89.6") nor down to 0 above 0 ("<1")."""
    pct = 100 * fraction
    if 0 < pct < 0.5:
        return "<1"
    if fraction < target_fraction and round(pct) >= round(100 * target_fraction):
        return f"{math.floor(pct * 10) / 10:.1f}"
    return f"{pct:.0f}"


def zone_words(fraction: float, target_fraction: float) -> str:
    """The second line of a zone's caption: "N % of T %"."""
    return f"{share_text(fraction, target_fraction)} % of {100 * target_fraction:.0f} %"


def zone_caption(label: str, fraction: float | None, target_fraction: float | None) -> str:
    """A zone's caption on the map: its label, then how far it got (or not planned)."""
    if fraction is None or target_fraction is None:
        return f"{label}\n{NOT_PLANNED}"
    return f"{label}\n{zone_words(fraction, target_fraction)}"
