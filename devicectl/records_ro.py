"""The records read where they cannot be written (a read-only file or folder), for
the commands that only read: `sessions list`, `show`, `verify`, `report`, `patients`,
`monitor` of a recorded session (and its page), `records migrate`'s source.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from devicectl.errors import StoreError


def open_read_only(path: Path, app_id: int, schema_version: int) -> sqlite3.Connection:
    """The records as they are, never written (`app_id` and `schema_version`: what a
    current devicectl database holds). WAL needs its -shm file beside the database:
    where the folder cannot be written and no writer has made one (no -wal either:
    no one is writing), the file is read as immutable."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    conn: sqlite3.Connection | None = None
    try:
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            found = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.OperationalError:
            if conn is not None:
                conn.close()
            if Path(f"{path}-wal").exists():
                raise
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
            found = conn.execute("PRAGMA application_id").fetchone()[0]
        if found != app_id:
            raise StoreError(f"{path} is not a devicectl records database; pass another --db")
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
        if version != schema_version:
            raise StoreError(
                f"{path} cannot be written and its records are at schema {version}, this "
                f"devicectl's is {schema_version}: open it once where it can be written")
    except (sqlite3.Error, StoreError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot read the records file {path} ({exc})") from exc
    return conn
