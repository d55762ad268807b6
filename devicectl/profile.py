"""Treatment profiles: the pydantic models, their rules, and loading with located errors.

Files come from people, so reading them must never crash: every problem is a
located line (`file:line:col: field.path: why`), all at once, in a ProfileError.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from devicectl.adjuncts import AdjunctName, AdjunctUse, adjunct_entry, adjunct_instructions
from devicectl.errors import ProfileError
from devicectl.patch_spec import PatchSpec
from devicectl.patches import (
    MAX_MARGIN_MM,
    MAX_PATCHES,
    Patch,
    zone_patch_problems,
)
from devicectl.safety import DEPTH_CAP_UM, DEPTH_STEP_UM, INTERVAL_DEPTH_UM, MIN_INTERVAL_DAYS
from devicectl.safety_gonogo import region_depth_problems
from devicectl.yaml_reader import (
    Loc,
    Mark,
    YamlDoc,
    parse_yaml,
    profile_error,
    read_yaml,
)
from devicectl.zones import KNOWN_ZONE_NAMES, ZoneMap, default_zone_map

# --- the profile format -----------------------------------------------------

Condition = Literal["androgenetic_alopecia", "alopecia_areata", "telogen_effluvium"]
Adjunct = AdjunctName
#: Hours to wait after a session before applying topicals, unless the site sets its own.
DEFAULT_TOPICAL_WAIT_HOURS: Final = 24


def mm_text(um: int) -> str:
    """Micrometres as mm for people: 1200 -> "1.2", 1000 -> "1.0", 50 -> "0.05"."""
    text = f"{um / 1000:g}"
    return text if "." in text else text + ".0"


_CAP_MM: Final = mm_text(DEPTH_CAP_UM)
_STEP_MM: Final = mm_text(DEPTH_STEP_UM)
_INTERVAL_MM: Final = mm_text(INTERVAL_DEPTH_UM)
#: Wire limit of rate_dhz (u16); the connected pen's own range is checked by the plan.
#: The most needles a cartridge may state (DEVICE_INFO's needle_count is a u8).
MAX_NEEDLES: Final = 255
_MAX_RATE_DHZ: Final = 0xFFFF


def _show(value: Any) -> str:
    """A value as the file wrote it, near enough: 5.0 read from `5` shows as 5."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _exact_units(value: float, per_unit: int, step: int) -> int | None:
    """`value` × per_unit as an exact integer multiple of `step`, else None (never rounded)."""
    try:
        scaled = Decimal(repr(float(value))) * per_unit
    except (InvalidOperation, ValueError, OverflowError):
        return None
    if scaled != scaled.to_integral_value() or int(scaled) % step:
        return None
    return int(scaled)


def depth_um_of(depth_mm: float) -> int:
    """Depth in µm, exactly; raises ValueError naming the cap or the step (never clamps)."""
    if not math.isfinite(depth_mm) or depth_mm <= 0:
        raise ValueError(f"{_show(depth_mm)} is not a depth; allowed: {_STEP_MM} to {_CAP_MM} mm")
    if depth_mm * 1000 > DEPTH_CAP_UM:
        raise ValueError(
            f"{_show(depth_mm)} exceeds the {_CAP_MM} mm cap; allowed: up to {_CAP_MM} mm"
        )
    depth_um = _exact_units(depth_mm, 1000, DEPTH_STEP_UM)
    if depth_um is None:
        raise ValueError(f"{_show(depth_mm)} is not in the pen's {_STEP_MM} mm steps")
    return depth_um


def rate_dhz_of(rate_hz: float) -> int:
    """Stamp rate in 0.1 Hz units, exactly; raises ValueError otherwise."""
    rate_dhz = _exact_units(rate_hz, 10, 1) if math.isfinite(rate_hz) and rate_hz > 0 else None
    if rate_dhz is None or rate_dhz > _MAX_RATE_DHZ:
        raise ValueError(f"{_show(rate_hz)} is not a stamp rate; give Hz > 0 in 0.1 Hz steps")
    return rate_dhz


