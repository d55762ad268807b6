"""Table-driven: broken profile files, each with the exact located messages it must produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicectl.errors import ProfileError
from devicectl.profile import load_profile
from devicectl.yaml_reader import MAX_FILE_BYTES

BASE = """\
name: Test profile
version: 1
condition: androgenetic_alopecia
approved_by: Dr. Test
approved_on: 2024-05-01
min_interval_days: 28
adjuncts: []
needle_count: 12
zones:
  - zone: vertex
    depth_mm: 1.5
    rate_hz: 100
    target_passes: 3
    max_passes: 4
    target_fraction: 0.9
"""
KNOWN = "frontal, mid_scalp, vertex, left_temporal, right_temporal, occipital"
MAX_RULE = "the maximum must leave at least one pass above the target (max_passes ≥ 4)"
TOP_FIELDS = (
    "name, version, condition, approved_by, approved_on, min_interval_days, needle_count, adjuncts,"
    " notes, zones"
)


def with_line(line_no: int, text: str) -> str:
    """BASE with line `line_no` (1-based) replaced by `text` (which may hold several lines)."""
    lines = BASE.splitlines()
    lines[line_no - 1] = text
    return "\n".join(lines) + "\n"


SECOND_ZONE = (
    BASE
    + """\
  - zone: vertex
    depth_mm: 1.0
    rate_hz: 100
    target_passes: 3
    max_passes: 4
    target_fraction: 0.9
