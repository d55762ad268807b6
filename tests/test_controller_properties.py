"""Safety properties of the controller under arbitrary pens, timings and technicians (hypothesis).

Over every output: no SET_TARGET above the cap; ESTOP first in the very call
that carried an over-depth TELEMETRY or a newly set fault; no START while a
fault is latched (until the pen ACKs a CLEAR_FAULT) or when the cartridge
check fails.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_controller import DEVICE, NONCE, Pen, new_controller, plan_of, tel, zone_plan

from devicectl import protocol as p
from devicectl.controller import Command, StartFacts
from devicectl.safety import DEPTH_CAP_UM, OVERDEPTH_LIMIT_UM, OVERSHOOT_MARGIN_UM

USED = frozenset({0xBAD})

# Mostly plausible values, so that sessions get far; the edges and beyond often enough.
depths = st.one_of(
    st.sampled_from([0, 0, 900, 1000, 1000, 1050, 1099, 1100]),
    st.sampled_from([1101, 1200, 1549, 1550, 1551, 1600]),
    st.integers(0, 0xFFFF),
)
telemetry = st.builds(
    lambda dt, state, flags, cmd, meas, strokes, xy, contact, batt: (
        "tel",
        dt,
        tel(
            state=state,
            fault_flags=flags,
            depth_cmd_um=cmd,
            depth_meas_um=meas,
            stamp_count=strokes,
            x_dmm=xy[0],
            y_dmm=xy[1],
            contact=contact,
            battery_mv=batt,
        ),
    ),
    st.integers(0, 40_000),
    st.one_of(st.sampled_from([p.PenState.READY, p.PenState.STAMPING]), st.integers(0, 255)),
    st.sampled_from([0] * 12 + [1, 2, 1 << 5, 0x1FF]),
    st.sampled_from([1000, 1000, 1200, 0]),
    depths,
    st.integers(0, 3),
    st.one_of(
        st.tuples(st.integers(-20, 220), st.integers(-20, 240)),
        st.just((32767, 32767)),
    ),
    st.sampled_from([1, 1, 1, 0]),
    st.sampled_from([4000] * 6 + [3500, 3300, 3000]),
)
step = st.one_of(
    telemetry,
    telemetry,
    st.tuples(st.just("ack"), st.sampled_from([0, 0, 0, 0, 0, 1, 2, 4, 7])),
    st.tuples(st.just("ack"), st.just(0)),
    st.tuples(st.just("cmd"), st.sampled_from(list(Command))),
    st.tuples(st.just("cmd"), st.sampled_from([Command.START, Command.RESUME])),
    st.tuples(st.just("tick"), st.integers(0, 150_000)),
    st.tuples(st.just("fault"), st.integers(0, 0x1FF)),
    st.tuples(st.just("event"), st.sampled_from(list(p.PenEvent))),
    st.tuples(
        st.just("device"),
        st.sampled_from([0xC0FFEE, 0xBAD, 0, 77]),
        st.sampled_from([0, 0, 12]),
    ),
    st.tuples(st.just("garbage"), st.binary(max_size=20)),
)


class Model:
    """What the test knows independently of the controller."""

    def __init__(self) -> None:
        self.latched = False
        self.cartridge = (DEVICE.cartridge_id, DEVICE.cartridge_stamps)
        self.cartridge_removed = False
        self.session_cartridge: int | None = None
        self.unacked: list[p.Frame] = []
        self.clear_seqs: set[int] = set()
        self.known_flags = 0

    def start_allowed(self) -> bool:
        cid, stamps = self.cartridge
        if self.latched or self.cartridge_removed or cid == 0:
            return False
        if cid == self.session_cartridge:
            return True
        return self.session_cartridge is None and stamps == 0 and cid not in USED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(step, max_size=80),
    tracked=st.booleans(),
    first_cartridge=st.sampled_from([(0xC0FFEE, 0)] * 5 + [(0xBAD, 0), (0, 0), (5, 3)]),
)
def test_no_output_ever_breaks_a_safety_rule(
    steps: list[tuple[Any, ...]], tracked: bool, first_cartridge: tuple[int, int]
) -> None:
    plan = plan_of(zone_plan(1, "frontal", target_fraction=0.3), zone_plan(2, "vertex", 1200))
    ctl = new_controller(plan, StartFacts("p", USED))
    pen, model = Pen(), Model()
    caps = 3 if tracked else 2
    device = replace(
        DEVICE, capabilities=caps, cartridge_id=first_cartridge[0],
        cartridge_stamps=first_cartridge[1],
    )
    model.cartridge = first_cartridge
    now = 0
    out = ctl.connect(now)
    check(pen, model, out, over_depth=False)
    now += 500
    check(pen, model, ctl.receive_data(pen.frame(device), now), over_depth=False)
    stamps = 0
    for item in steps:
        kind = item[0]
        over_depth = False
        if kind == "tel":
            now += item[1]
            t: p.Telemetry = item[2]
            stamps = (stamps + t.stamp_count) & 0xFFFF_FFFF
            t = replace(t, stamp_count=stamps)
            over_depth = (
                t.depth_meas_um > OVERDEPTH_LIMIT_UM
                or t.depth_meas_um > t.depth_cmd_um + OVERSHOOT_MARGIN_UM
            )
            data = pen.frame(t)
        elif kind == "ack":
            acks = [f for f in model.unacked]
            model.unacked = []
            if item[1] == 0:
                model.latched = model.latched and not any(
                    isinstance(f.message, p.ClearFault) for f in acks
                )
            data = pen.acks(acks, item[1])
        elif kind == "fault":
            model.latched = model.latched or bool(item[1])
            data = pen.frame(p.Fault(item[1], 0, 0))
        elif kind == "event":
            if item[1] == p.PenEvent.CARTRIDGE_REMOVED:
                model.cartridge_removed = True
            data = pen.frame(p.Event(item[1], 0))
        elif kind == "device":
            model.cartridge = (item[1], item[2])
            model.cartridge_removed = False
            data = pen.frame(replace(device, cartridge_id=item[1], cartridge_stamps=item[2]))
        elif kind == "garbage":
            data = item[1] + b"\x00"  # line noise, then the resync delimiter
        elif kind == "tick":
            now += item[1]
            check(pen, model, ctl.tick(now), over_depth=False)
            continue
        else:
            check(pen, model, ctl.command(item[1], now), over_depth=False)
            continue
        check(pen, model, ctl.receive_data(data, now), over_depth=over_depth)
        if kind == "tel" and ctl.fault_latched:
            model.latched = True


def check(pen: Pen, model: Model, out: Any, *, over_depth: bool) -> None:
    frames = pen.parse(out)
    names = [f.message.TYPE.name for f in frames]
    if over_depth:
        assert names and names[0] == "ESTOP", names
    for f in frames:
        m = f.message
        if isinstance(m, p.SetTarget):
            assert m.depth_um <= DEPTH_CAP_UM
        if isinstance(m, p.Start):
            assert model.start_allowed(), (model.__dict__, names)
            if model.session_cartridge is None:
                model.session_cartridge = model.cartridge[0]
        if isinstance(m, p.Estop):
            model.latched = True
        if f.ack_req:
            model.unacked.append(f)
    assert all(f.message.nonce == NONCE for f in frames if isinstance(f.message, p.Hello))
