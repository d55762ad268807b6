"""`devicectl profile validate|show|schema`: treatment profiles for clinicians.

validate checks files and prints every located problem; show renders the plan
on the nominal pen with its warnings; schema prints the JSON Schema for editors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from devicectl.errors import ProfileError, RefusedError
from devicectl.plain import escape_controls, plain
from devicectl.plan import NOMINAL_DEVICE, NOMINAL_HAND_SPEED_MM_S, Plan
from devicectl.profile import (
    DEFAULT_TOPICAL_WAIT_HOURS,
    load_profile,
    mm_text,
    profile_json_schema,
)
from devicectl.profile_plan import nominal_plan
from devicectl.yaml_reader import read_yaml
from devicectl.zones import load_zone_map


def register(subparsers: Any) -> None:
    profile = subparsers.add_parser("profile", help="validate, show or describe treatment profiles")
    sub = profile.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--zones", type=Path, default=None, help="zone map (default: shipped)")
    common.add_argument(
        "--topical-wait-hours",
        type=float,
        default=DEFAULT_TOPICAL_WAIT_HOURS,
        help=f"the site's wait before topicals (default {DEFAULT_TOPICAL_WAIT_HOURS} h)",
    )

    val = sub.add_parser(
        "validate",
        parents=[common],
        help="check profile files; exit 0 when all are valid",
        description="Check each FILE and print every problem as file:line:col: field: why.",
    )
    val.add_argument("files", nargs="+", type=Path, metavar="FILE")
    val.set_defaults(func=run_validate)

    show = sub.add_parser(
        "show",
        parents=[common],
        help="the plan of a profile as a table, with its warnings",
        description="Render the plan on the nominal pen (the spec's DEVICE_INFO test vector).",
    )
    show.add_argument("file", type=Path, metavar="FILE")
    show.set_defaults(func=run_show)

    schema = sub.add_parser("schema", help="the JSON Schema of a profile file")
    schema.set_defaults(func=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    zone_map = load_zone_map(args.zones)
    bad = 0
    for path in args.files:
        try:
            if _is_zone_map(path):  # so that `validate profiles/*.yaml` checks the map too
                checked = load_zone_map(path)
                print(f"{path}: ok (zone map, {len(checked.zones)} zones)")
                continue
            if _is_checklist(path):  # profiles/checklist.yaml lies beside them (issue 13)
                from devicectl.checklist import load_checklist

                items = load_checklist(path).items
                print(f"{path}: ok (contraindication checklist, {len(items)} items)")
                continue
            loaded = load_profile(
                path, zone_map=zone_map, topical_wait_hours=args.topical_wait_hours
            )
            # The same pen-limit checks as `profile show`: the plan on the nominal pen.
            nominal_plan(loaded, zone_map)
        except ProfileError as exc:
            bad += 1
            for problem in exc.problems:
                print(escape_controls(problem), file=sys.stderr)
            continue
        except RefusedError as exc:
            bad += 1
            print(escape_controls(
                f"{path}: {exc} (checked on the nominal pen, as `profile show` does)"),
                file=sys.stderr)
            continue
        print(escape_controls(
            f"{path}: ok ({loaded.profile.name}, sha256 {loaded.content_hash[:12]})"))
        for warning in loaded.warnings:
            print(escape_controls(f"{path}: warning: {warning}"))
    return 1 if bad else 0


def _is_zone_map(path: Path) -> bool:
    """A YAML file with a scalp outline is a zone map, not a profile."""
    try:
        data = read_yaml(path).data
    except ProfileError:
        return False  # load_profile reports the problem
    return isinstance(data, dict) and "scalp_outline_mm" in data


def _is_checklist(path: Path) -> bool:
    """A YAML file with `items:` and no `zones:` is the contraindication checklist."""
    try:
        data = read_yaml(path).data
    except ProfileError:
        return False
    return isinstance(data, dict) and "items" in data and "zones" not in data


def run_show(args: argparse.Namespace) -> int:
    if _is_zone_map(args.file):
        return _show_zone_map(args.file)
    zone_map = load_zone_map(args.zones)
    loaded = load_profile(args.file, zone_map=zone_map, topical_wait_hours=args.topical_wait_hours)
    plan = nominal_plan(loaded, zone_map)
    console = Console(soft_wrap=False)
    console.print(plan_table(plan, zone_map_labels={z.name: z.label for z in zone_map.zones}))
    console.print(
        f"Nominal pen: {NOMINAL_DEVICE.footprint_dmm / 10:g} mm footprint, "
        f"{NOMINAL_DEVICE.needle_count} needles, rates {NOMINAL_DEVICE.min_rate_dhz / 10:g}"
        f"-{NOMINAL_DEVICE.max_rate_dhz / 10:g} Hz; estimates assume a hand speed of "
        f"{NOMINAL_HAND_SPEED_MM_S:g} mm/s."
    )
    for z in plan.zones:  # a zone treated as patches: what is treated
        for patch in z.patches:
            console.print(Text(f"Patch in {z.name}: {patch.describe()}, margin "
                               f"{patch.margin_mm:g} mm"), highlight=False)
    console.print(f"Minimum interval: {plan.min_interval_days} days.  sha256 {plan.profile_hash}")
    for warning in plan.warnings:
        console.print(Text.assemble(("Warning: ", "bold yellow"), plain(warning)), highlight=False)
    return 0


def _show_zone_map(path: Path) -> int:
    """`profile show` of the zone map: it says so, and lists the zones it defines."""
    zone_map = load_zone_map(path)
    print(f"{path} is a zone map, not a treatment profile: {len(zone_map.zones)} zones, valid.")
    console = Console(soft_wrap=False)
    table = Table(title="zones")
    for header in ("id", "name", "label", "cm²"):
        table.add_column(header, justify="right" if header in ("id", "cm²") else "left")
    for z in zone_map.zones:
        table.add_row(str(z.id), plain(z.name), plain(z.label), f"{z.area_mm2 / 100:.0f}")
    console.print(table)
    return 0


def plan_table(plan: Plan, zone_map_labels: dict[str, str]) -> Table:
    table = Table(
        title=plain(f"{plan.profile_name} (version {plan.profile_version})"),
        caption="mm: needle depth · Hz: stamp rate · passes: target/max per spot · "
        "cover: share of the zone to bring to the target · ≈: estimates",
    )
    table.add_column("zone", min_width=14)
    for header in ("cm²", "mm", "Hz", "passes", "cover", "≈ stamps", "≈ min"):
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for z in plan.zones:
        table.add_row(
            plain(zone_map_labels.get(z.name, z.name)),
            f"{z.area_mm2 / 100:.0f}",
            mm_text(z.depth_um),
            f"{z.rate_dhz / 10:g}",
            f"{z.target_passes}/{z.max_passes}",
            f"{z.target_fraction:.0%}",
            f"{z.est_stamps:,}",
            f"{z.est_seconds / 60:.1f}",
        )
    total_stamps = sum(z.est_stamps for z in plan.zones)
    table.add_row("total", "", "", "", "", "", f"{total_stamps:,}", f"{plan.est_seconds / 60:.1f}")
    return table


def run_schema(args: argparse.Namespace) -> int:
    print(json.dumps(profile_json_schema(), indent=2, ensure_ascii=False))
    return 0
