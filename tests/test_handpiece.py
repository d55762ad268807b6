"""The technician's hand: rows over the target zone, lifts between rows, passes, buttons."""

from __future__ import annotations

import itertools
import math

import numpy as np

from devicectl.dose import DoseView
from devicectl.protocol import PenEvent, PenState
from devicectl.zones import load_zone_map
from firmware_sim.handpiece import Hand, HandParams, rows_over, watched_rows


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


# --- the hand that watches the dose map -----------------------------------------

def _view(hits: np.ndarray, target: int = 10, most: int = 14) -> DoseView:
    mask = np.ones(hits.shape, dtype=bool)
    return DoseView(0.0, 0.0, 0.5, hits.astype(np.int32), mask, target, most, 4.0)


def test_watched_rows_go_only_where_spots_are_below_target() -> None:
    hits = np.full((80, 120), 10)  # 40 x 60 mm, all at target ...
    hits[40:50, 20:100] = 0  # ... but a strip of 5 x 40 mm
    rows = watched_rows(_view(hits), 3.5, 5.0, HandParams(), shift=False)
    assert rows
    for (x0, y0), (x1, y1) in rows:
        assert y0 == y1 and 20.0 - 2.5 <= y0 <= 25.0 + 2.5  # rows over the strip only
        assert min(x0, x1) >= 10.0 - 2.5 and max(x0, x1) <= 50.0 + 2.5


def test_watched_rows_keep_a_footprint_away_from_spots_at_their_maximum() -> None:
    hits = np.zeros((80, 120))
    hits[18:22, 58:62] = 14  # a spot at its maximum (x 29-31, y 9-11 mm), in the first band
    rows = watched_rows(_view(hits), 3.5, 5.0, HandParams(), shift=False)
    near = [r for r in rows if abs(r[0][1] - 10.0) < 2.5 + 0.5]
    assert near  # rows pass by the spot ...
    for (x0, _y0), (x1, _y1) in near:
        lo, hi = sorted((x0, x1))
        assert not lo < 30.0 < hi, (x0, x1)  # ... but break off around it


def test_with_nothing_below_target_the_hand_rests_lifted() -> None:
    zm = load_zone_map()
    hand = Hand({z.id: z.outline_mm for z in zm.zones}, 5.0, seed=1)
    hits = np.full((10, 10), 20)
    hand.watch(lambda zid: _view(hits))
    contact = []
    for t in range(0, 3_000_000, 10_000):
        hand.advance(t, PenState.STAMPING, 3, 1000)
        contact.append(hand.contact)
    assert not any(contact)


def test_a_hand_watching_the_map_sweeps_the_spots_below_target() -> None:
    zm = load_zone_map()
    zone = zm.by_name("vertex")
    hand = Hand({z.id: z.outline_mm for z in zm.zones}, 5.0, seed=2)
    hits = np.zeros((160, 280), dtype=np.int32)  # the vertex's box, 0.5 mm cells
    mask = np.ones(hits.shape, dtype=bool)
    view = DoseView(-70.0, 135.0, 0.5, hits, mask, 13, 16, 4.05)
    hand.watch(lambda zid: view if zid == zone.id else None)
    touched = []
    for t in range(0, 20_000_000, 10_000):
        hand.advance(t, PenState.STAMPING, zone.id, 1000)
        if hand.contact:
            touched.append((hand.x_mm, hand.y_mm))
    assert touched and all(zm.zone_at(x, y) is not None for x, y in touched[::50])
    # the first band first: a technician finishes a patch before moving on
    assert max(y for _x, y in touched) - min(y for _x, y in touched) < 40.0


def test_a_hand_that_sees_work_left_does_not_press_next_zone_while_the_host_holds() -> None:
    """Issue 14: a stopped pen while the map still shows spots the hand can treat
    is the host's hold, not "zone done": no NEXT_ZONE (which the host refuses).
    Once the map shows nothing it can treat, the same stop gets the press."""
    zm = load_zone_map()
    zone = zm.by_name("vertex")
    hand = Hand({z.id: z.outline_mm for z in zm.zones}, 5.0, seed=3)
    hits = np.zeros((160, 280), dtype=np.int32)
    mask = np.ones(hits.shape, dtype=bool)
    room = np.full(hits.shape, 16, dtype=np.int32)
    hand.watch(lambda zid: DoseView(-70.0, 135.0, 0.5, hits, mask, 13, 16, 4.05, room))
    hand.advance(0, PenState.STAMPING, zone.id, 1000)
    for t in range(100_000, 10_000_000, 100_000):
        hand.advance(t, PenState.READY, zone.id, 1000)  # held by the host for 10 s
    assert PenEvent.BUTTON_NEXT_ZONE not in hand.take_presses()
    hits[:] = 13  # every spot at target: nothing left to treat
    for t in range(10_000_000, 20_000_000, 100_000):
        hand.advance(t, PenState.READY, zone.id, 1000)
    assert hand.take_presses() == [PenEvent.BUTTON_NEXT_ZONE]
