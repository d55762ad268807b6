"""A continuation (a lost link resumed: `devicectl run --resume N`) is the same
treatment and may record its predecessor's cartridge; which session continues
which is the records' own link, written when the continuation is created, not
an event anyone who may append events can write. On both backends (an SQLite
file, a real PostgreSQL server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg_support import raw_connect

from devicectl.commands.run_setup import continues_event
from devicectl.continuation import NOT_CONTINUABLE, SET_AT_CREATION, TREATED_NOT_REFUSED
from devicectl.dbconn import DB_ERRORS, Conn
from devicectl.errors import StoreError
from devicectl.records import APPLICATION_ID, MIGRATIONS
from devicectl.store import CartridgeUsedError, EventRecord, Store
from devicectl.store_pg import PG_MIGRATIONS


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


def _raw_session(conn: Conn, patient: str, continues: int | None = None) -> int:
    return int(conn.execute(
        "INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
        " started_at, continues) VALUES (?, 'x', 'h', 't', '2026-03-02T09:00:00+00:00', ?)"
        " RETURNING id", (patient, continues)).fetchone()[0])


def test_the_records_refuse_a_continuation_of_another_patient_or_of_no_lost_link(
    records: Path | str
) -> None:
    """devicectl/continuation.py: the database checks the link at creation (same
    patient, the predecessor ended link_lost, continued once) and never lets it
    change, whoever writes the row (raw writes, past the store)."""
    with Store(records) as store:
        lost = _session(store, "P-001")
        _fit(store, lost, 77)
        store.close_session(lost, "link_lost", "2026-03-02T09:10:00+00:00")
        done = _session(store, "P-001")
        store.close_session(done, "complete", "2026-03-02T09:10:00+00:00")
        still_open = _session(store, "P-001")
    conn = raw_connect(records)
    try:
        for patient, pred in (("P-002", lost), ("P-001", done), ("P-001", still_open),
                              ("P-001", 999)):
            with pytest.raises(DB_ERRORS, match=NOT_CONTINUABLE):
                _raw_session(conn, patient, pred)
        cont = _raw_session(conn, " p-001 ", lost)  # the patient as references match
        with pytest.raises(DB_ERRORS, match=r"continued_once|UNIQUE"):
            _raw_session(conn, "P-001", lost)  # a session is continued once
        stranger = _raw_session(conn, "P-002")
        for sid, to in ((stranger, lost), (cont, None), (cont, done)):
            with pytest.raises(DB_ERRORS, match=SET_AT_CREATION):
                conn.execute("UPDATE sessions SET continues = ? WHERE id = ?", (to, sid))
    finally:
        conn.close()
    with Store(records) as store:
        assert store.session(cont).continues == lost
        assert store.session(stranger).continues is None
        _fit(store, cont, 77)  # the continuation's own cartridge
        with pytest.raises(CartridgeUsedError, match="cartridge 77"):
            _fit(store, stranger, 77)


def _old_records(records: Path | str) -> None:
    """Records at the schema before the link (SQLite 7, the server's 5), as the last
    release left them: P-001's session lost its link and was continued (CONTINUES
    first); then a second patient's session, a second continuation of the same one,
    and a continuation of a session that did not lose its link, each with a
    CONTINUES event as first record."""
    if isinstance(records, Path):
        records.parent.mkdir(parents=True, exist_ok=True)
        steps, version = MIGRATIONS[:7], 7
    else:
        steps, version = PG_MIGRATIONS[:5], 5
    conn = raw_connect(records)
    try:
        for statements in steps:
            for sql in statements:
                conn.execute(sql)
        conn.execute("UPDATE schema_version SET version = ?", (version,))
        if isinstance(records, Path):
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")

        def session(patient: str, continues: int | None, cartridge: int | None,
                    outcome: str | None) -> None:
            sid = _raw_session_old(conn, patient)
            if continues is not None:
                conn.execute(
                    "INSERT INTO events (session_id, t_us, wall, kind, text, data, safety)"
                    " VALUES (?, 0, 'w', 'CONTINUES', 'continues', ?, 0)",
                    (sid, f'{{"session_id":{continues}}}'))
            if cartridge is not None:
                conn.execute("UPDATE sessions SET cartridge_id = ? WHERE id = ?",
                             (cartridge, sid))
            if outcome is not None:
                conn.execute("UPDATE sessions SET outcome = ?, ended_at = 'e' WHERE id = ?",
                             (outcome, sid))

        session("P-001", None, 77, "link_lost")  # 1
        session("P-001", 1, 77, None)  # 2: its continuation, the same cartridge
        session("P-002", 1, None, None)  # 3: another patient's, naming 1
        session("P-001", 1, None, None)  # 4: a second continuation of 1
        session("P-001", 2, None, None)  # 5: naming a session that did not lose its link
    finally:
        conn.close()


def _raw_session_old(conn: Conn, patient: str) -> int:
    return int(conn.execute(
        "INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
        " started_at) VALUES (?, 'x', 'h', 't', 'w') RETURNING id", (patient,)).fetchone()[0])


def test_old_continuations_get_their_link_from_their_continues_event_at_migration(
    records: Path | str
) -> None:
    """The migration (SQLite 7 -> 8, the server's 5 -> 6) links a continuation its
    CONTINUES event names where the records' rule allows it; the others get no link,
    and the cartridge follows the links only."""
    _old_records(records)
    with Store(records) as store:
        assert [s.continues for s in sorted(store.sessions(), key=lambda s: s.id)] == [
            None, 1, None, None, None]
        _fit(store, 2, 77)  # the continuation's own, again
        for sid in (3, 4, 5):
            with pytest.raises(CartridgeUsedError, match=r"cartridge 77 .*session 1"):
                _fit(store, sid, 77)
        with pytest.raises(StoreError, match="closed session is final"), \
                store.transaction("a raw write") as conn:  # closed rows stay final
            conn.execute("UPDATE sessions SET room = 'x' WHERE id = 1")


def test_a_rooms_login_cannot_link_a_session_to_another_patients(pg_url: str) -> None:
    """docs/security.md, "The records: a continuation is the records' link": a room's
    login (devicectl_writer: INSERT and UPDATE on sessions, INSERT on events) can
    neither create a session linked to another patient's nor link one later."""
    import contextlib

    import psycopg

    from devicectl.dbconn import PgConn
    from devicectl.store_pg import WRITER_ROLE

    with Store(pg_url) as store:
        lost = _session(store, "P-001")
        _fit(store, lost, 77)
        store.close_session(lost, "link_lost", "2026-03-02T09:10:00+00:00")
    with psycopg.connect(pg_url, autocommit=True) as admin, \
            contextlib.suppress(psycopg.errors.DuplicateObject):
        admin.execute(f"CREATE ROLE devicectl_room LOGIN IN ROLE {WRITER_ROLE}".encode())
    room = PgConn(psycopg.connect(pg_url.replace("postgres@", "devicectl_room@"),
                                  autocommit=True))
    try:
        with pytest.raises(psycopg.Error, match=NOT_CONTINUABLE):
            _raw_session(room, "P-002", lost)
        mine = _raw_session(room, "P-002")
        room.execute("INSERT INTO events (session_id, t_us, wall, kind, text, data, safety)"
                     " VALUES (?, 0, 'w', 'CONTINUES', 'continues', ?, 0)",
                     (mine, f'{{"session_id":{lost}}}'))
        with pytest.raises(psycopg.Error, match=SET_AT_CREATION):
            room.execute("UPDATE sessions SET continues = ? WHERE id = ?", (lost, mine))
        with pytest.raises(psycopg.Error, match="cartridge 77 was already used"):
            room.execute("UPDATE sessions SET cartridge_id = 77 WHERE id = ?", (mine,))
    finally:
        room.close()


def test_a_servers_copies_from_a_chair_get_their_link_where_continues_names_the_copy(
    pg_url: str
) -> None:
    """store_pg.py's 5 -> 6: a copy (migrated_from) whose CONTINUES names the server's
    copy (chair_session_id beside it, as records migrate writes since schema 4) gets
    its link; an older copy's CONTINUES names the chair's id and gets none, as the
    claim did not follow it before either."""
    conn = raw_connect(pg_url)
    try:
        for statements in PG_MIGRATIONS[:5]:
            for sql in statements:
                conn.execute(sql)
        conn.execute("UPDATE schema_version SET version = 5")
        for n, (data, outcome) in enumerate((
                (None, "link_lost"),  # 1: a copy that lost its link
                ('{"session_id":1,"chair_session_id":4}', "complete"),  # 2: its continuation
                (None, "link_lost"),  # 3
                ('{"session_id":3}', "complete"),  # 4: an old copy, naming the chair's 3
        ), start=1):
            sid = int(conn.execute(
                "INSERT INTO sessions (patient_ref, profile_name, profile_hash, profile_text,"
                " started_at, migrated_from) VALUES ('P-001', 'x', 'h', 't', 'w', ?)"
                " RETURNING id", (f"head-{n}",)).fetchone()[0])
            if data is not None:
                conn.execute(
                    "INSERT INTO events (session_id, t_us, wall, kind, text, data, safety)"
                    " VALUES (?, 0, 'w', 'CONTINUES', 'continues', ?, 0)", (sid, data))
            conn.execute("UPDATE sessions SET outcome = ?, ended_at = 'e' WHERE id = ?",
                         (outcome, sid))
    finally:
        conn.close()
    with Store(pg_url) as store:
        assert [store.session(i).continues for i in (1, 2, 3, 4)] == [None, 1, None, None]


def test_a_forged_continues_event_does_not_block_resuming_the_session_it_names(
    records: Path | str
) -> None:
    """run_setup.continued_in (`run --resume N` refuses a session already continued)
    read the CONTINUES events: another session of the patient's, with a CONTINUES
    naming N appended (not linked: created as a new session), stopped N from being
    resumed. It follows the records' link."""
    from devicectl.commands.run_setup import continued_in

    with Store(records) as store:
        lost = _session(store, "P-001")
        store.close_session(lost, "link_lost", "2026-03-02T09:10:00+00:00")
        forged = _session(store, "P-001")
        store.append_events(forged, [continues_event(lost, store.session(lost))])
        assert continued_in(store, store.session(lost)) is None
        store.close_session(forged, "aborted", "2026-03-02T09:15:00+00:00")
        cont = store.create_session(
            patient_ref="P-001", profile_name="x", profile_hash="h", profile_text="t",
            started_at="2026-03-02T09:20:00+00:00", continues=lost)
        assert continued_in(store, store.session(lost)) == cont


def test_a_refused_continuation_does_not_end_the_treatment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md ("fix the cause, `run --resume N` again"): a continuation
    that ended `refused` (the clinic's gate: consent not given; the pen's go/no-go:
    a used cartridge) sent no START, yet it held N's one continuation slot
    (continuation.py: the unique index sessions_continued_once; run_setup.py:173
    continued_in), so N could never be resumed, and the coverage it carried (N's
    strokes, at its own time) would have dated N's treatment later (store.py:380,
    :432, the interval rule). Resumed again, the treatment goes on with N's
    cartridge and coverage, and the continuation that treated holds the slot."""
    from clinic_support import ALL_NO, GATE

    from devicectl.cli import main

    deep = Path(__file__).parent / "data" / "short-two-zones.yaml"
    db = tmp_path / "r.db"
    sim = ("--sim", "--yes", "--speed", "0", "--db", str(db))
    assert main(["run", "--profile", str(deep), "--patient", "P-002", "--seed", "11",
                 *sim, *GATE]) == 0  # another patient's: cartridge of seed 11 used
    assert main(["run", "--profile", str(deep), "--patient", "P-001", "--seed", "5",
                 "--scenario", "disconnect", *sim, *GATE]) == 4
    with Store(db) as store:
        lost = store.sessions()[0]
    assert lost.outcome == "link_lost"
    no_consent = ("--operator", "OP-TEST", "--checklist", str(ALL_NO), "--ack-adjuncts")
    capsys.readouterr()
    assert main(["run", "--resume", str(lost.id), "--seed", "5", *sim, *no_consent]) == 1
    assert "NO-GO: the patient's informed consent was not given" in capsys.readouterr().out
    assert main(["run", "--resume", str(lost.id), "--seed", "11", *sim, *GATE]) == 1
    assert "used in an earlier session" in capsys.readouterr().out  # the pen's go/no-go
    code = main(["run", "--resume", str(lost.id), "--seed", "5", *sim, *GATE])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    with Store(db) as store:
        gate_refused, pen_refused, cont = sorted(
            (s for s in store.sessions() if s.continues == lost.id), key=lambda s: s.id)
        assert (gate_refused.outcome, pen_refused.outcome) == ("refused", "refused")
        assert cont.outcome == "complete" and all(z.done for z in cont.zones)
        assert cont.cartridge_id == lost.cartridge_id  # the treatment's own cartridge
        before = {z.name: z.strokes for z in lost.zones}
        assert all(z.strokes >= before[z.name] for z in cont.zones)  # its coverage came along
        for refused in (gate_refused, pen_refused):  # their links stay, for people
            assert store.events(refused.id)[0].kind == "CONTINUES"
    # The continuation that treated holds the slot.
    assert main(["run", "--resume", str(lost.id), "--seed", "5", *sim, *GATE]) == 1
    assert f"already continued in session {cont.id}" in capsys.readouterr().err


def test_only_a_continuation_refused_before_any_start_frees_the_slot(
    records: Path | str
) -> None:
    """devicectl/continuation.py (8 -> 9, the server's 6 -> 7), whoever writes the
    rows: two continuations of one session cannot both be open (two rooms racing);
    one closed refused frees the slot; one that sent START cannot close refused and,
    closed otherwise, holds the slot. A refused continuation's coverage (carried)
    does not date the patient's treatment."""
    with Store(records) as store:
        lost = _session(store, "P-001")
        store.close_session(lost, "link_lost", "2026-03-02T09:10:00+00:00")
    conn = raw_connect(records)
    try:
        refused = _raw_session(conn, "P-001", lost)
        with pytest.raises(DB_ERRORS, match=r"continued_once|UNIQUE"):
            _raw_session(conn, "P-001", lost)  # the other room, while the first is open
        conn.execute("INSERT INTO zone_coverage (session_id, zone_id, name, depth_um,"
                     " rate_dhz, fraction, target_fraction, strokes, cells_at_max, done,"
                     " seconds) VALUES (?, 3, 'vertex', 1500, 1200, 0.1, 1.0, 59, 0, 0, 1.0)",
                     (refused,))  # the coverage it carried from `lost`
        conn.execute("UPDATE sessions SET outcome = 'refused',"
                     " ended_at = '2026-03-02T09:20:00+00:00' WHERE id = ?", (refused,))
        treated = _raw_session(conn, "P-001", lost)
        conn.execute("INSERT INTO events (session_id, t_us, wall, kind, text, data, safety)"
                     " VALUES (?, 0, 'w', 'SENT', 'START', '{\"type\":\"START\"}', 0)",
                     (treated,))
        with pytest.raises(DB_ERRORS, match=TREATED_NOT_REFUSED):
            conn.execute("UPDATE sessions SET outcome = 'refused', ended_at = 'e'"
                         " WHERE id = ?", (treated,))
        conn.execute("UPDATE sessions SET outcome = 'aborted', ended_at = 'e' WHERE id = ?",
                     (treated,))
        with pytest.raises(DB_ERRORS, match=r"continued_once|UNIQUE"):
            _raw_session(conn, "P-001", lost)  # the one that treated holds it
    finally:
        conn.close()
    with Store(records) as store:
        assert store.session(refused).continues == lost  # its link stays
        assert store.days_since_deep_treatment("P-001", "2026-03-03T09:00:00+00:00", 0) == {}


def test_a_continuation_that_lost_its_link_too_is_resumed_and_completed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/clinic.md ("the sessions continuing that one after a lost link": the
    same treatment): a continuation B of N that lost its link too is resumed in C,
    but C's interval facts left out B only (run_setup.py:151 `own`, store.py:390 and
    :436 `s.id != ?`), so N's strokes, the same treatment's, were an interval NO-GO
    ("treated 0.0 days ago") and a second lost link ended the treatment."""
    from clinic_support import GATE

    from devicectl.cli import main

    deep = Path(__file__).parent / "data" / "short-two-zones.yaml"
    db = tmp_path / "r.db"
    sim = ("--sim", "--yes", "--speed", "0", "--seed", "5", "--db", str(db), *GATE)
    assert main(["run", "--profile", str(deep), "--patient", "P-001",
                 "--scenario", "disconnect", *sim]) == 4
    assert main(["run", "--resume", "1", "--scenario", "disconnect", *sim]) == 4
    with Store(db) as store:
        assert store.session(2).continues == 1 and store.session(2).outcome == "link_lost"
    capsys.readouterr()
    code = main(["run", "--resume", "2", *sim])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    with Store(db) as store:
        done = store.session(3)
        assert done.continues == 2 and done.outcome == "complete"
        assert all(z.done for z in done.zones)
        assert done.cartridge_id == store.session(1).cartridge_id  # the treatment's own


def interrupted_that_treated(db: Path, continuation: bool) -> int:
    """An interrupted session (or continuation) of P-001 that sent START, then the
    crash; and, before it, another patient's session that used the cartridge of seed 11
    (a real `run --sim`). The interrupted one's id."""
    from clinic_support import GATE

    from devicectl.cli import main
    from devicectl.profile import load_profile

    deep = Path(__file__).parent / "data" / "short-two-zones.yaml"
    loaded = load_profile(deep)
    assert main(["run", "--profile", str(deep), "--patient", "P-002", "--seed", "11", "--sim",
                 "--yes", "--speed", "0", "--db", str(db), *GATE]) == 0
    with Store(db) as store:
        def session(continues: int | None = None) -> int:
            return store.create_session(
                patient_ref="P-001", profile_name=loaded.profile.name,
                profile_hash=loaded.content_hash, profile_text=loaded.text,
                started_at="2026-03-02T09:00:00+00:00", simulated=True, continues=continues)
        sid = session()
        if continuation:
            store.close_session(sid, "link_lost", "2026-03-02T09:10:00+00:00")
            sid = session(continues=sid)
        store.append_events(sid, [EventRecord(1, "2026-03-02T09:11:00+00:00", "SENT", "START",
                                              None, {"type": "START"})])  # then the crash
    return sid


