"""The one connection shape the records code speaks: SQLite's (`?` placeholders,
`execute` returning rows, `executemany`), met by sqlite3 itself and by `PgConn`,
a thin wrapper over a psycopg 3 connection (devicectl/store_pg.py).

The shared SQL (records.py, chain.py, store.py) is written once in the dialect
both servers accept; what differs (schema, locks) lives in store_pg.py.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final, Protocol

import psycopg
import psycopg.errors

#: What a database error is, on either backend.
DB_ERRORS: Final = (sqlite3.Error, psycopg.Error)
#: A write the records refused by their own rules (a constraint, an append-only
#: trigger, a missing grant): the database answered, and the same write would be
#: refused again. PostgreSQL's triggers raise P0001 (RaiseException) or, for a
#: used cartridge, unique_violation; SQLite's RAISE(ABORT) is an IntegrityError.
REFUSALS: Final = (sqlite3.IntegrityError, psycopg.errors.IntegrityError,
                   psycopg.errors.RaiseException, psycopg.errors.InsufficientPrivilege)
#: The connection, not the write, failed: the server went away or did not answer.
LOST: Final = (psycopg.OperationalError, psycopg.InterfaceError)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while exc is not None and seen < 16:
        yield exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def is_refusal(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is a write the records refused."""
    return any(isinstance(e, REFUSALS) for e in _chain(exc))


def is_lost(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is a lost or unreachable server."""
    return any(isinstance(e, LOST) for e in _chain(exc))


class Rows(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What records.py and chain.py need of a connection."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...
    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> Any: ...
    @property
    def in_transaction(self) -> bool: ...
    def close(self) -> None: ...


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def append_rows(conn: Conn, table: str, columns: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """Appends `rows` to `table` (no conflict expected): a COPY on PostgreSQL, one
    prepared INSERT run over the rows in sqlite3's C loop on SQLite."""
    if isinstance(conn, PgConn):
        conn.copy_rows(table, columns, rows)
        return
    marks = ", ".join("?" * len(columns))
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


class PgConn:
    """A psycopg 3 connection in autocommit mode, spoken to as sqlite3 is: the
    callers wrap their writes in BEGIN … COMMIT themselves."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        if not parameters:
            return self.raw.execute(sql.encode())  # no placeholders: taken as written
        return self.raw.execute(_pg_sql(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> None:
        if not parameters:
            return
        with self.raw.cursor() as cur:
            cur.executemany(_pg_sql(sql), [tuple(p) for p in parameters])

    def copy_rows(self, table: str, columns: Sequence[str],
                  rows: Sequence[Sequence[Any]]) -> None:
        """Appends `rows` in one COPY: one statement a batch, each row handed to
        psycopg's C copy writer, where `executemany` runs a statement a row with
        more Python work per row under the GIL (docs/performance.md, "Records on
        each backend"). Row triggers fire as for INSERT; a refused row raises."""
        if not rows:
            return
        with self.raw.cursor() as cur, cur.copy(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN".encode()) as copy:
            for row in rows:
                copy.write_row(row)

    @property
    def in_transaction(self) -> bool:
        status = self.raw.info.transaction_status
        return status not in (psycopg.pq.TransactionStatus.IDLE,
                              psycopg.pq.TransactionStatus.UNKNOWN)  # UNKNOWN: connection lost

    def close(self) -> None:
        self.raw.close()
