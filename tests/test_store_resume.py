"""A session continued after its link was lost keeps its cartridge, on both
backends (an SQLite file, a real PostgreSQL server): the continuation is the
same treatment, so recording its own cartridge again is not a second use; a
different session fitting that cartridge is still refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from clinic_support import GATE

from devicectl.cli import main
from devicectl.commands.run_setup import continues_event
from devicectl.errors import StoreError
from devicectl.store import CartridgeUsedError, Store

DEEP = Path(__file__).parent / "data" / "short-two-zones.yaml"
SIM = ("--sim", "--yes", "--speed", "0", "--seed", "5")


def test_a_continued_session_keeps_its_cartridge_and_no_other_session_takes_it(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(records)
    assert main(["run", "--profile", str(DEEP), "--patient", "P-001", *GATE, *SIM,
                 "--scenario", "disconnect", "--db", db]) == 4
    with Store(records) as store:
        [lost] = store.sessions()
    assert lost.outcome == "link_lost" and lost.cartridge_id not in (None, 0)
    capsys.readouterr()
    code = main(["run", "--resume", str(lost.id), *GATE, *SIM, "--db", db])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    with Store(records) as store:
        cont = store.sessions()[0]
        assert cont.id != lost.id and cont.outcome == "complete"
        assert cont.cartridge_id == lost.cartridge_id  # the same treatment, the same cartridge
        other = store.create_session(
            patient_ref="P-002", profile_name="x", profile_hash="h", profile_text="t",
            started_at="2026-03-02T09:00:00+00:00", simulated=True)
        with pytest.raises(CartridgeUsedError, match=f"cartridge {lost.cartridge_id}"):
            store.set_device(other, serial=1, fw_version=1,
                             cartridge_id=int(lost.cartridge_id or 0), position_mode="grid")


def _session(store: Store, patient: str = "P-001", continues: int | None = None) -> int:
    return store.create_session(
        patient_ref=patient, profile_name="x", profile_hash="h", profile_text="t",
        started_at="2026-03-02T09:00:00+00:00", simulated=True, continues=continues)


def _fit(store: Store, sid: int, cartridge: int) -> None:
    store.set_device(sid, serial=7, fw_version=1, cartridge_id=cartridge, position_mode="grid")


def test_the_cartridge_belongs_to_the_treatment_its_continuations_and_no_one_else(
    records: Path | str
) -> None:
    with Store(records) as store:
        first = _session(store)
        _fit(store, first, 77)
        _fit(store, first, 77)  # its own cartridge again: idempotent
        store.close_session(first, "link_lost", "2026-03-02T09:10:00+00:00")
        second = _session(store, continues=first)  # as `run --resume` records it
        store.append_events(second, [continues_event(first, store.session(first))])
        _fit(store, second, 77)
        store.close_session(second, "link_lost", "2026-03-02T09:20:00+00:00")
        third = _session(store, continues=second)  # still the same treatment
        store.append_events(third, [continues_event(second, store.session(second))])
        _fit(store, third, 77)
        _fit(store, third, 78)  # a new cartridge on resume: claimed by the same session
        stranger = _session(store, "P-002")
        for cartridge in (77, 78):
            with pytest.raises(CartridgeUsedError, match=f"cartridge {cartridge} .*session"):
                _fit(store, stranger, cartridge)
        assert store.session(stranger).cartridge_id is None
        assert [store.session(s).cartridge_id for s in (first, second, third)] == [77, 77, 78]
        if store.pg:  # the server's own rule, for a write that skips the store's check
            with (pytest.raises(StoreError, match="cartridge 77 was already used in session 1"),
                  store.transaction("a raw write") as conn):
                conn.execute("UPDATE sessions SET cartridge_id = 77 WHERE id = ?",
                             (stranger,))
            with store.transaction("a raw write") as conn:  # the continuation's is allowed
                conn.execute("UPDATE sessions SET cartridge_id = 77 WHERE id = ?", (third,))


def test_a_server_at_schema_2_keeps_its_cartridges_single_use_after_the_upgrade(
    pg_url: str
) -> None:
    import psycopg

    from devicectl.dbconn import PgConn
    from devicectl.store_pg import PG_MIGRATIONS, PG_SCHEMA_VERSION

    conn = PgConn(psycopg.connect(pg_url, autocommit=True))
    for statements in PG_MIGRATIONS[:2]:  # a clinic's server as the last release left it
        for sql in statements:
            conn.execute(sql)
    conn.execute("UPDATE schema_version SET version = 2")
    conn.execute("INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                 " started_at, cartridge_id) VALUES ('P-1', 'x', 'h', 't', 'w', 91)")
    conn.close()
    with Store(pg_url) as store:
        assert store.conn.execute("SELECT version FROM schema_version").fetchone()[0] \
            == PG_SCHEMA_VERSION
        assert store.conn.execute(
            "SELECT cartridge_id, session_id FROM cartridge_claims").fetchall() == [(91, 1)]
        other = _session(store, "P-2")
        with (pytest.raises(StoreError, match="cartridge 91 was already used in session 1"),
              store.transaction("a raw write") as raw):  # the key, not the store's check
            raw.execute("UPDATE sessions SET cartridge_id = 91 WHERE id = ?", (other,))
