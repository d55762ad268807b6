"""The technician's hand: rows over the target zone, lifts between rows, passes, buttons."""

from __future__ import annotations

import itertools
import math

from devicectl.protocol import PenEvent, PenState
from devicectl.zones import load_zone_map
from firmware_sim.handpiece import Hand, HandParams, rows_over


def trace(
    seed: int, zone_id: int = 3, seconds: float = 20.0
) -> tuple[Hand, list[tuple[int, float, float, bool]]]:
    zm = load_zone_map()
    hand = Hand({z.id: z.outline_mm for z in zm.zones}, 5.0, seed=seed)
    out = []
    for t in range(0, int(seconds * 1e6), 10_000):
        hand.advance(t, PenState.STAMPING, zone_id)
        out.append((t, hand.x_mm, hand.y_mm, hand.contact))
    return hand, out


def test_hand_is_deterministic_for_a_seed() -> None:
    assert trace(5, seconds=5)[1] == trace(5, seconds=5)[1]
    assert trace(5, seconds=5)[1] != trace(6, seconds=5)[1]


def test_in_contact_the_tip_stays_in_the_target_zone() -> None:
    zm = load_zone_map()
    _, pts = trace(1, zone_id=3)
    inside = [zm.zone_at(x, y) for _, x, y, c in pts if c]
    assert inside and sum(1 for z in inside if z is not None and z.id == 3) / len(inside) > 0.98


def test_hand_speed_in_contact_is_between_5_and_30_mm_s() -> None:
    _, pts = trace(2, zone_id=1)
    speeds = [
        math.hypot(b[1] - a[1], b[2] - a[2]) / 0.01
        for a, b in itertools.pairwise(pts)
        if a[3] and b[3]
    ]
    assert speeds and 4.0 <= sorted(speeds)[len(speeds) // 2] <= 31.0
    assert max(speeds) < 35.0  # jitter adds a little


def test_hand_lifts_between_rows_so_contact_drops_and_returns() -> None:
    _, pts = trace(3, zone_id=1, seconds=40)
    changes = sum(1 for a, b in itertools.pairwise(pts) if a[3] != b[3])
    assert changes >= 4


def test_rows_overlap_and_the_next_pass_runs_across() -> None:
    square = ((0.0, 0.0), (40.0, 0.0), (40.0, 40.0), (0.0, 40.0))
    along = rows_over(square, 3.5, 2.5, across=False)
    across = rows_over(square, 3.5, 2.5, across=True)
    assert all(s[1] == e[1] for s, e in along) and all(s[0] == e[0] for s, e in across)
    assert along[1][0][1] - along[0][0][1] == 3.5 < 5.0  # pitch under the footprint


def test_hand_presses_next_zone_after_the_host_keeps_the_pen_stopped_in_a_done_zone() -> None:
    zm = load_zone_map()
    hand = Hand(
        {z.id: z.outline_mm for z in zm.zones}, 5.0, params=HandParams(next_zone_after_ms=1000)
    )
    hand.advance(0, PenState.STAMPING, 2)
    hand.advance(100_000, PenState.READY, 2)
    hand.advance(1_000_000, PenState.READY, 2)
    assert hand.take_presses() == []
    hand.advance(1_100_000, PenState.READY, 2)
    assert hand.take_presses() == [PenEvent.BUTTON_NEXT_ZONE]
    hand.advance(5_000_000, PenState.READY, 2)
    assert hand.take_presses() == []  # once
    # Told "not done" (stamping again), the technician does not keep pressing for this zone.
    hand.advance(5_100_000, PenState.STAMPING, 2)
    hand.advance(5_200_000, PenState.READY, 2)
    hand.advance(9_000_000, PenState.READY, 2)
    assert hand.take_presses() == []
    hand.advance(9_100_000, PenState.STAMPING, 3)  # the next zone gets its own press
    hand.advance(9_200_000, PenState.READY, 3)
    hand.advance(11_000_000, PenState.READY, 3)
    assert hand.take_presses() == [PenEvent.BUTTON_NEXT_ZONE]


def test_hand_does_not_press_next_zone_while_its_own_pause_is_pending() -> None:
    zm = load_zone_map()
    hand = Hand({z.id: z.outline_mm for z in zm.zones}, 5.0)
    hand.advance(0, PenState.STAMPING, 2)
    hand.schedule_press(10_000, PenEvent.BUTTON_PAUSE)
    for t in range(10_000, 5_000_000, 100_000):
        hand.advance(t, PenState.READY, 2)
    assert hand.take_presses() == [PenEvent.BUTTON_PAUSE]
