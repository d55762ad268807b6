"""A pen whose firmware lies, against the host's checks (red team, round 12).

The real simulator stamps; a misbehaviour (firmware_sim/misbehave.py) or a `Liar`
(test_controller_checks_sim.py) between it and the host makes it lie through the
real codec, and the real Controller answers. Each test names the rule it holds
the host to and the code that holds it.
"""

from __future__ import annotations

from dataclasses import replace

from test_controller_checks_sim import MAP, Liar, run

from devicectl import protocol as p
from devicectl.controller import State
from devicectl.safety import EstopReason
from firmware_sim.misbehave import MisbehavingPen, get_misbehaviour
from firmware_sim.virtual import VirtualPen

#: the plan's rate (test_virtual_session.plan_for: every zone at 100 Hz)
RATE_DHZ = 1000


def fast_pen() -> MisbehavingPen:
    """The simulator's `overspeed` pen: its motor at 140 % of the commanded rate."""
    return MisbehavingPen(VirtualPen(seed=5, zone_map=MAP), get_misbehaviour("overspeed"), seed=5)


def honest_looking_rate(t: p.Telemetry) -> p.Telemetry:
    """Says it stamps at the commanded rate, whatever its motor does."""
    return replace(t, rate_meas_dhz=min(t.rate_meas_dhz, RATE_DHZ))


def says_ready(t: p.Telemetry) -> p.Telemetry:
    """Says READY (and no rate) while it stamps."""
    if t.state != p.PenState.STAMPING:
        return t
    return replace(t, state=p.PenState.READY, rate_meas_dhz=0, depth_meas_um=0)


def test_a_pen_stamping_fast_behind_an_honest_looking_rate_is_estopped_overspeed() -> None:
    """H2 (docs/pen-protocol.md, "H2 Rate"; controller_checks.py PenChecks.check) reads
    `rate_meas_dhz` only: a pen whose counter runs at 140 % of the commanded rate while
    it reports the commanded rate escapes it. Beyond the spec's letter, the host
    measures the rate from `stamp_count` itself (docs/safety.md, H2)."""
    r = run(Liar(telemetry=honest_looking_rate), pen=fast_pen())  # type: ignore[arg-type]
    assert r.pen.fired_at_us is not None  # its motor does run fast
    assert r.estops(EstopReason.OVERSPEED), r.ctl.fault
    assert r.ctl.state is State.FAULT and r.ctl.fault_final is not None


def test_a_pen_stamping_fast_while_it_says_ready_is_estopped_overspeed() -> None:
    """As above, for a pen that reports READY (no rate for H2 to read) while START is in
    force and its counter runs at 140 % of the commanded rate."""
    r = run(Liar(telemetry=says_ready), pen=fast_pen())  # type: ignore[arg-type]
    assert r.estops(EstopReason.OVERSPEED), r.ctl.fault
    assert r.ctl.state is State.FAULT and r.ctl.fault_final is not None
