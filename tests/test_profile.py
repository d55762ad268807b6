"""Profile rules: depth cap and steps, interval, adjunct warning, hash, shipped files, no crash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl import safety
from devicectl.errors import ProfileError
from devicectl.profile import (
    LoadedProfile,
    load_profile,
    load_profile_text,
    profile_json_schema,
)

REPO = Path(__file__).resolve().parent.parent
NOT_PROFILES = ("zones.yaml", "checklist.yaml")
PROFILES = sorted(p for p in (REPO / "profiles").glob("*.yaml") if p.name not in NOT_PROFILES)


def profile_text(
    depth: str = "1.5", interval: int = 28, adjuncts: str = "[]", extra: str = ""
) -> str:
    return f"""\
# a comment
name: Test profile
version: 1
condition: androgenetic_alopecia
approved_by: Dr. Test
approved_on: 2024-05-01
min_interval_days: {interval}
adjuncts: {adjuncts}
needle_count: 12
zones:
  - zone: vertex
    depth_mm: {depth}
    rate_hz: 100
    target_passes: 3
    max_passes: 4
    target_fraction: 0.9
{extra}"""


def load(text: str, **kwargs: float) -> LoadedProfile:
    return load_profile_text(text, "t.yaml", **kwargs)  # type: ignore[arg-type]


def problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        load(text)
    return info.value.problems


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_every_shipped_profile_validates(path: Path) -> None:
    loaded = load_profile(path)
    assert loaded.path == path
    assert loaded.profile.zones


def test_at_least_three_profiles_ship_one_per_condition() -> None:
    conditions = {load_profile(p).profile.condition for p in PROFILES}
    assert conditions == {"androgenetic_alopecia", "alopecia_areata", "telogen_effluvium"}


def test_depth_at_the_cap_converts_exactly_to_um() -> None:
    zone = load(profile_text("1.5")).profile.zones[0]
    assert zone.depth_um == safety.DEPTH_CAP_UM
    assert zone.rate_dhz == 1000


@settings(max_examples=150, deadline=None)
@given(st.integers(1, safety.DEPTH_CAP_UM // safety.DEPTH_STEP_UM))
def test_any_depth_in_pen_steps_up_to_the_cap_is_accepted_exactly(steps: int) -> None:
    depth_um = steps * safety.DEPTH_STEP_UM
    text = f"{depth_um / 1000:g}"
    loaded = load(profile_text(text, interval=28))
    assert loaded.profile.zones[0].depth_um == depth_um


@settings(max_examples=150, deadline=None)
@given(st.integers(safety.DEPTH_CAP_UM + 1, 20_000))
def test_any_depth_above_the_cap_is_refused_never_clamped(depth_um: int) -> None:
    text = f"{depth_um / 1000:g}"
    found = problems(profile_text(text))
    assert found == [
        f"t.yaml:12:15: zones[0].depth_mm: {text} exceeds the 1.5 mm cap; allowed: up to 1.5 mm"
    ]


def test_the_cap_is_written_only_in_safety_py() -> None:
    literal = re.compile(r"(?<![\d.])(1500|1\.5)(?![\d])")
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "devicectl").rglob("*.py"))
        if path.name != "safety.py" and literal.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_interval_below_28_days_is_refused_for_a_zone_deeper_than_1mm() -> None:
    found = problems(profile_text("1.05", interval=27))
    assert found == [
        "t.yaml:7:20: min_interval_days: 27 days is too short: zones[0] (vertex) is at 1.05 mm, "
        "and zones deeper than 1.0 mm need at least 28 days"
    ]


def test_interval_rule_spares_zones_at_1mm_or_shallower() -> None:
    assert load(profile_text("1.0", interval=7)).profile.min_interval_days == 7


def test_28_days_is_enough_at_the_cap() -> None:
    assert load(profile_text("1.5", interval=28)).profile.zones[0].depth_um == 1500


def test_adjuncts_warn_each_with_its_own_timing() -> None:
    loaded = load(profile_text(adjuncts="[minoxidil, PRP]"))
    assert loaded.warnings == (
        "adjuncts (minoxidil, PRP): fresh micro-channels raise absorption and the risk of "
        "systemic side effects",
        "minoxidil: wait 24 h after the session before applying it; this wait is the clinic's "
        "setting (--topical-wait-hours), not a trial result",
        "PRP: applied in the session, onto the freshly needled scalp (the profile's timing)",
    )


def test_the_topical_wait_is_a_site_setting() -> None:
    loaded = load(profile_text(adjuncts="[bimatoprost]"), topical_wait_hours=48)
    assert "bimatoprost: wait 48 h after the session" in loaded.warnings[1]


def test_a_profile_may_set_an_adjuncts_timing() -> None:
    loaded = load(profile_text(adjuncts="[{name: Minoxidil, timing: in_session}, triamcinolone]"))
    assert loaded.warnings[1].startswith("minoxidil: applied in the session")
    assert loaded.warnings[2].startswith("triamcinolone: applied in the session")


def test_no_adjuncts_no_warning() -> None:
    assert load(profile_text()).warnings == ()


def test_content_hash_ignores_comments_and_layout() -> None:
    a = load(profile_text())
    b = load(
        profile_text()
        .replace("# a comment", "# another")
        .replace("rate_hz: 100", "rate_hz:    100.0")
    )
    assert a.content_hash == b.content_hash
    assert re.fullmatch(r"[0-9a-f]{64}", a.content_hash)


def test_content_hash_changes_with_the_treatment() -> None:
    assert load(profile_text("1.5")).content_hash != load(profile_text("1.45")).content_hash


def test_loaded_profile_keeps_its_text_for_the_records() -> None:
    text = profile_text()
    loaded = load(text)
    assert loaded.text == text
    assert load_profile_text(loaded.text, "again").content_hash == loaded.content_hash


def test_merge_keys_share_zone_settings_and_explicit_keys_win() -> None:
    text = profile_text().replace("  - zone: vertex\n", "  - &first\n    zone: vertex\n")
    text += "  - <<: *first\n    zone: mid_scalp\n    depth_mm: 0.5\n"
    zones = load(text).profile.zones
    assert [(z.zone, z.depth_um, z.rate_dhz) for z in zones] == [
        ("vertex", 1500, 1000),
        ("mid_scalp", 500, 1000),
    ]


def test_json_schema_describes_the_depth_cap() -> None:
    schema = profile_json_schema()
    depth = schema["$defs"]["ZoneTarget"]["properties"]["depth_mm"]
    assert depth["maximum"] == safety.DEPTH_CAP_UM / 1000
    assert schema["additionalProperties"] is False


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_profile_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_bytes(raw)
    try:
        load_profile(path)
    except ProfileError as exc:
        assert exc.problems and all(p.startswith(str(path)) for p in exc.problems)


YAMLISH = st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\" \n\t#,0.1")), max_size=120)


@settings(max_examples=200, deadline=None)
@given(YAMLISH)
def test_yaml_like_garbage_raises_nothing_but_profile_error(text: str) -> None:
    try:
        load(text)
    except ProfileError as exc:
        assert all(p.startswith("t.yaml") for p in exc.problems)