"""
)

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(ord('b') + i)}: &{chr(ord('b') + i)} [{', '.join(['*' + chr(ord('a') + i)] * 10)}]\n"
    for i in range(6)
)

CASES: list[tuple[str, str | bytes, list[str]]] = [
    (
        "depth_above_cap",
        with_line(11, "    depth_mm: 1.6"),
        ["11:15: zones[0].depth_mm: 1.6 exceeds the 1.5 mm cap; allowed: up to 1.5 mm"],
    ),
    (
        "depth_just_above_cap_not_clamped",
        with_line(11, "    depth_mm: 1.52"),
        ["11:15: zones[0].depth_mm: 1.52 exceeds the 1.5 mm cap; allowed: up to 1.5 mm"],
    ),
    (
        "depth_off_step",
        with_line(11, "    depth_mm: 1.42"),
        ["11:15: zones[0].depth_mm: 1.42 is not in the pen's 0.05 mm steps"],
    ),
    (
        "depth_zero",
        with_line(11, "    depth_mm: 0"),
        ["11:15: zones[0].depth_mm: 0 is not a depth; allowed: 0.05 to 1.5 mm"],
    ),
    (
        "depth_negative",
        with_line(11, "    depth_mm: -0.5"),
        ["11:15: zones[0].depth_mm: -0.5 is not a depth; allowed: 0.05 to 1.5 mm"],
    ),
    (
        "depth_nan",
        with_line(11, "    depth_mm: .nan"),
        ["11:15: zones[0].depth_mm: nan is not a depth; allowed: 0.05 to 1.5 mm"],
    ),
    (
        "depth_as_text",
        with_line(11, '    depth_mm: "1.5"'),
        ["11:15: zones[0].depth_mm: '1.5' must be a number"],
    ),
    (
        "depth_as_bool",
        with_line(11, "    depth_mm: true"),
        ["11:15: zones[0].depth_mm: True must be a number"],
    ),
    (
        "rate_off_step",
        with_line(12, "    rate_hz: 100.05"),
        ["12:14: zones[0].rate_hz: 100.05 is not a stamp rate; give Hz > 0 in 0.1 Hz steps"],
    ),
    (
        "rate_zero",
        with_line(12, "    rate_hz: 0"),
        ["12:14: zones[0].rate_hz: 0 is out of range; must be > 0"],
    ),
    (
        "max_below_target",
        with_line(14, "    max_passes: 2"),
        ["14:17: zones[0].max_passes: 2 is below target_passes 3 + 1; " + MAX_RULE],
    ),
    (
        "fraction_above_one",
        with_line(15, "    target_fraction: 1.2"),
        ["15:22: zones[0].target_fraction: 1.2 is out of range; must be ≤ 1"],
    ),
    (
        "target_passes_zero",
        with_line(13, "    target_passes: 0"),
        [
            "13:20: zones[0].target_passes: 0 is out of range; must be ≥ 1",
        ],
    ),
    (
        "unknown_zone",
        with_line(10, "  - zone: crown"),
        [f"10:11: zones[0].zone: 'crown' is not a zone of the map; known: {KNOWN}"],
    ),
    (
        "zone_twice",
        SECOND_ZONE,
        ["16:11: zones[1].zone: 'vertex' is already zones[0]; each zone once"],
    ),
    (
        "interval_too_short_for_deep_zone",
        with_line(6, "min_interval_days: 14"),
        [
            "6:20: min_interval_days: 14 days is too short: zones[0] (vertex) is at 1.5 mm, and "
            "zones deeper than 1.0 mm need at least 28 days"
        ],
    ),
    (
        "unknown_top_field",
        BASE + "colour: red\n",
        [f"16:1: colour: unknown field; allowed: {TOP_FIELDS}"],
    ),
    (
        "unknown_zone_field",
        with_line(15, "    target_fraction: 0.9\n    speed: 3"),
        [
            "16:5: zones[0].speed: unknown field; allowed: zone, depth_mm, rate_hz, target_passes, "
            "max_passes, target_fraction, max_punctures_per_cm2, patches, patch_margin_mm"
        ],
    ),
    ("missing_name", "\n".join(BASE.splitlines()[1:]) + "\n", ["1:1: name: required, but missing"]),
    (
        "missing_rate",
        with_line(12, "    rate_x: 100"),
        [
            "10:5: zones[0].rate_hz: required, but missing",
            "12:5: zones[0].rate_x: unknown field; allowed: zone, depth_mm, rate_hz, "
            "target_passes, max_passes, target_fraction, max_punctures_per_cm2, patches,"
            " patch_margin_mm",
        ],
    ),
    (
        "unknown_condition",
        with_line(3, "condition: baldness"),
        [
            "3:12: condition: 'baldness' is not allowed; choose one of 'androgenetic_alopecia', "
            "'alopecia_areata' or 'telogen_effluvium'"
        ],
    ),
    (
        "unknown_adjunct",
        with_line(7, "adjuncts: [minoxidil, garlic]"),
        [
            "7:23: adjuncts[1].name: 'garlic' is not allowed; choose one of 'minoxidil', "
            "'finasteride', 'dutasteride', 'spironolactone', 'latanoprost', 'bimatoprost', "
            "'prp', 'crp' or 'triamcinolone'"
        ],
    ),
    (
        "impossible_date",
        with_line(5, "approved_on: 2024-02-30"),
        ["5:14: approved_on: '2024-02-30' is not a valid date"],
    ),
    (
        "version_as_float",
        with_line(2, "version: 1.10"),
        ['2:10: version: 1.1 must be text; quote it: "1.1"'],
    ),
    (
        "duplicate_key",
        with_line(2, "version: 1\nname: Other"),
        ["3:1: name: duplicate key (first at line 1); give each key once"],
    ),
    (
        "python_tag",
        with_line(1, 'name: !!python/object/apply:os.system ["echo hi"]'),
        ["1:7: name: tag !!python/object/apply:os.system is not allowed; plain YAML only"],
    ),
    (
        "local_tag",
        with_line(1, "name: !secret x"),
        ["1:7: name: tag !secret is not allowed; plain YAML only"],
    ),
    ("empty_file", "", ["1:1: the file is empty; expected a profile"]),
    ("only_a_comment", "# nothing here\n", ["1:1: the file is empty; expected a profile"]),
    ("a_list", "- name: x\n- name: y\n", ["1:1: a profile is a mapping of fields, not a list"]),
    ("a_scalar", "hello\n", ["1:1: a profile is a mapping of fields, not the value 'hello'"]),
    (
        "not_utf8",
        BASE.encode() + b"notes: caf\xe9\n",
        ["16:11: not UTF-8 text (byte 0xe9); save the file as UTF-8"],
    ),
    (
        "binary",
        b"name: x\n\x00\x01\x02\x03",
        ["2:1: character U+0000 is not allowed in YAML text"],
    ),
    ("alias_bomb", BOMB, ["2:8: aliases expand to more than 10000 values; use fewer aliases"]),
    ("deep_nesting", "a: " + "[" * 40 + "]" * 40 + "\n", ["1:35: nested deeper than 32 levels"]),
    (
        "syntax_error",
        with_line(1, "name: [unclosed"),
        ["2:8: YAML syntax: while parsing a flow sequence expected ',' or ']', but got ':'"],
    ),
    (
        "zones_empty",
        with_line(9, "zones: []").split("  - zone")[0],
        ["9:8: zones: must not be empty"],
    ),
    (
        "zone_not_a_mapping",
        with_line(9, "zones: [vertex]").split("  - zone")[0],
        ["9:9: zones[0]: 'vertex' must be a mapping of fields"],
    ),
    (
        "several_problems_at_once",
        with_line(11, "    depth_mm: 1.6").replace("max_passes: 4", "max_passes: 2"),
        [
            "11:15: zones[0].depth_mm: 1.6 exceeds the 1.5 mm cap; allowed: up to 1.5 mm",
            "14:17: zones[0].max_passes: 2 is below target_passes 3 + 1; " + MAX_RULE,
        ],
    ),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_profile_gives_exact_located_messages(
    tmp_path: Path, content: str | bytes, expected: list[str]
) -> None:
    path = tmp_path / "broken.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.problems == [f"{path}:{line}" for line in expected]


def test_there_are_at_least_25_broken_cases() -> None:
    assert len(CASES) >= 25


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * (10 * 1024 * 1024) + b"\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.problems == [
        f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; this is not a profile file"
    ]


def test_a_missing_file_is_one_clean_sentence(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "nope.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'nope.yaml'}: cannot read the profile: No such file or directory"
    ]
