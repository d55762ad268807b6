"""Where the records are: `--db` as given, else $DEVICECTL_DB, else the default SQLite
file. A postgresql:// URL stays a string (the clinic's server, store_pg.py); anything
else is a path (one chair's file). Nothing here opens them (store.Store does).
"""

from __future__ import annotations

import os
from pathlib import Path

from devicectl import store_pg

__all__ = ["db_arg", "default_db_path", "folder_problem", "given_db", "resolve_db"]


def default_db_path() -> Path:
    """$XDG_DATA_HOME/devicectl/sessions.db, else ~/.local/share/devicectl/sessions.db."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "devicectl" / "sessions.db"


def resolve_db(given: Path | str | None) -> Path | str:
    """Where the records are: --db as given, else $DEVICECTL_DB, else the default
    SQLite file. A postgresql:// URL stays a string; anything else is a path."""
    text = str(given) if given is not None else store_pg.db_from_env()
    if text is None:
        return default_db_path()
    if store_pg.is_pg_url(text):
        return text
    return Path(text)


def given_db(given: Path | str | None) -> bool:
    """Whether the records' place was typed (--db, $DEVICECTL_DB), not the default."""
    return given is not None or store_pg.db_from_env() is not None


def folder_problem(db_path: Path | str, *, given: bool, ask: str) -> str | None:
    """The sentence when a typed SQLite path's folder does not exist: a typo there would
    start new records elsewhere, unnoticed. The default place may be made. `ask`: how
    to ask for the folder to be made."""
    if isinstance(db_path, str) or not given or db_path.parent.is_dir():
        return None
    return (f"no folder {db_path.parent} for the records at {db_path}: check the path (a "
            f"typo would start new records elsewhere); {ask}")


def db_arg(text: str) -> Path | str:
    """argparse's type for --db: a postgresql:// URL as given, anything else a path."""
    return text if store_pg.is_pg_url(text) else Path(text)