class ZoneTarget(BaseModel):
    """What to do in one zone of the map."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    zone: str = Field(description="Zone name from profiles/zones.yaml, e.g. vertex.")
    depth_mm: float = Field(
        description=f"Needle depth in mm, {_STEP_MM} mm steps, at most {_CAP_MM} mm.",
        json_schema_extra={"exclusiveMinimum": 0, "maximum": DEPTH_CAP_UM / 1000},
    )
    rate_hz: float = Field(description="Stamp rate in Hz (0.1 Hz steps).", gt=0)
    target_passes: int = Field(description="Passes every spot should get.", ge=1, le=20)
    max_passes: int = Field(description="Passes after which a spot is not stamped.", ge=1, le=20)
    target_fraction: float = Field(
        description="Fraction of the zone that must reach target_passes.", gt=0, le=1
    )
    max_punctures_per_cm2: float | None = Field(
        default=None,
        description="Optional cap on the dose of any spot, in punctures per cm² "
        "(the lower of this and max_passes applies).",
        gt=0,
        le=100_000,
    )
    patches: list[PatchSpec] = Field(
        default_factory=list,
        max_length=MAX_PATCHES,
        description="Treat only these patches of the zone: circles {centre_mm: [x, y], "
        "radius_mm} or polygons {outline_mm: [[x, y], ...]} in the zone map's mm "
        "(docs/profiles.md).",
    )
    patch_margin_mm: float = Field(
        default=0.0,
        description="Skin treated around each patch (mm); clipped to the zone.",
        ge=0,
        le=MAX_MARGIN_MM,
    )

    @field_validator("zone")
    @classmethod
    def _zone_known(cls, name: str, info: ValidationInfo) -> str:
        zone_map = info.context.get("zone_map") if isinstance(info.context, dict) else None
        known = zone_map.names if isinstance(zone_map, ZoneMap) else KNOWN_ZONE_NAMES
        if name not in known:
            raise ValueError(f"{_show(name)} is not a zone of the map; known: {', '.join(known)}")
        return name

    @field_validator("depth_mm")
    @classmethod
    def _depth_allowed(cls, depth_mm: float) -> float:
        depth_um_of(depth_mm)
        return depth_mm

    @field_validator("rate_hz")
    @classmethod
    def _rate_allowed(cls, rate_hz: float) -> float:
        rate_dhz_of(rate_hz)
        return rate_hz

    @property
    def depth_um(self) -> int:
        return depth_um_of(self.depth_mm)

    @property
    def patch_shapes(self) -> tuple[Patch, ...]:
        """The patches with the zone's margin (empty: the whole zone is treated)."""
        return tuple(p.shape(self.patch_margin_mm) for p in self.patches)

    @property
    def rate_dhz(self) -> int:
        return rate_dhz_of(self.rate_hz)


class Profile(BaseModel):
    """A treatment profile, written and approved by a clinician."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(description="Short name shown to the technician.", min_length=1)
    version: str = Field(description='Revision, e.g. 3 or "1.2".', min_length=1)
    condition: Condition
    approved_by: str = Field(description="The approving clinician.", min_length=1)
    approved_on: date = Field(description="Date of approval, e.g. 2024-05-01.")
    min_interval_days: int = Field(
        description=f"Least days between sessions on a zone; ≥ {MIN_INTERVAL_DAYS} for zones "
        f"deeper than {_INTERVAL_MM} mm.",
        ge=1,
        le=365,
    )
    needle_count: int | list[int] = Field(
        description="Needles of the cartridge this profile is for: a count (12), or the "
        "lowest and highest counts allowed ([12, 16]). The pen's cartridge must match.",
    )
    adjuncts: list[AdjunctUse] = Field(
        default_factory=list,
        description="Adjunct treatments the patient uses: a name (its usual timing) or "
        "{name, timing} with timing in_session, wait or oral (devicectl/adjuncts.py).",
    )
    notes: str = Field(default="", description="Free text for the technician.")
    zones: list[ZoneTarget] = Field(description="Zones in treatment order.", min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError(f'{_show(value)} must be text; quote it: "{value}"')
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("needle_count")
    @classmethod
    def _needles(cls, value: int | list[int]) -> int | list[int]:
        counts = [value] if isinstance(value, int) else value
        if not 1 <= len(counts) <= 2:
            raise ValueError(f"{_show(value)} must be a count, or [lowest, highest]")
        if any(not 1 <= n <= MAX_NEEDLES for n in counts):
            raise ValueError(f"{_show(value)} is not a needle count; allowed: 1 to {MAX_NEEDLES}")
        if counts[0] > counts[-1]:
            raise ValueError(f"{_show(value)}: the lowest count comes first, e.g. [12, 16]")
        return value

    @property
    def needle_counts(self) -> tuple[int, int]:
        """(lowest, highest) needle count of the cartridges this profile allows."""
        counts = [self.needle_count] if isinstance(self.needle_count, int) else self.needle_count
        return counts[0], counts[-1]

    @field_validator("approved_on", mode="before")
    @classmethod
    def _approved_date(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            raise ValueError("must be a date without a time, e.g. 2024-05-01")
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{_show(value)} is not a date like 2024-05-01") from None
        return value

    @field_validator("adjuncts", mode="before")
    @classmethod
    def _adjuncts_lower(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [adjunct_entry(v) for v in value]
        return value

    @model_validator(mode="after")
    def _cross_zone_rules(self) -> Profile:
        rows = [ZoneRow(z.zone, z.depth_um, z.target_passes, z.max_passes) for z in self.zones]
        for _loc, why in cross_zone_problems(rows, self.min_interval_days):
            raise ValueError(why)
        return self


class ZoneRow(NamedTuple):
    """What the rules across fields need of a zone; None where the file's value is unusable."""

    name: str | None
    depth_um: int | None
    target_passes: int | None
    max_passes: int | None