@pytest.mark.parametrize("refusal", ["gate", "pen"])
@pytest.mark.parametrize("continuation", [False, True], ids=["session", "continuation"])
def test_an_interrupted_session_refused_when_resumed_stays_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], continuation: bool, refusal: str
) -> None:
    """README.md:114 (`--resume` continues an interrupted session in its own record)
    and docs/clinic.md (a refused resume does not end the treatment): resumed in place
    and refused (the clinic's gate: consent not given; the pen's go/no-go: a used
    cartridge), an interrupted session that treated was closed `refused`
    (commands/run_cmd.py:229, penloop.py:211), so its strokes were recorded under a
    NO-GO and it could never be resumed ("only an interrupted session ... can be
    resumed"); a continuation's close is refused by the records (continuation.py)."""
    from clinic_support import ALL_NO, GATE

    from devicectl.cli import main

    db = tmp_path / "r.db"
    sim = ("--sim", "--yes", "--speed", "0", "--db", str(db))
    sid = interrupted_that_treated(db, continuation)
    capsys.readouterr()
    if refusal == "gate":
        no_consent = ("--operator", "OP-TEST", "--checklist", str(ALL_NO), "--ack-adjuncts")
        assert main(["run", "--resume", str(sid), "--seed", "5", *sim, *no_consent]) == 1
        said = "NO-GO: the patient's informed consent was not given"
    else:
        assert main(["run", "--resume", str(sid), "--seed", "11", *sim, *GATE]) == 1
        said = "used in an earlier session"
    out, err = capsys.readouterr()
    assert said in out, err
    assert "Traceback" not in out + err
    with Store(db) as store:
        assert store.session(sid).outcome is None  # interrupted, as before
    assert main(["run", "--resume", str(sid), "--seed", "5", *sim, *GATE]) == 0
    with Store(db) as store:
        assert store.session(sid).outcome == "complete"


