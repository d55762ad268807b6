"""The records store's own guarantees: schema and WAL on real SQLite files; then,
on both backends (a real SQLite file, a real PostgreSQL server), append-only
events, outcomes set once, and the questions the controller asks."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicectl.dbconn import Conn, PgConn
from devicectl.errors import StoreError
from devicectl.records import APPLICATION_ID, NUL_STANDIN, SCHEMA_VERSION
from devicectl.records_where import default_db_path
from devicectl.safety import DEPTH_CAP_UM, INTERVAL_DEPTH_UM
from devicectl.store import EventRecord, Store, ZoneCoverage

START = "2026-03-01T09:00:00+00:00"


def new_session(store: Store, patient_ref: str = "P-0001", started_at: str = START) -> int:
    return store.create_session(
        patient_ref=patient_ref,
        profile_name="crown-standard",
        profile_hash="9f86d081884c7d65",
        profile_text="name: crown-standard\n",
        started_at=started_at,
    )


def event(i: int, *, safety: bool = False, wall: str = "2026-03-01T09:00:01+00:00") -> EventRecord:
    return EventRecord(
        t_us=i * 1000,
        wall=wall,
        kind="command",
        text=f"event {i}",
        zone_id=1,
        data={"i": i},
        safety=safety,
    )


def zone(
    name: str, depth_um: int, strokes: int, zone_id: int = 1, done: bool = False
) -> ZoneCoverage:
    return ZoneCoverage(
        zone_id=zone_id,
        name=name,
        depth_um=depth_um,
        rate_dhz=1000,
        fraction=0.5,
        target_fraction=0.9,
        strokes=strokes,
        cells_at_max=0,
        done=done,
        seconds=30.0,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "records" / "sessions.db"


def raw(target: Path | str) -> Conn:
    """A connection around devicectl, as anyone with the database's login has."""
    if isinstance(target, str):
        return PgConn(psycopg.connect(target, autocommit=True))
    return sqlite3.connect(target, isolation_level=None)


#: What the database says when its triggers refuse a write.
REFUSED = (sqlite3.IntegrityError, psycopg.errors.RaiseException)
_patients = itertools.count()


# -- the file -----------------------------------------------------------------