def cross_zone_problems(
    zones: Sequence[ZoneRow], min_interval_days: int | None
) -> list[tuple[Loc, str]]:
    """Rules across fields: max ≥ target + 1 pass; each zone once; deep zones need the
    minimum interval."""
    problems: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for i, (name, _depth, target, most) in enumerate(zones):
        if target is not None and most is not None and most < target + 1:
            why = (
                f"{most} is below target_passes {target} + 1; the maximum must leave at "
                f"least one pass above the target (max_passes ≥ {target + 1})"
            )
            problems.append((("zones", i, "max_passes"), why))
        if name is None:
            continue
        if name in first:
            why = f"{name!r} is already zones[{first[name]}]; each zone once"
            problems.append((("zones", i, "zone"), why))
        else:
            first[name] = i
    if min_interval_days is not None and min_interval_days < MIN_INTERVAL_DAYS:
        for i, (name, depth_um, _target, _most) in enumerate(zones):
            if depth_um is not None and depth_um > INTERVAL_DEPTH_UM:
                why = (
                    f"{min_interval_days} days is too short: zones[{i}] ({name}) is at "
                    f"{mm_text(depth_um)} mm, and zones deeper than {_INTERVAL_MM} mm need at "
                    f"least {MIN_INTERVAL_DAYS} days"
                )
                problems.append((("min_interval_days",), why))
                break
    return problems


# --- loading ----------------------------------------------------------------


@dataclass(frozen=True)
class LoadedProfile:
    """A valid profile, its warnings (shown and recorded), and the hash naming it in records."""

    path: Path | None  # None when loaded from text (a stored session's copy)
    profile: Profile
    warnings: tuple[str, ...]
    content_hash: str
    text: str  # the file as written, for the session records


