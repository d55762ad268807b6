"""A continuation (a lost link resumed: `devicectl run --resume N`) is the same
treatment and may record its predecessor's cartridge; which session continues
which is the records' own link, written when the continuation is created, not
an event anyone who may append events can write. On both backends (an SQLite
file, a real PostgreSQL server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicectl.commands.run_setup import continues_event
from devicectl.errors import StoreError
from devicectl.store import CartridgeUsedError, Store


def _session(store: Store, patient: str) -> int:
    return store.create_session(
        patient_ref=patient, profile_name="x", profile_hash="h", profile_text="t",
        started_at="2026-03-02T09:00:00+00:00", simulated=True)


def _fit(store: Store, sid: int, cartridge: int) -> None:
    store.set_device(sid, serial=7, fw_version=1, cartridge_id=cartridge, position_mode="grid")


def test_a_forged_continues_event_does_not_give_another_patient_the_cartridge(
    records: Path | str
) -> None:
    """docs/architecture.md:79 ("The claim belongs to the session that first recorded
    the cartridge and to the sessions that continue it after a lost link") and
    README.md:114: the claim followed any CONTINUES event (claim.py:22
    CONTINUED_CHAIN; store_pg.py:266 the server's trigger), which whoever may append
    events writes (a room's login), so a second patient's session appending a
    CONTINUES naming the first one took its cartridge, used on another patient."""
    with Store(records) as store:
        first = _session(store, "P-001")
        _fit(store, first, 77)
        store.close_session(first, "link_lost", "2026-03-02T09:10:00+00:00")
        forged = _session(store, "P-002")
        store.append_events(forged, [continues_event(first, store.session(first))])
        with pytest.raises(CartridgeUsedError, match=f"cartridge 77 .*session {first}"):
            _fit(store, forged, 77)
        assert store.session(forged).cartridge_id is None
        if store.pg:  # the server's own rule, for a write that skips the store's check
            with (pytest.raises(StoreError, match="cartridge 77 was already used"),
                  store.transaction("a raw write") as conn):
                conn.execute("UPDATE sessions SET cartridge_id = 77 WHERE id = ?", (forged,))