def test_new_database_is_created_with_its_folder_in_wal_mode(db: Path) -> None:
    with Store(db):
        pass
    conn = raw(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_reopening_keeps_records_and_schema(records: Path | str) -> None:
    db = records
    with Store(db) as store:
        sid = new_session(store)
        store.append_events(sid, [event(1)])
    with Store(db) as store:
        assert [e.text for e in store.events(sid)] == ["event 1"]
    assert raw(db).execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1


def test_default_db_path_follows_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
    assert default_db_path() == Path("/srv/data/devicectl/sessions.db")


def test_default_db_path_falls_back_to_local_share(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_db_path() == tmp_path / ".local/share/devicectl/sessions.db"


def test_file_that_is_not_sqlite_is_refused_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"shopping list: needles, gloves\n" * 100)
    with pytest.raises(StoreError, match="is not a devicectl records database") as info:
        Store(path)
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"shopping list")


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = raw(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(StoreError, match="not a devicectl records database"):
        Store(path)
    names = {r[0] for r in raw(path).execute("SELECT name FROM sqlite_master")}
    assert names == {"invoices"}


def test_database_from_a_newer_devicectl_is_refused(records: Path | str) -> None:
    db = records
    with Store(db):
        pass
    raw(db).execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer devicectl"):
        Store(db)


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(StoreError, match="cannot create the records folder"):
        Store(blocker / "devicectl" / "sessions.db")


def test_open_without_create_does_not_make_a_file(db: Path) -> None:
    with pytest.raises(StoreError, match="no records yet"):
        Store(db, create=False)
    assert not db.exists()


# -- append-only -------------------------------------------------------------


def test_events_cannot_be_updated_or_deleted(records: Path | str) -> None:
    with Store(records) as store:
        sid = new_session(store)
        store.append_events(sid, [event(1), event(2)])
    conn = raw(records)
    with pytest.raises(REFUSED, match="append-only"):
        conn.execute("UPDATE events SET text = 'nothing happened'")
    with pytest.raises(REFUSED, match="append-only"):
        conn.execute("DELETE FROM events")
    with Store(records) as store:
        assert [e.text for e in store.events(sid)] == ["event 1", "event 2"]


def test_sessions_cannot_be_deleted(records: Path | str) -> None:
    with Store(records) as store:
        sid = new_session(store)
    with pytest.raises(REFUSED, match="kept"):
        raw(records).execute("DELETE FROM sessions WHERE id = ?", (sid,))


def test_outcome_is_set_once(records: Path | str) -> None:
    with Store(records) as store:
        sid = new_session(store)
        store.close_session(sid, "fault", "2026-03-01T09:10:00+00:00")
        with pytest.raises(StoreError, match="already closed"):
            store.close_session(sid, "complete", "2026-03-01T09:30:00+00:00")
    with pytest.raises(REFUSED, match="final"):
        raw(records).execute("UPDATE sessions SET outcome = 'complete' WHERE id = ?", (sid,))
    with pytest.raises(REFUSED, match="final"):
        raw(records).execute("UPDATE sessions SET ended_at = NULL WHERE id = ?", (sid,))
    with Store(records) as store:
        rec = store.session(sid)
    assert (rec.outcome, rec.ended_at) == ("fault", "2026-03-01T09:10:00+00:00")


def test_closed_session_takes_no_more_events_or_coverage(records: Path | str) -> None:
    with Store(records) as store:
        sid = new_session(store)
        store.close_session(sid, "complete", "2026-03-01T09:30:00+00:00")
        with pytest.raises(StoreError, match="final"):
            store.append_events(sid, [event(1)])
        with pytest.raises(StoreError, match="final"):
            store.save_coverage(sid, [zone("crown", 1000, 5)], b"s")
        assert store.events(sid) == []
        assert store.session(sid).zones == ()


def test_unknown_outcome_is_refused(records: Path | str) -> None:
    with Store(records) as store:
        sid = new_session(store)
        with pytest.raises(StoreError, match="unknown session outcome 'finished'"):
            store.close_session(sid, "finished", "2026-03-01T09:30:00+00:00")
        assert store.session(sid).outcome is None


def test_empty_patient_ref_is_refused(records: Path | str) -> None:
    with Store(records) as store, pytest.raises(StoreError, match="patient reference"):
        new_session(store, patient_ref="  ")


# -- round trips ---------------------------------------------------------------


def test_missing_session_is_one_clear_sentence(records: Path | str) -> None:
    with Store(records) as store, pytest.raises(StoreError) as info:
        store.session(42)
    assert str(info.value) == (
        f"no session 42 in {store.path}; `devicectl sessions list` shows them")
    assert "@" not in str(info.value)  # a server's URL is named without its login


def test_device_and_coverage_are_recorded_latest_per_zone(records: Path | str) -> None:
    with Store(records) as store:
        sid = new_session(store)
        store.set_device(
            sid, serial=123456, fw_version=0x0102, cartridge_id=77, position_mode="grid"
        )
        store.save_coverage(sid, [zone("crown", 1000, 5), zone("vertex", 800, 0, zone_id=2)], b"a")
        store.save_coverage(sid, [zone("crown", 1000, 50, done=True)], b"b")
        rec = store.session(sid)
        assert (rec.device_serial, rec.fw_version, rec.cartridge_id) == (123456, 0x0102, 77)
        assert rec.position_mode == "grid"
        assert [(z.name, z.strokes, z.done) for z in rec.zones] == [
            ("crown", 50, True),
            ("vertex", 0, False),
        ]
        assert store.coverage_state(sid) == b"b"


def test_sessions_are_listed_newest_first_up_to_limit(records: Path | str) -> None:
    with Store(records) as store:
        ids = [new_session(store, patient_ref=f"P-{i}") for i in range(5)]
        assert [r.id for r in store.sessions(limit=3)] == ids[::-1][:3]


def test_a_reader_sees_committed_records_while_a_writer_holds_the_file(records: Path | str) -> None:
    with Store(records) as writer, Store(records) as reader:
        sid = new_session(writer)
        writer.append_events(sid, [event(1)])
        assert [e.text for e in reader.events(sid)] == ["event 1"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
events_strategy = st.lists(
    st.builds(
        EventRecord,
        t_us=st.integers(0, 2**62),
        wall=st.just("2026-03-01T09:00:01+00:00"),
        kind=st.sampled_from(["command", "nack", "fault", "zone", "pause", "override", "warning"]),
        text=st.text(max_size=60),
        zone_id=st.none() | st.integers(0, 255),
        data=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        safety=st.booleans(),
    ),
    max_size=20,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(events_strategy, max_size=4))
def test_events_come_back_exactly_as_appended_in_order(
    records: Path | str, batches: list[list[EventRecord]]
) -> None:
    with Store(records) as store:
        sid = new_session(store, patient_ref=f"P-{next(_patients)}")
        for batch in batches:
            store.append_events(sid, batch)
        assert store.events(sid) == [
            dataclasses.replace(e, kind=e.kind.replace("\x00", NUL_STANDIN),
                                text=e.text.replace("\x00", NUL_STANDIN))
            for batch in batches for e in batch
        ]


# -- the controller's questions ------------------------------------------------


def test_used_cartridges_are_those_of_any_session_but_none_and_zero(records: Path | str) -> None:
    with Store(records) as store:
        a, b, c = (new_session(store, patient_ref=f"P-{i}") for i in range(3))
        new_session(store, patient_ref="P-3")  # no pen yet: no cartridge
        store.set_device(a, serial=1, fw_version=1, cartridge_id=11, position_mode="grid")
        store.set_device(b, serial=1, fw_version=1, cartridge_id=22, position_mode="grid")
        store.set_device(c, serial=1, fw_version=1, cartridge_id=0, position_mode="grid")
        store.close_session(b, "refused", "2026-03-01T09:01:00+00:00")
        assert store.used_cartridge_ids() == frozenset({11, 22})
        assert store.used_cartridge_ids(exclude_session=a) == frozenset({22})


def test_days_since_deep_treatment_counts_only_this_patients_stamped_deep_zones(
    records: Path | str,
) -> None:
    deep = INTERVAL_DEPTH_UM + 50
    with Store(records) as store:
        old = new_session(store, started_at="2026-01-01T09:00:00+00:00")
        store.save_coverage(old, [zone("crown", DEPTH_CAP_UM, 300)], None)
        store.close_session(old, "complete", "2026-01-01T09:30:00+00:00")
        recent = new_session(store, started_at="2026-02-01T09:00:00+00:00")
        store.save_coverage(
            recent,
            [
                zone("crown", deep, 10),
                zone("temple-left", INTERVAL_DEPTH_UM, 500, zone_id=2),  # not deeper than
                zone("vertex", DEPTH_CAP_UM, 0, zone_id=3),  # planned, never stamped
            ],
            None,
        )
        store.close_session(recent, "aborted", "2026-02-01T12:00:00+00:00")
        other = new_session(store, patient_ref="P-9999", started_at="2026-02-20T09:00:00+00:00")
        store.save_coverage(other, [zone("hairline", DEPTH_CAP_UM, 100, zone_id=4)], None)

        days = store.days_since_deep_treatment(
            "P-0001", "2026-02-11T12:00:00+00:00", INTERVAL_DEPTH_UM
        )
    assert days == {"crown": pytest.approx(10.0)}


def test_interrupted_session_counts_from_its_last_event(records: Path | str) -> None:
    with Store(records) as store:
        sid = new_session(store, started_at="2026-02-01T09:00:00Z")
        store.append_events(sid, [event(1, wall="2026-02-02T09:00:00Z")])  # ran past midnight
        store.save_coverage(sid, [zone("crown", DEPTH_CAP_UM, 10)], None)
        days = store.days_since_deep_treatment("P-0001", "2026-02-03T09:00:00Z", INTERVAL_DEPTH_UM)
        assert days == {"crown": pytest.approx(1.0)}
        resumed = store.days_since_deep_treatment(
            "P-0001", "2026-02-03T09:00:00Z", INTERVAL_DEPTH_UM, exclude_session=sid
        )
        assert resumed == {}


def test_a_note_is_appended_chained_and_read_back_on_either_backend(
    records: Path | str,
) -> None:
    from devicectl.chain import verify_session
    from devicectl.notes import add_note, notes_of

    with Store(records) as store:
        sid = new_session(store)
        store.close_session(sid, "complete", "2026-03-01T09:30:00+00:00")
        first = add_note(store.conn, sid, wall="2026-03-01T10:00:00+00:00",
                         text="mild erythema", adverse="redness", author="OP-1")
        second = add_note(store.conn, sid, wall="2026-03-02T10:00:00+00:00",
                          text="resolved", adverse=None, author="OP-1")
        assert second.id > first.id and second.hash != first.hash
        assert [n.text for n in notes_of(store.conn, [sid])[sid]] == ["mild erythema",
                                                                       "resolved"]
        assert verify_session(store.conn, sid).problem is None
        with pytest.raises(StoreError, match="no session 999"):
            add_note(store.conn, 999, wall="2026-03-02T10:00:00+00:00", text="x",
                     adverse=None, author=None)


def test_refused_attempts_are_kept_apart_append_only_on_either_backend(
    records: Path | str,
) -> None:
    with Store(records) as store:
        sid = new_session(store)
        store.record_refusal(reason="cartridge 7 was already used", wall=START,
                             cartridge_id=7, session_id=sid)
        store.record_refusal(reason="patient P-2 has session 1 open in room 3", wall=START,
                             patient_ref="P-2", room="4", operator="OP-1")
        newest, first = store.refusals()
        assert (first["session_id"], first["patient_ref"], first["cartridge_id"]) == (
            sid, "P-0001", 7)
        assert (newest["session_id"], newest["room"], newest["operator"]) == (None, "4", "OP-1")
        assert [s.id for s in store.sessions()] == [sid]  # no session for the second
    conn = raw(records)
    for sql in ("UPDATE refusals SET reason = 'fine'", "DELETE FROM refusals"):
        with pytest.raises(REFUSED):
            conn.execute(sql)
    conn.close()
