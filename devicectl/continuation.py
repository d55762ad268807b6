"""Which session continues which (a lost link resumed, `run --resume`): the
records' own link, `sessions.continues`, written with the continuation's row
and checked by the database on both backends, so the cartridge rule
(claim.CONTINUED_CHAIN) never follows an event that whoever may append events
can write. The CONTINUES event stays, for people to read.

A continuation names a session of its own patient that ended `link_lost`, and
no other session continues that one, but for continuations that ended
`refused`: the records prove those sent no START (a continuation that sent one
cannot close `refused`), so they treated nothing and the session may be resumed
again; their link stays. The link is set when the row is created, never after.
Records from before the link get it at migration from their first event,
CONTINUES, where it passes those same checks (the earliest continuation of a
session keeps it); one that does not gets none, and its cartridge is then no one
else's.
"""

from __future__ import annotations

from typing import Final

from devicectl.dbconn import Conn

#: What the database says to a continuation it refuses, and to a link changed later.
NOT_CONTINUABLE: Final = ("a session continues only a session of its own patient that "
                          "lost its link")
SET_AT_CREATION: Final = "a continuation is set when its session is created"
#: What the database says to a continuation that sent START and is closed `refused`.
TREATED_NOT_REFUSED: Final = "a continuation that sent START did not end refused"

_FINAL = "a closed session is final"
_SAME_PATIENT = "upper(trim(p.patient_ref)) = upper(trim({new}.patient_ref))"

# records.py's 7 -> 8 (SQLite). The backfill writes closed rows: the trigger that
# keeps them final is lifted for it, in the migration's transaction, and put back.
SQLITE_MIGRATION: Final[tuple[str, ...]] = (
    "ALTER TABLE sessions ADD COLUMN continues INTEGER REFERENCES sessions(id)",
    "DROP TRIGGER sessions_final",
    f"""UPDATE sessions SET continues = (
        SELECT p.id FROM events e JOIN sessions p
            ON p.id = CAST(json_extract(e.data, '$.session_id') AS INTEGER)
        WHERE e.id = (SELECT min(f.id) FROM events f WHERE f.session_id = sessions.id)
            AND e.kind = 'CONTINUES' AND p.id < sessions.id AND p.outcome = 'link_lost'
            AND {_SAME_PATIENT.format(new='sessions')})""",
    """UPDATE sessions SET continues = NULL WHERE continues IS NOT NULL AND EXISTS (
        SELECT 1 FROM sessions o WHERE o.continues = sessions.continues AND o.id < sessions.id)""",
    f"""CREATE TRIGGER sessions_final BEFORE UPDATE ON sessions
        WHEN OLD.outcome IS NOT NULL BEGIN SELECT RAISE(ABORT, '{_FINAL}'); END""",
    "CREATE UNIQUE INDEX sessions_continued_once ON sessions (continues)",
    f"""CREATE TRIGGER sessions_continues_checked BEFORE INSERT ON sessions
        WHEN NEW.continues IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM sessions p WHERE p.id = NEW.continues AND p.outcome = 'link_lost'
            AND {_SAME_PATIENT.format(new='NEW')})
        BEGIN SELECT RAISE(ABORT, '{NOT_CONTINUABLE}'); END""",
    f"""CREATE TRIGGER sessions_continues_fixed BEFORE UPDATE OF continues ON sessions
        WHEN NEW.continues IS NOT OLD.continues
        BEGIN SELECT RAISE(ABORT, '{SET_AT_CREATION}'); END""",
)

_PG_ID = "(e.data::jsonb ->> 'session_id')"