def test_a_continuation_interrupted_before_its_coverage_was_saved_restores_the_treatments(
    tmp_path: Path
) -> None:
    """docs/clinic.md (a continuation carries N's coverage): a continuation C that
    crashed before its first coverage write, resumed in its own record, restored
    C's coverage only (commands/run_cmd.py:232 coverage_state(resumed.id): none),
    while the interval rules leave out the sessions it continues (store.py,
    CONTINUED_CHAIN): N's strokes were counted nowhere, so the dose bound over the
    treatment did not hold them. C restores the coverage of the latest session of
    its chain that saved one."""
    from clinic_support import GATE

    from devicectl.cli import main
    from devicectl.profile import load_profile

    deep = Path(__file__).parent / "data" / "short-two-zones.yaml"
    loaded = load_profile(deep)
    db = tmp_path / "r.db"
    sim = ("--sim", "--yes", "--speed", "0", "--db", str(db), "--scenario", "disconnect", *GATE)
    assert main(["run", "--profile", str(deep), "--patient", "P-001", "--seed", "5",
                 *sim]) == 4
    with Store(db) as store:
        lost = store.session(1)
        cont = store.create_session(
            patient_ref="P-001", profile_name=loaded.profile.name,
            profile_hash=loaded.content_hash, profile_text=loaded.text,
            started_at="2026-03-02T09:00:00+00:00", simulated=True, continues=lost.id)
        store.append_events(cont, [continues_event(lost.id, lost)])  # then the crash
        assert store.coverage_state(cont) is None
    assert main(["run", "--resume", str(cont), "--seed", "6", *sim]) == 4  # a new cartridge
    with Store(db) as store:
        before = next(z.strokes for z in lost.zones if z.name == "vertex")
        after = next(z.strokes for z in store.session(cont).zones if z.name == "vertex")
    assert before >= 50 and after >= before + 50  # N's strokes and C's own (~60 each)
