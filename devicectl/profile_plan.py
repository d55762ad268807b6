"""Plans from profiles: the profile side of devicectl/plan.py.

A validated profile on a zone map becomes a PlanRecipe (plain data, picklable),
and `make_plan` fits it to a pen. This is the only plan code that knows the
profile's pydantic models and the zone map; the pen process gets the recipe.
"""

from __future__ import annotations

from dataclasses import replace

from devicectl.patches import patch_area_mm2
from devicectl.plan import NOMINAL_DEVICE, Plan, PlanRecipe, ZoneRecipe, fit_plan
from devicectl.profile import (
    DEFAULT_TOPICAL_WAIT_HOURS,
    LoadedProfile,
    Profile,
    content_hash,
    profile_warnings,
)
from devicectl.protocol import DeviceInfo
from devicectl.zones import ZoneMap


def plan_recipe(
    profile: LoadedProfile | Profile,
    zone_map: ZoneMap,
    *,
    topical_wait_hours: float = DEFAULT_TOPICAL_WAIT_HOURS,
) -> PlanRecipe:
    """The profile placed on the map: each zone's id, area and region limit looked up."""
    if isinstance(profile, LoadedProfile):
        warnings, digest, model = profile.warnings, profile.content_hash, profile.profile
    else:
        model = profile
        warnings = profile_warnings(model, topical_wait_hours)
        digest = content_hash(model)
    zones = []
    for z in model.zones:
        on_map = z.zone in zone_map.names
        zone = zone_map.by_name(z.zone) if on_map else None
        patches = z.patch_shapes
        area_mm2 = 0.0
        if zone is not None:
            area_mm2 = (patch_area_mm2(zone_map, z.zone, patches) if patches
                        else zone.area_mm2)
        zones.append(ZoneRecipe(
            name=z.zone,
            zone_id=zone.id if zone is not None else None,
            depth_um=z.depth_um,
            rate_dhz=z.rate_dhz,
            target_passes=z.target_passes,
            max_passes=z.max_passes,
            target_fraction=z.target_fraction,
            area_mm2=area_mm2,
            region_max_depth_um=zone.max_depth_um if zone is not None else None,
            max_punctures_per_cm2=z.max_punctures_per_cm2,
            patches=patches,
        ))
    return PlanRecipe(
        profile_name=model.name,
        profile_version=model.version,
        profile_hash=digest,
        min_interval_days=model.min_interval_days,
        warnings=tuple(warnings),
        zones=tuple(zones),
        needle_counts=model.needle_counts,
    )


def make_plan(
    profile: LoadedProfile | Profile,
    device: DeviceInfo,
    zone_map: ZoneMap,
    *,
    topical_wait_hours: float = DEFAULT_TOPICAL_WAIT_HOURS,
) -> Plan:
    """The profile fitted to the connected pen, or RefusedError naming every reason it cannot be."""
    return fit_plan(plan_recipe(profile, zone_map, topical_wait_hours=topical_wait_hours), device)


def nominal_plan(profile: LoadedProfile | Profile, zone_map: ZoneMap) -> Plan:
    """The plan on NOMINAL_DEVICE with the profile's cartridge, for showing a
    profile with no pen connected."""
    model = profile.profile if isinstance(profile, LoadedProfile) else profile
    device = replace(NOMINAL_DEVICE, needle_count=model.needle_counts[0])
    return make_plan(profile, device, zone_map)