def content_hash(profile: Profile) -> str:
    """sha256 of the canonical JSON form: comments, key order and layout do not change it
    (nor do the patch fields of a zone without patches: older profiles keep their hash)."""
    data = profile.model_dump(mode="json")
    for zone in data["zones"]:
        if not zone["patches"] and zone["patch_margin_mm"] == 0:
            del zone["patches"], zone["patch_margin_mm"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def profile_warnings(profile: Profile, topical_wait_hours: float) -> tuple[str, ...]:
    return adjunct_instructions(profile.adjuncts, topical_wait_hours)


def load_profile(
    path: Path,
    *,
    zone_map: ZoneMap | None = None,
    topical_wait_hours: float = DEFAULT_TOPICAL_WAIT_HOURS,
) -> LoadedProfile:
    """A validated profile from a YAML file, or a ProfileError listing every located problem."""
    path = Path(path)
    doc = read_yaml(path)
    return _validated(doc, path, zone_map, topical_wait_hours)


def load_profile_text(
    text: str,
    name: str,
    *,
    zone_map: ZoneMap | None = None,
    topical_wait_hours: float = DEFAULT_TOPICAL_WAIT_HOURS,
) -> LoadedProfile:
    """As load_profile, from text (e.g. a session record's copy); `name` stands for the file."""
    raw = text.encode("utf-8", errors="surrogateescape")
    return _validated(parse_yaml(raw, name), None, zone_map, topical_wait_hours)


def _validated(
    doc: YamlDoc, path: Path | None, zone_map: ZoneMap | None, topical_wait_hours: float
) -> LoadedProfile:
    if not (math.isfinite(topical_wait_hours) and topical_wait_hours >= 0):
        raise ProfileError(f"topical wait must be ≥ 0 hours, not {topical_wait_hours}")
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else f"the value {_show(doc.data)}"
        raise profile_error([doc.problem((), f"a profile is a mapping of fields, not {kind}")])
    zone_map = zone_map if zone_map is not None else default_zone_map()
    problems: list[tuple[Mark, str]] = []
    cross = _raw_cross_problems(doc.data)
    cross_text = {why for _loc, why in cross}
    profile: Profile | None = None
    try:
        profile = Profile.model_validate(doc.data, context={"zone_map": zone_map})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc, why, key = _explain(err)
            if why in cross_text:
                continue  # reported below, at its field
            problems.append((doc.mark_of(loc, key=key), doc.problem(loc, why, key=key)))
    for loc, why in cross:
        problems.append((doc.mark_of(loc), doc.problem(loc, why)))
    if profile is not None:  # the zone map's per-region depth limits (safety.py's rule)
        for i, why in _region_problems(profile, zone_map):
            loc = ("zones", i, "depth_mm")
            problems.append((doc.mark_of(loc), doc.problem(loc, why)))
        raw_zones = doc.data.get("zones")
        raw_zones = raw_zones if isinstance(raw_zones, list) else []
        for loc, why in zone_patch_problems(profile.zones, zone_map, raw_zones):
            problems.append((doc.mark_of(loc), doc.problem(loc, why)))
    if problems or profile is None:
        problems.sort(key=lambda p: (p[0].line, p[0].col))
        raise profile_error([text for _mark, text in problems])
    return LoadedProfile(
        path=path,
        profile=profile,
        warnings=profile_warnings(profile, topical_wait_hours),
        content_hash=content_hash(profile),
        text=doc.text,
    )


def _region_problems(profile: Profile, zone_map: ZoneMap) -> list[tuple[int, str]]:
    out = []
    for i, z in enumerate(profile.zones):
        limit = zone_map.by_name(z.zone).max_depth_um if z.zone in zone_map.names else None
        for why in region_depth_problems([(z.zone, z.depth_um, limit)]):
            out.append((i, why))
    return out


def _raw_cross_problems(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """The cross-zone rules on raw data, so they are reported even when other fields are bad."""
    raw_zones = data.get("zones")
    rows: list[ZoneRow] = []
    for z in raw_zones if isinstance(raw_zones, list) else []:
        z = z if isinstance(z, dict) else {}
        name = z.get("zone") if isinstance(z.get("zone"), str) else None
        depth = z.get("depth_mm")
        depth_um: int | None = None
        if isinstance(depth, int | float) and not isinstance(depth, bool):
            try:
                depth_um = depth_um_of(depth)
            except ValueError:
                depth_um = None
        rows.append(
            ZoneRow(name, depth_um, _raw_int(z.get("target_passes")), _raw_int(z.get("max_passes")))
        )
    return cross_zone_problems(rows, _raw_int(data.get("min_interval_days")))


def _raw_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_TYPE_WORDS: Final = {
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "text",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping of fields",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
    "date_type": "a date like 2024-05-01",
}


def _explain(err: ErrorDetails) -> tuple[Loc, str, bool]:
    """(where, why, point at the key?) in words a clinician can act on."""
    loc: Loc = tuple(err["loc"])
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return loc, "required, but missing", False
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(loc[:-1]))
        return loc, f"unknown field; allowed: {allowed}", True
    if kind == "literal_error":
        return loc, f"{_show(value)} is not allowed; choose one of {ctx.get('expected')}", False
    if kind in _TYPE_WORDS:
        return loc, f"{_show(value)} must be {_TYPE_WORDS[kind]}", False
    if kind == "too_short":
        return loc, "must not be empty", False
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), "?")
        bound = f"{bound:g}" if isinstance(bound, float) else bound
        sign = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<"}.get(kind, "≤")
        return loc, f"{_show(value)} is out of range; must be {sign} {bound}", False
    return loc, err["msg"].removeprefix("Value error, "), False


def _fields_at(loc: Loc) -> list[str]:
    """Field names of the model at `loc` (Profile at the top, ZoneTarget inside zones)."""
    model: type[BaseModel] = ZoneTarget if loc[:1] == ("zones",) else Profile
    if loc[:1] == ("adjuncts",):
        model = AdjunctUse
    if loc[:1] == ("zones",) and "patches" in loc:
        model = PatchSpec
    return list(model.model_fields)


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of a profile file, for editors."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "devicectl treatment profile"
    return schema
