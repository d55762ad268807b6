"""Done when: every shipped profile, run with `devicectl run --sim --speed 0 --yes`,
ends with every zone done and no spot over its maximum (counted on the saved
grid by `sessions export`), seed after seed; and the progress shown moves
during the demo's first pass. The default run takes one short profile and
seed; `make soak` runs every shipped profile over 20 seeds (bench/profiles_soak.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from devicectl.cli import main
from devicectl.commands.run_cmd import DEMO_PROFILE
from devicectl.controller import Command, Controller, StartFacts, State
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.zones import load_zone_map
from firmware_sim.virtual import VirtualPen

REPO = Path(__file__).resolve().parent.parent
SHORT = REPO / "tests" / "data" / "short-two-zones.yaml"
ANSWERS = REPO / "tests" / "data" / "checklist-no.yaml"


def _run_and_export(
    tmp_path: Path, profile: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, object]]:
    db = tmp_path / f"{profile.stem}-{seed}.db"
    code = main([
        "run", "--sim", "--speed", "0", "--yes", "--no-web", "--profile",
        str(profile), "--patient", f"P-{seed}", "--operator", "op-1",
        "--checklist", str(ANSWERS), "--consent", "--seed", str(seed), "--db", str(db),
    ])
    capsys.readouterr()
    assert code == 0, f"{profile} seed {seed} did not complete"
    assert main(["sessions", "export", "1", "--format", "json", "--db", str(db)]) == 0
    zones: list[dict[str, object]] = json.loads(capsys.readouterr().out)["zones"]
    return zones


def _assert_done_within_maximum(zones: list[dict[str, object]]) -> None:
    assert zones
    for z in zones:
        assert z["done"] is True, z["name"]
        assert z["cells_over_max"] == 0, z["name"]
        assert isinstance(z["cells_at_target"], int) and z["cells_at_target"] > 0


def test_a_short_profile_completes_with_no_spot_over_its_maximum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reduced form of `make soak` (bench/profiles_soak.py, every shipped
    profile over 20 seeds, minutes each): the two-zone test profile, a few seconds."""
    zones = _run_and_export(tmp_path, SHORT, 1, capsys)
    assert sorted(str(z["name"]) for z in zones) == ["mid_scalp", "vertex"]
    _assert_done_within_maximum(zones)


#: Session time of the demo's first pass sampled in the default suite (the whole
#: first pass under -m slow): each sample costs about a second of wall time.
FIRST_PASS_SAMPLED_US = 100_000_000
#: How often the progress is sampled: the demo's profile (one AA patch) takes its
#: first pass in about half a minute of session time.
SAMPLE_US = 5_000_000


def _demo_first_pass(
    until_us: int, sample_us: int = SAMPLE_US
) -> tuple[list[tuple[float, float]], list[str]]:
    """Drive the demo's profile on the shipped map with the simulated technician in
    virtual time through its first pass (mean dose under one pass, zone not done),
    at most `until_us`: the progress every `sample_us` (mean passes, time left) and
    the kinds of the controller's events."""
    zone_map = load_zone_map()
    loaded = load_profile(DEMO_PROFILE, zone_map=zone_map)
    pen = VirtualPen(seed=7, zone_map=zone_map)
    ctl = Controller(lambda d: make_plan(loaded, d, zone_map), zone_map,
                     StartFacts("p", frozenset()), nonce=9, now_us=0)
    pen.watch_map(lambda zid: ctl.coverage.hand_view(zid) if ctl.coverage else None)
    pen.receive_data(ctl.connect(0).data, 0)
    now = 0
    samples: list[tuple[float, float]] = []
    kinds: list[str] = []
    while now < until_us:
        now += 1000
        got, ticked = ctl.receive_data(pen.advance(now), now), ctl.tick(now)
        kinds += [e.kind.name for e in got.events + ticked.events]
        out = got.data + ticked.data
        if ctl.state is State.READY:
            out += ctl.command(Command.START, now).data
        pen.receive_data(out, now)
        if now % sample_us == 0 and ctl.first_start_us is not None:
            status = ctl.status(now)
            zone = status["zones"][0]
            if zone["mean_passes"] >= 1.0 or zone["done"]:
                break
            samples.append((zone["mean_passes"], status["remaining_s_est"]))
    return samples, kinds


def _assert_progress_moves(samples: list[tuple[float, float]]) -> None:
    assert len(samples) >= 5
    for (dose_a, left_a), (dose_b, left_b) in itertools.pairwise(samples):
        assert dose_b > dose_a and left_b < left_a


def test_progress_moves_at_least_every_10_s_during_the_demos_first_pass() -> None:
    """The demo's profile on the shipped map: each 5 s of session time in the
    first pass moves the dose shown, and the time remaining goes down; the host
    holds the pen now and then, and the technician's buttons are never refused."""
    samples, kinds = _demo_first_pass(FIRST_PASS_SAMPLED_US)
    _assert_progress_moves(samples)
    assert "COVERAGE_HOLD" in kinds and "COMMAND_REFUSED" not in kinds


@pytest.mark.slow
def test_progress_moves_every_10_s_through_the_whole_first_pass_of_the_demo() -> None:
    """The same through the whole first pass (the technician's rule for holds is
    tested on the hand: tests/test_handpiece.py)."""
    samples, kinds = _demo_first_pass(3_600_000_000)
    _assert_progress_moves(samples)
    assert "COMMAND_REFUSED" not in kinds
