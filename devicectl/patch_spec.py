"""A patch as a profile gives it (pydantic): the profile side of devicectl/patches.py.

Kept apart from the geometry so that the pen process, whose coverage grid
draws the patches, never loads pydantic (tests/test_layers.py).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devicectl.patches import Patch
from devicectl.zones import polygon_area_mm2, self_intersection


class PatchSpec(BaseModel):
    """One patch as a profile gives it: a circle (centre_mm, radius_mm) or a polygon
    (outline_mm)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(default="", description="Optional label, e.g. 'left occipital patch'.")
    centre_mm: list[float] | None = Field(
        default=None, description="A circle's centre [x, y] on the zone map (mm)."
    )
    radius_mm: float | None = Field(default=None, description="A circle's radius (mm).", gt=0)
    outline_mm: list[list[float]] | None = Field(
        default=None, description="A polygon: at least 3 points [x, y] on the zone map (mm)."
    )

    @field_validator("centre_mm")
    @classmethod
    def _centre(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or not all(map(math.isfinite, value))):
            raise ValueError("must be a point [x, y] of two finite numbers (mm)")
        return value

    @field_validator("radius_mm")
    @classmethod
    def _radius(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{value} is not a radius; give a finite number of mm above 0")
        return value

    @field_validator("outline_mm")
    @classmethod
    def _outline(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is None:
            return None
        if len(value) < 3:
            raise ValueError(
                f"a polygon needs at least 3 points [x, y] (mm), not {len(value)}"
            )
        for i, p in enumerate(value):
            if len(p) != 2 or not all(map(math.isfinite, p)):
                raise ValueError(f"point {i} must be [x, y], two finite numbers (mm)")
        outline = tuple((float(p[0]), float(p[1])) for p in value)
        if len(set(outline)) != len(outline):
            raise ValueError("repeats a point; give each corner once")
        crossing = self_intersection(outline)
        if crossing is not None:
            i, j = crossing
            raise ValueError(
                f"crosses itself: edge {i}-{i + 1} meets edge {j}-{(j + 1) % len(outline)}"
            )
        if polygon_area_mm2(outline) <= 0:
            raise ValueError("has no area")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> PatchSpec:
        circle = self.centre_mm is not None or self.radius_mm is not None
        if circle and self.outline_mm is not None:
            raise ValueError("a patch is a circle (centre_mm, radius_mm) or a polygon "
                             "(outline_mm), not both")
        if not circle and self.outline_mm is None:
            raise ValueError("give a circle (centre_mm and radius_mm) or a polygon (outline_mm)")
        if circle and (self.centre_mm is None or self.radius_mm is None):
            missing = "radius_mm" if self.radius_mm is None else "centre_mm"
            raise ValueError(f"a circle needs both centre_mm and radius_mm; {missing} is missing")
        return self

    def shape(self, margin_mm: float) -> Patch:
        if self.outline_mm is not None:
            outline = tuple((float(p[0]), float(p[1])) for p in self.outline_mm)
            return Patch(self.name, None, 0.0, outline, margin_mm)
        assert self.centre_mm is not None and self.radius_mm is not None  # _one_shape
        centre = (float(self.centre_mm[0]), float(self.centre_mm[1]))
        return Patch(self.name, centre, float(self.radius_mm), (), margin_mm)
