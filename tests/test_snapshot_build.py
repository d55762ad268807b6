"""The snapshot builder: what it copies out of the live coverage for the views."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devicectl import dose
from devicectl.controller import Controller, StartFacts
from devicectl.link import VirtualClock
from devicectl.patches import MARGIN_BIT
from devicectl.profile import load_profile
from devicectl.profile_plan import make_plan
from devicectl.session import VIRTUAL_MAX_WAIT_US, Policy, Session
from devicectl.snapshot_build import SnapshotBuilder
from devicectl.zones import load_zone_map
from firmware_sim.virtual import VirtualPen, VirtualWire

DATA = Path(__file__).parent / "data"


def finished_controller(profile: str = "short-two-zones.yaml") -> Controller:
    """The controller of a whole session of `profile` (tests/data) in virtual time
    (tracked coverage)."""
    zone_map = load_zone_map()
    loaded = load_profile(DATA / profile, zone_map=zone_map)
    clock = VirtualClock(1_000_000)
    ctl = Controller(lambda dev: make_plan(loaded, dev, zone_map), zone_map,
                     StartFacts(patient_ref="S-1", used_cartridge_ids=frozenset()),
                     nonce=1234, now_us=clock.now_us)
    session = Session(ctl, wire=VirtualWire(VirtualPen(seed=3, zone_map=zone_map), clock),
                      writer=None, policy=Policy(auto_confirm=True), clock=clock,
                      max_wait_us=VIRTUAL_MAX_WAIT_US)
    session.start()
    assert session.wait(120)
    return ctl


def test_cells_over_max_are_the_coverages_counted_on_the_copied_crop() -> None:
    ctl = finished_controller()
    cov = ctl.coverage
    assert cov is not None and cov.tracked
    labels = np.asarray(cov.raster.labels).reshape(-1)
    builder = SnapshotBuilder()
    before = builder.build(ctl, 0, 0, 0, finished=True)
    assert dict(before.over_max) == {z: cov.cells_over_max(z) for z in cov.zones}
    # A spot of the first zone brought exactly to its maximum: at it, not over it
    first = min(cov.zones)
    cells = np.flatnonzero(labels == first)
    spot = int(cells[len(cells) // 2])
    cov.add_strokes(first, cov.limits[first].max_hits - int(cov.hits[spot]), spot)
    assert cov.hits[spot] == cov.limits[first].max_hits
    # Strokes past the maximum on one spot of the first zone, on two of the next
    for spots, zid in enumerate(sorted(cov.zones), start=1):
        cells = np.flatnonzero(labels == zid)
        for k in range(1, spots + 1):
            cov.add_strokes(zid, cov.limits[zid].max_hits + 1, int(cells[k * len(cells) // 3]))
    snap = builder.build(ctl, 1, 0, 1, finished=True)
    expected = {z: cov.cells_over_max(z) for z in cov.zones}
    assert all(n > 0 for n in expected.values()) and len(set(expected.values())) > 1
    assert dict(snap.over_max) == expected
    assert snap.coverage is not None and snap.coverage.version == cov.version
    crop, crop_labels = snap.coverage.hits, snap.coverage.layout.labels
    for zid in cov.zones:  # the crop holds every cell of the plan's zones
        assert int(crop[crop_labels == zid].sum()) == int(cov.hits[labels == zid].sum()) > 0


def test_a_snapshot_pickles_as_its_fields_in_the_constructors_order() -> None:
    """Snapshot.__reduce__ sends the fields' values and the receiver calls the constructor
    with them: a value in another field's place (an order that differs) would not
    survive the round trip. Every field here differs from its default and from the others."""
    import pickle
    from dataclasses import fields, replace

    from devicectl.snapshot import Outcome, Snapshot, seal
    from devicectl.transitions import ControlEvent, EventKind

    ctl = finished_controller()
    built = SnapshotBuilder().build(ctl, 7, 3, 7, records_failure="disk full", finished=True,
                                    outcome=Outcome.COMPLETE)
    snap = replace(built, go_no_go=("battery low",), over_max={2: 5, 3: 1},
                   claim_requested=True, claim_decided=False, claim_refused="used before",
                   recent=(ControlEvent(5, EventKind.STATE, "READY -> STAMPING"),))
    for f in fields(Snapshot):
        assert getattr(snap, f.name) != getattr(Snapshot(), f.name) or f.name == "claim_decided"
    back = seal(pickle.loads(pickle.dumps(snap, pickle.HIGHEST_PROTOCOL)))
    assert snap.coverage is not None and back.coverage is not None
    assert snap.zone_crop is not None and back.zone_crop is not None
    for f in fields(Snapshot):
        mine, theirs = getattr(snap, f.name), getattr(back, f.name)
        if f.name == "coverage":
            assert np.array_equal(theirs.hits, mine.hits) and theirs.version == mine.version
            assert np.array_equal(theirs.layout.labels, mine.layout.labels)
        elif f.name == "zone_crop":
            assert np.array_equal(theirs.hits, mine.hits) and theirs.zone_id == mine.zone_id
        else:
            assert theirs == mine, f.name


def test_a_patched_zones_margin_over_its_maximum_is_counted_as_the_records_count_it() -> None:
    """A patch's margin is treated within the zone's maximum: a margin cell pushed past
    it is over the maximum on the live screens (the snapshot's over_max, which the end
    summary prints) as in the records' dose (dose.zone_dose_stats of the saved grid)."""
    ctl = finished_controller("aa-two-patches.yaml")
    cov = ctl.coverage
    assert cov is not None and cov.tracked
    labels = np.asarray(cov.raster.labels).reshape(-1)
    patched = [zid for zid, z in cov.zones.items() if z.patches]
    assert patched
    builder = SnapshotBuilder()
    for n, zid in enumerate(patched, start=1):  # n margin cells of each patched zone over
        margin = np.flatnonzero(labels == (zid | MARGIN_BIT))
        assert margin.size > n
        for k in range(n):
            cell = int(margin[k * margin.size // n])
            cov.add_strokes(zid, cov.limits[zid].max_hits + 1 - int(cov.hits[cell]), cell)
    snap = builder.build(ctl, 1, 0, 1, finished=True)
    records = dose.zone_dose_stats(cov.to_bytes())
    for n, zid in enumerate(patched, start=1):
        assert snap.over_max[zid] == records[zid]["cells_over_max"] == cov.cells_over_max(zid)
        assert snap.over_max[zid] >= n  # the cells pushed over (their footprints' too)