# store_pg.py's 5 -> 6 (PostgreSQL). A copy from a chair (migrated_from) gets its
# link where its CONTINUES names the server's copy (chair_session_id beside it, as
# the claim followed it until now); a copy made before names the chair's id.
PG_MIGRATION: Final[tuple[str, ...]] = (
    "ALTER TABLE sessions ADD COLUMN continues BIGINT REFERENCES sessions(id)",
    "ALTER TABLE sessions DISABLE TRIGGER sessions_final",
    f"""UPDATE sessions s SET continues = p.id FROM events e, sessions p
        WHERE e.session_id = s.id
            AND e.id = (SELECT min(f.id) FROM events f WHERE f.session_id = s.id)
            AND e.kind = 'CONTINUES'
            AND p.id = CASE WHEN {_PG_ID} ~ '^[0-9]{{1,18}}$' THEN {_PG_ID}::bigint END
            AND (s.migrated_from IS NULL
                 OR (e.data::jsonb ->> 'chair_session_id') IS NOT NULL)
            AND p.id < s.id AND p.outcome = 'link_lost' AND {_SAME_PATIENT.format(new='s')}""",
    """UPDATE sessions s SET continues = NULL WHERE continues IS NOT NULL AND EXISTS (
        SELECT 1 FROM sessions o WHERE o.continues = s.continues AND o.id < s.id)""",
    "ALTER TABLE sessions ENABLE TRIGGER sessions_final",
    "CREATE UNIQUE INDEX sessions_continued_once ON sessions (continues)",
    f"""CREATE FUNCTION devicectl_continuation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                IF NEW.continues IS DISTINCT FROM OLD.continues THEN
                    RAISE EXCEPTION '{SET_AT_CREATION}';
                END IF;
            ELSIF NEW.continues IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM sessions p WHERE p.id = NEW.continues
                AND p.outcome = 'link_lost' AND {_SAME_PATIENT.format(new='NEW')}) THEN
                RAISE EXCEPTION '{NOT_CONTINUABLE}';
            END IF;
            RETURN NEW;
        END $$""",
    """CREATE TRIGGER sessions_continuation BEFORE INSERT OR UPDATE OF continues ON sessions
        FOR EACH ROW EXECUTE FUNCTION devicectl_continuation()""",
    # The claim follows the link, no longer the events.
    """CREATE OR REPLACE FUNCTION devicectl_claim_cartridge() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE holder BIGINT;
        BEGIN
            IF NEW.cartridge_id IS NULL OR NEW.cartridge_id = 0 THEN RETURN NULL; END IF;
            -- the first to insert the claim holds it; a room that races waits here
            INSERT INTO cartridge_claims (cartridge_id, session_id)
                VALUES (NEW.cartridge_id, NEW.id) ON CONFLICT (cartridge_id) DO NOTHING;
            SELECT session_id INTO holder FROM cartridge_claims
                WHERE cartridge_id = NEW.cartridge_id;
            -- the sessions this one continues (link lost), as the records link them
            IF holder = NEW.id OR holder IN (
                WITH RECURSIVE chain(id, n) AS (
                    SELECT NEW.id, 0
                    UNION ALL
                    SELECT s.continues, c.n + 1
                    FROM sessions s JOIN chain c ON s.id = c.id
                    WHERE s.continues IS NOT NULL AND c.n < 1000)
                SELECT id FROM chain) THEN
                RETURN NULL;
            END IF;
            RAISE EXCEPTION 'cartridge % was already used in session %; it is single use',
                NEW.cartridge_id, holder
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'cartridge_claims_pkey';
        END $$""",
)

#: Sessions `s` whose coverage may hold strokes of their own, for the interval rules:
#: not a continuation that ended refused (it sent no START; its coverage is only what
#: it carried from the session it continues, which counts there, at its own time).
TREATED_ITSELF: Final = "(s.outcome IS NULL OR s.outcome <> 'refused' OR s.continues IS NULL)"

#: The sessions that hold their predecessor's one continuation: all but those that
#: ended `refused` (which sent no START, TREATED_NOT_REFUSED), in both backends' SQL.
_HOLDS_SLOT = "WHERE outcome IS NULL OR outcome <> 'refused'"
_STARTED = ("SELECT 1 FROM events e WHERE e.session_id = NEW.id AND e.kind = 'SENT'"
            " AND CASE WHEN e.kind = 'SENT' THEN {type} END IN ('START', 'RESUME')")

# records.py's 8 -> 9 (SQLite): a refused continuation frees the slot.
SQLITE_REFUSED_MIGRATION: Final[tuple[str, ...]] = (
    "DROP INDEX sessions_continued_once",
    f"CREATE UNIQUE INDEX sessions_continued_once ON sessions (continues) {_HOLDS_SLOT}",
    f"""CREATE TRIGGER sessions_refused_untreated BEFORE UPDATE OF outcome ON sessions
        WHEN NEW.outcome = 'refused' AND NEW.continues IS NOT NULL AND EXISTS (
            {_STARTED.format(type="json_extract(e.data, '$.type')")})
        BEGIN SELECT RAISE(ABORT, '{TREATED_NOT_REFUSED}'); END""",
)

# store_pg.py's 6 -> 7 (PostgreSQL), the same.
PG_REFUSED_MIGRATION: Final[tuple[str, ...]] = (
    "DROP INDEX sessions_continued_once",
    f"CREATE UNIQUE INDEX sessions_continued_once ON sessions (continues) {_HOLDS_SLOT}",
    f"""CREATE FUNCTION devicectl_refused_untreated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.outcome = 'refused' AND NEW.continues IS NOT NULL AND EXISTS (
                {_STARTED.format(type="e.data::jsonb ->> 'type'")})
            THEN
                RAISE EXCEPTION '{TREATED_NOT_REFUSED}';
            END IF;
            RETURN NEW;
        END $$""",
    """CREATE TRIGGER sessions_refused_untreated BEFORE UPDATE OF outcome ON sessions
        FOR EACH ROW EXECUTE FUNCTION devicectl_refused_untreated()""",
)


def continued_by(conn: Conn, session_id: int) -> int | None:
    """The session that continues this one (its one continuation that did not end
    `refused`, _HOLDS_SLOT): the treatment's totals are that session's, not this one's."""
    row = conn.execute(
        "SELECT id FROM sessions WHERE continues = ? AND (outcome IS NULL OR outcome <> "
        "'refused') ORDER BY id LIMIT 1", (session_id,)).fetchone()
    return None if row is None else int(row[0])


def continued_by_text(session_id: int) -> str:
    """What a continued session's header says of its continuation."""
    return (f"session {session_id}: the treatment's totals are session {session_id}'s "
            "(its strokes, punctures and time include this session's)")
