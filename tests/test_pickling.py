"""What crosses to and from the pen process pickles, in both builds.

Compiled with mypyc (make compiled), a frozen dataclass unpickles by setting its
fields on a bare object and fails; the classes that cross a process boundary
rebuild from their fields (devicectl/frozen.py). Pure Python, this holds anyway;
`make test-compiled` runs it against the compiled classes.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from devicectl import protocol as p
from devicectl.controller_core import StartFacts
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan, plan_recipe
from devicectl.transitions import ControlEvent, EventKind
from devicectl.zones import load_zone_map

PROFILE = Path(__file__).parent / "data" / "short-two-zones.yaml"
DEVICE = p.DeviceInfo(7, 1, 0x0102, 1, 2500, 500, 1500, 12, 3, 99, 0, 50)


def _round_trip(obj: object) -> object:
    return pickle.loads(pickle.dumps(obj))


def test_messages_and_unknown_frames_pickle_equal() -> None:
    for message in (
        p.Telemetry(1, 3, 0, 800, 780, 1000, 5, -600, 1600, 1, 2, 3900), p.Start(), DEVICE,
        p.AuthProof(b"r" * 16, b"p" * 16), p.Unknown(0x77, b"\x01\x02"),
    ):
        again = _round_trip(message)
        assert again == message and type(again) is type(message)


def test_the_pen_process_settings_and_its_events_pickle_equal() -> None:
    zone_map = load_zone_map()
    loaded = load_profile(PROFILE)
    recipe = plan_recipe(loaded, zone_map)
    plan = make_plan(loaded, DEVICE, zone_map)
    facts = StartFacts(
        "P-1", frozenset({3, 4}), days_since_deep_treatment={"vertex": 30.0},
        interval_override_reason="scheduled", resumed_cartridge_id=4,
        days_since_treatment={"vertex": 12.0}, interval_override_clinician="Dr A",
    )
    event = ControlEvent(5, EventKind.ZONE_DONE, "zone 1 done", 1, {"passes": 2}, True)
    for obj in (recipe, plan, plan.zones[0], facts, event):
        again = _round_trip(obj)
        assert again == obj and type(again) is type(obj)
    assert _round_trip(recipe)(DEVICE) == plan  # type: ignore[operator]
