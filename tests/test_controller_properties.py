"""Safety properties of the controller under arbitrary pens, timings and technicians (hypothesis).

Over every output: no SET_TARGET above the cap; ESTOP first in the very call
that carried an over-depth TELEMETRY (measured against what the host
commanded, never the pen's claim), a newly set fault flag (every one of the
nine), or a third frame in a row over 125 % of the commanded rate (H2); no
START while a fault is latched (until the pen ACKs a CLEAR_FAULT), when the
cartridge check fails, or ever again after a second over-depth (H5); nothing
configured at all for a pen of another protocol version (H4). The
model knows only what the test fed in and what came out on the wire.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_controller import DEVICE, NONCE, Pen, new_controller, plan_of, tel, zone_plan

from devicectl import protocol as p
from devicectl.controller import Command, StartFacts
from devicectl.safety import (
    DEPTH_CAP_UM,
    NOT_STOPPED_RESEND_US,
    OVERDEPTH_LIMIT_UM,
    OVERSHOOT_MARGIN_UM,
    OVERSPEED_FRAMES,
    EstopReason,
    is_overspeed,
)

USED = frozenset({0xBAD})

# Mostly plausible values, so that sessions get far; the edges and beyond often enough.
depths = st.one_of(
    st.sampled_from([0, 0, 900, 1000, 1000, 1050, 1099, 1100]),
    st.sampled_from([1101, 1200, 1549, 1550, 1551, 1600]),
    st.integers(0, 0xFFFF),
)
telemetry = st.builds(
    lambda dt, state, flags, cmd, meas, strokes, xy, contact, batt, rate: (
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
            rate_meas_dhz=rate,
        ),
    ),
    st.integers(0, 40_000),
    st.one_of(
        st.sampled_from([p.PenState.READY, p.PenState.STAMPING, p.PenState.STAMPING]),
        st.integers(0, 255),
    ),
    # every fault flag alone, all together, and mostly none
    st.sampled_from([0] * 20 + [1 << bit for bit in p.FaultBit] + [0x1FF]),
    st.sampled_from([1000, 1000, 1200, 0]),
    depths,
    st.integers(0, 3),
    st.one_of(
        st.tuples(st.integers(-20, 220), st.integers(-20, 240)),
        st.just((32767, 32767)),
    ),
    st.sampled_from([1, 1, 1, 0]),
    st.sampled_from([4000] * 6 + [3500, 3300, 3000]),
    st.sampled_from([0, 1000, 1000, 1250, 1251, 1400, 0xFFFF]),
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
    """What the test knows independently of the controller: what it fed in, what came out."""

    def __init__(self) -> None:
        self.latched = False
        self.cartridge = (DEVICE.cartridge_id, DEVICE.cartridge_stamps)
        self.cartridge_removed = False
        self.session_cartridge: int | None = None
        self.unacked: list[p.Frame] = []
        #: fault flags the pen has shown or the host's ESTOP set (never forgotten:
        #: a subset of nothing the controller knows, so a flag new here is new there)
        self.known_flags = 0
        #: the deepest depth and fastest rate any SET_TARGET out asked for (0: none yet)
        self.max_depth_um = 0
        self.max_rate_dhz = 0
        self.overspeed_frames = 0
        self.estop_reasons: set[int] = set()
        #: over-depths in this fault episode / in the session (H5)
        self.overdepth_in_episode = False
        self.overdepths = 0
        self.foreign_proto = False
        #: while latched: when each ESTOP reason last went out (H3's resend cadence)
        self.estop_sent_us: dict[int, int] = {}
        self.now = 0

    def start_allowed(self) -> bool:
        cid, stamps = self.cartridge
        if self.latched or self.cartridge_removed or cid == 0 or self.overdepths >= 2:
            return False
        if cid == self.session_cartridge:
            return True
        # a fresh sealed cartridge may replace the session's (never a used one)
        return stamps == 0 and cid not in USED

    def overdepth(self) -> None:
        if not self.overdepth_in_episode:
            self.overdepth_in_episode = True
            self.overdepths += 1

    def telemetry(self, t: p.Telemetry) -> list[str]:
        """The rules this frame triggers that demand an ESTOP first."""
        must: list[str] = []
        if (
            t.depth_meas_um > OVERDEPTH_LIMIT_UM
            or t.depth_meas_um > self.max_depth_um + OVERSHOOT_MARGIN_UM
        ):
            reason = (
                EstopReason.OVERDEPTH if t.depth_meas_um > OVERDEPTH_LIMIT_UM
                else EstopReason.OVERSHOOT
            )
            # the first over-depth frame ESTOPs at once; while the pen goes on, again
            # every NOT_STOPPED_RESEND_US after the last ESTOP of any reason (not with
            # every frame)
            sent = self.latched and reason in self.estop_sent_us
            last = max(self.estop_sent_us.values(), default=0)
            if not sent or self.now - last >= NOT_STOPPED_RESEND_US:
                must.append("over-depth")
            self.overdepth()
        new_flags = t.fault_flags & ~self.known_flags
        if new_flags:
            must.append(f"new fault flags {p.fault_names(new_flags)}")
            if new_flags & (1 << p.FaultBit.OVERDEPTH):
                self.overdepth()
        self.known_flags |= t.fault_flags
        if t.state == p.PenState.STAMPING and is_overspeed(t.rate_meas_dhz, self.max_rate_dhz):
            self.overspeed_frames += 1
            if (
                self.overspeed_frames >= OVERSPEED_FRAMES
                and not self.estop_reasons & {r.value for r in SESSION_ENDING}
            ):
                must.append("overspeed (H2)")
        else:
            self.overspeed_frames = 0
        return must


#: ESTOPs of a faulty pen: re-sent at most every 30 ms once the first is out.
SESSION_ENDING = (EstopReason.MISMATCH, EstopReason.OVERSPEED, EstopReason.NOT_STOPPED)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(step, max_size=80),
    tracked=st.booleans(),
    first_cartridge=st.sampled_from([(0xC0FFEE, 0)] * 5 + [(0xBAD, 0), (0, 0), (5, 3)]),
    proto=st.sampled_from([1] * 8 + [0, 2]),
)
def test_no_output_ever_breaks_a_safety_rule(
    steps: list[tuple[Any, ...]], tracked: bool, first_cartridge: tuple[int, int], proto: int
) -> None:
    plan = plan_of(zone_plan(1, "frontal", target_fraction=0.3), zone_plan(2, "vertex", 1200))
    ctl = new_controller(plan, StartFacts("p", USED))
    pen, model = Pen(), Model()
    caps = 3 if tracked else 2
    device = replace(
        DEVICE, capabilities=caps, cartridge_id=first_cartridge[0],
        cartridge_stamps=first_cartridge[1], proto=proto,
    )
    model.foreign_proto = proto != 1  # H4: nothing is ever configured for such a pen
    model.cartridge = first_cartridge
    now = 0
    out = ctl.connect(now)
    check(pen, model, out, must=[])
    now += 500
    check(pen, model, ctl.receive_data(pen.frame(device), now), must=[])
    stamps = 0
    for item in steps:
        kind = item[0]
        must: list[str] = []
        model.now = now if kind != "tel" else now + item[1]
        if kind == "tel":
            now += item[1]
            t: p.Telemetry = item[2]
            stamps = (stamps + t.stamp_count) & 0xFFFF_FFFF
            t = replace(t, stamp_count=stamps)
            must = model.telemetry(t)
            data = pen.frame(t)
        elif kind == "ack":
            acks = [f for f in model.unacked]
            model.unacked = []
            if item[1] == 0 and any(isinstance(f.message, p.ClearFault) for f in acks):
                model.latched = False
                model.overdepth_in_episode = False
                model.estop_sent_us.clear()
            data = pen.acks(acks, item[1])
        elif kind == "fault":
            if not model.latched:
                model.estop_sent_us.clear()  # a new fault: no ESTOP in it yet
            model.latched = True  # any FAULT the pen sends latches the host's fault
            new_flags = item[1] & ~model.known_flags
            if new_flags:
                must = [f"FAULT with new flags {p.fault_names(new_flags)}"]
                if new_flags & (1 << p.FaultBit.OVERDEPTH):
                    model.overdepth()
            model.known_flags |= item[1]
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
            model.now = now
            check(pen, model, ctl.tick(now), must=[])
            continue
        else:
            check(pen, model, ctl.command(item[1], now), must=[])
            continue
        check(pen, model, ctl.receive_data(data, now), must=must)


def check(pen: Pen, model: Model, out: Any, *, must: list[str]) -> None:
    frames = pen.parse(out)
    names = [f.message.TYPE.name for f in frames]
    if must:
        assert names and names[0] == "ESTOP", (must, names)
    for f in frames:
        m = f.message
        if model.foreign_proto:
            assert not isinstance(m, p.Configure | p.SetTarget | p.Start), names
        if isinstance(m, p.SetTarget):
            assert m.depth_um <= DEPTH_CAP_UM
            model.max_depth_um = max(model.max_depth_um, m.depth_um)
            model.max_rate_dhz = max(model.max_rate_dhz, m.rate_dhz)
        if isinstance(m, p.Start):
            assert model.start_allowed(), (model.__dict__, names)
            if model.session_cartridge is None:
                model.session_cartridge = model.cartridge[0]
        if isinstance(m, p.Estop):
            if not model.latched:
                model.estop_sent_us.clear()
            model.latched = True
            model.estop_sent_us[m.reason] = model.now
            model.known_flags |= 1 << p.FaultBit.ESTOP
            model.estop_reasons.add(m.reason)
            if m.reason in (EstopReason.OVERDEPTH, EstopReason.OVERSHOOT):
                model.overdepth()
        if f.ack_req:
            model.unacked.append(f)
    assert all(f.message.nonce == NONCE for f in frames if isinstance(f.message, p.Hello))
