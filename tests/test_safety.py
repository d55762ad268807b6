"""The caps and interlocks of devicectl/safety.py, one test per rule."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl import (
    controller,
    controller_checks,
    controller_connect,
    controller_core,
    controller_telemetry,
    linkstate,
    protocol,
    safety,
    stamping,
)
from devicectl.errors import SafetyError
from devicectl.safety import (
    BATTERY_LOW_MV,
    DEPTH_CAP_UM,
    MIN_INTERVAL_DAYS,
    OK,
    OVERDEPTH_LIMIT_UM,
    Action,
    cartridge_problem,
    checked_set_target,
    telemetry_verdict,
)
from devicectl.safety_gonogo import ZoneInterval, interval_problems

FAST = settings(max_examples=200, deadline=None)


@FAST
@given(depth_um=st.integers(min_value=DEPTH_CAP_UM + 1, max_value=10**9))
def test_set_target_above_cap_cannot_be_built(depth_um: int) -> None:
    with pytest.raises(SafetyError, match="cap"):
        checked_set_target(depth_um, 1000, 1)


@FAST
@given(depth_um=st.integers(min_value=0, max_value=DEPTH_CAP_UM))
def test_set_target_at_or_below_cap_is_built_unchanged(depth_um: int) -> None:
    target = checked_set_target(depth_um, 1000, 3)
    assert (target.depth_um, target.rate_dhz, target.zone_id) == (depth_um, 1000, 3)


@pytest.mark.parametrize("bad", [1500.5, "1500", True, -1])
def test_set_target_depth_must_be_a_whole_non_negative_um(bad: object) -> None:
    with pytest.raises(SafetyError):
        checked_set_target(bad, 1000, 1)


def test_link_refuses_to_frame_a_set_target_above_cap() -> None:
    rogue = protocol.SetTarget(depth_um=DEPTH_CAP_UM + 50, rate_dhz=1000, zone_id=1)
    with pytest.raises(SafetyError):
        linkstate.LinkState().send(rogue, 0)


def _source(module: ModuleType) -> str:
    """A module's Python source: its .py file, also when the module is compiled
    (make compiled puts the .so beside the .py, and `inspect.getfile` names the .so)."""
    name = module.__name__.rsplit(".", 1)[-1] + ".py"
    return Path(inspect.getfile(module)).with_name(name).read_text()


def test_controller_never_constructs_set_target_directly() -> None:
    # Every SET_TARGET must come from safety.checked_set_target.
    for module in (
        controller, controller_checks, controller_connect, controller_core, controller_telemetry,
        linkstate, stamping,
    ):
        tree = ast.parse(_source(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                assert name != "SetTarget", f"{module.__name__} builds SetTarget itself"


def test_cap_literal_is_not_written_in_the_loop_modules() -> None:
    root = Path(inspect.getfile(safety)).parent
    for name in (
        "controller", "controller_checks", "controller_connect", "controller_core",
        "controller_status", "controller_telemetry", "coverage", "coverage_archive",
        "coverage_views", "coverage_zones", "footprint", "linkstate", "stamping", "transitions",
    ):
        text = (root / f"{name}.py").read_text()
        assert "1500" not in text and "1.5" not in text, name


def _verdict(**kw: int) -> safety.Verdict:
    args = {
        "state": protocol.PenState.STAMPING,
        "fault_flags": 0,
        "commanded_depth_um": 1000,
        "depth_meas_um": 1000,
        "battery_mv": 4000,
        "known_fault_flags": 0,
    }
    args.update(kw)
    return telemetry_verdict(**args)


def test_measured_depth_over_1550_is_estop() -> None:
    v = _verdict(commanded_depth_um=DEPTH_CAP_UM, depth_meas_um=OVERDEPTH_LIMIT_UM + 1)
    assert v.action is Action.ESTOP
    assert _verdict(commanded_depth_um=DEPTH_CAP_UM, depth_meas_um=OVERDEPTH_LIMIT_UM) is OK


def test_measured_depth_over_command_plus_100_is_estop() -> None:
    assert _verdict(commanded_depth_um=800, depth_meas_um=901).action is Action.ESTOP
    assert _verdict(commanded_depth_um=800, depth_meas_um=900) is OK


def test_newly_set_fault_flag_is_estop_and_known_one_is_not() -> None:
    stall = 1 << protocol.FaultBit.STALL
    assert _verdict(fault_flags=stall).action is Action.ESTOP
    assert _verdict(fault_flags=stall, known_fault_flags=stall) is OK
    sensor = 1 << protocol.FaultBit.SENSOR
    assert _verdict(fault_flags=stall | sensor, known_fault_flags=stall).action is Action.ESTOP


def test_low_battery_is_stop_with_reason() -> None:
    v = _verdict(battery_mv=BATTERY_LOW_MV - 1)
    assert v.action is Action.STOP and "battery" in v.reason


def test_unknown_pen_state_is_stop_with_reason() -> None:
    v = _verdict(state=9)
    assert v.action is Action.STOP and "unknown state" in v.reason


@FAST
@given(
    cmd=st.integers(0, 0xFFFF),
    meas=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0xFFFF),
    known=st.integers(0, 0xFFFF),
)
def test_verdict_is_estop_exactly_when_a_rule_says_so(
    cmd: int, meas: int, flags: int, known: int
) -> None:
    v = _verdict(
        commanded_depth_um=cmd, depth_meas_um=meas, fault_flags=flags, known_fault_flags=known
    )
    must = meas > OVERDEPTH_LIMIT_UM or meas > cmd + 100 or bool(flags & ~known)
    assert (v.action is Action.ESTOP) == must


def test_cartridge_must_be_present() -> None:
    assert "no cartridge" in (cartridge_problem(0, 0, frozenset()) or "")


def test_cartridge_with_stamps_is_refused() -> None:
    assert "already delivered" in (cartridge_problem(7, 1, frozenset()) or "")


def test_cartridge_from_an_earlier_session_is_refused() -> None:
    assert "earlier session" in (cartridge_problem(7, 0, frozenset({7})) or "")


def test_fresh_cartridge_and_this_sessions_cartridge_are_accepted() -> None:
    assert cartridge_problem(7, 0, frozenset({8})) is None
    assert cartridge_problem(7, 900, frozenset(), session_cartridge_id=7) is None


def test_zone_treated_deep_too_recently_is_refused() -> None:
    zones = [ZoneInterval("vertex", 1000, 28), ZoneInterval("frontal", 1000, 28)]
    problems = interval_problems(zones, {"vertex": 10.0}, {"vertex": 10.0})
    assert len(problems) == 1 and "vertex" in problems[0]


def test_interval_is_never_shorter_than_28_days() -> None:
    zones = [ZoneInterval("vertex", 1500, 7)]
    assert interval_problems(zones, {}, {"vertex": MIN_INTERVAL_DAYS - 1})
    assert not interval_problems(zones, {}, {"vertex": MIN_INTERVAL_DAYS})


def test_profile_may_ask_for_a_longer_interval() -> None:
    assert interval_problems([ZoneInterval("vertex", 1500, 42)], {}, {"vertex": 40})


def test_emergency_stop_frame_is_a_valid_estop_for_the_pen() -> None:
    (frame,) = protocol.Decoder().feed(safety.emergency_stop_frame(seq=300))
    assert isinstance(frame.message, protocol.Estop) and frame.ack_req
    assert frame.seq == 300 & 0xFF


#: The limits docs/safety.md's "Stopping" table and the records' rules state: each is
#: a constant written in safety.py, as the page says every limit is, and written
#: nowhere else (the modules that use them import them).
STOPPING_LIMITS = (
    "TELEMETRY_HZ", "WATCHDOG_MS", "STEADY_FRAMES", "SILENCE_LOST_US", "ACK_TIMEOUT_US",
    "MAX_RESENDS", "WRITE_STALL_S", "STOP_VERIFY_US", "NOT_STOPPED_WAIT_US",
    "MAX_OVERHANG_FRACTION", "RECORDS_BEHIND_ITEMS",
)


def _assigned(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_every_stopping_limit_is_written_in_safety_py_and_nowhere_else() -> None:
    package = Path(safety.__file__).parent
    assert set(STOPPING_LIMITS) <= _assigned(package / "safety.py")
    elsewhere = {str(path.relative_to(package)): sorted(_assigned(path) & set(STOPPING_LIMITS))
                 for path in package.rglob("*.py") if path.name != "safety.py"}
    assert {k: v for k, v in elsewhere.items() if v} == {}


def test_a_pen_updating_its_firmware_is_named_so_not_an_unknown_state() -> None:
    """Spec 1.1 adds state 5 UPDATING: the pen may not stamp there (STOP), and the words
    name it (they said "an unknown state (5)")."""
    text = safety.pen_condition_problem(5, 0, 4000)
    assert text is not None and "UPDATING" in text and "unknown" not in text
    assert safety.pen_condition_problem(9, 0, 4000) == "the pen reports an unknown state (9)"
