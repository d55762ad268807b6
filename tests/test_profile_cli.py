"""`devicectl profile validate|show|schema` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devicectl import cli

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
NOT_PROFILES = ("zones.yaml", "checklist.yaml")
SHIPPED = sorted(str(p) for p in PROFILES.glob("*.yaml") if p.name not in NOT_PROFILES)


def test_validate_every_shipped_profile_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["profile", "validate", *SHIPPED]) == 0
    out = capsys.readouterr().out
    for path in SHIPPED:
        assert f"{path}: ok (" in out
    assert "warning: adjuncts (minoxidil, finasteride): fresh micro-channels" in out


def test_validate_reports_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = SHIPPED[0]
    bad = tmp_path / "aga-crown.yaml"
    bad.write_text(
        Path(PROFILES / "aga-crown-midscalp.yaml")
        .read_text(encoding="utf-8")
        .replace("depth_mm: 1.5", "depth_mm: 1.6", 1)
        .replace("max_passes: 4", "max_passes: 2"),
        encoding="utf-8",
    )
    assert cli.main(["profile", "validate", good, str(bad)]) == 1
    captured = capsys.readouterr()
    assert f"{good}: ok" in captured.out
    errors = captured.err.splitlines()
    # line numbers: the shipped file states its needle_count on line 8
    assert (
        f"{bad}:15:15: zones[0].depth_mm: 1.6 exceeds the 1.5 mm cap; allowed: up to 1.5 mm"
        in errors
    )
    assert any(e.startswith(f"{bad}:18:17: zones[0].max_passes: 2 is below") for e in errors)
    assert any(e.startswith(f"{bad}:24:17: zones[1].max_passes: 2 is below") for e in errors)
    assert "Traceback" not in captured.err


def test_validate_a_binary_file_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "photo.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert cli.main(["profile", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"{path}:1:1: not UTF-8 text (byte 0x89); save the file as UTF-8\n"


def test_show_renders_the_plan_with_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["profile", "show", str(PROFILES / "aga-crown-midscalp.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Vertex (crown)" in out and "Mid-scalp" in out
    assert "1.5" in out and "3/4" in out and "90%" in out
    assert "Warning:" in out and "wait 24 h" in out


def test_show_uses_the_site_topical_wait(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(PROFILES / "te-diffuse.yaml")
    assert cli.main(["profile", "show", "--topical-wait-hours", "12", path]) == 0
    assert "wait 12 h" in capsys.readouterr().out


def test_show_of_a_bad_profile_exits_1_with_the_located_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert cli.main(["profile", "show", str(path)]) == 1
    assert f"{path}:1:1: the file is empty; expected a profile" in capsys.readouterr().err


def test_schema_is_json_for_editors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["profile", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "devicectl treatment profile"
    assert "zones" in schema["required"]


def test_validate_checks_the_zone_map_among_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    zones = str(PROFILES / "zones.yaml")
    assert cli.main(["profile", "validate", zones, *SHIPPED]) == 0
    assert f"{zones}: ok (zone map, 6 zones)" in capsys.readouterr().out


def test_validate_checks_the_pen_limits_that_show_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    short = Path(__file__).parent / "data" / "short-frontal.yaml"
    rate300 = tmp_path / "rate300.yaml"
    rate300.write_text(short.read_text(encoding="utf-8").replace("rate_hz: 120", "rate_hz: 300"),
                       encoding="utf-8")
    assert cli.main(["profile", "show", str(rate300)]) == 1
    show_err = capsys.readouterr().err
    assert cli.main(["profile", "validate", str(rate300)]) == 1
    out, err = capsys.readouterr()
    assert "ok" not in out
    assert "300 Hz is outside this pen's rates" in show_err
    assert "300 Hz is outside this pen's rates" in err and err.startswith(f"{rate300}: ")
    assert cli.main(["profile", "validate", str(short)]) == 0  # the same file at 120 Hz: ok


def test_show_of_the_zone_map_says_it_is_a_map(capsys: pytest.CaptureFixture[str]) -> None:
    zones = PROFILES / "zones.yaml"
    assert cli.main(["profile", "show", str(zones)]) == 0
    out, err = capsys.readouterr()
    assert f"{zones} is a zone map, not a treatment profile: 6 zones" in out
    assert "Vertex (crown)" in out
    assert "missing" not in out + err


def test_validate_recognizes_the_checklist_among_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    checklist = PROFILES / "checklist.yaml"
    assert cli.main(["profile", "validate", str(checklist)]) == 0
    assert f"{checklist}: ok (contraindication checklist, " in capsys.readouterr().out
    broken = tmp_path / "checklist.yaml"
    broken.write_text("version: 1\nitems: []\n", encoding="utf-8")
    assert cli.main(["profile", "validate", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "items" in err and "required, but missing" not in err  # judged as a checklist
