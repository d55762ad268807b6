"""`devicectl records replay FILE`: put back the records a session could not write.
`devicectl records migrate --from sqlite:PATH --to postgresql://…`: a chair's
history onto the clinic's server (devicectl/migrate.py).

When the records database could not be written during a session, the records
went to `<db>.unsaved.jsonl` beside it (devicectl/unsaved.py). Once the database
is writable again, replay puts them in; replaying again adds nothing twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from devicectl.errors import DevicectlError
from devicectl.records_where import db_arg, folder_problem
from devicectl.store_pg import redact
from devicectl.unsaved import PG_PREFIX, SUFFIX, db_path_of, replay


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "records",
        help="repair the session records (replay what could not be written)",
        description="Tools for the records database itself.",
    )
    sub = parser.add_subparsers(dest="records_command", required=True, metavar="ACTION")
    replay_p = sub.add_parser(
        "replay",
        help=f"put the records of a *{SUFFIX} file back into the database",
        description=f"Put the records a session could not write (FILE, a *{SUFFIX} file "
        "beside the database) back into the database. Idempotent: records already there "
        "are not added again. The file is kept; delete it once the records are back.",
    )
    replay_p.add_argument("file", type=Path, metavar="FILE", help=f"the *{SUFFIX} file")
    replay_p.add_argument(
        "--db", type=db_arg, default=None, metavar="PATH|URL",
        help=f"records database or the clinic's postgresql:// URL (default: FILE without "
        f"{SUFFIX}; a server's file needs its URL)",
    )
    replay_p.set_defaults(func=replay_records)
    migrate_p = sub.add_parser(
        "migrate",
        help="copy a chair's closed sessions to the clinic's PostgreSQL server",
        description="Copy every closed session of a chair's SQLite records to the clinic's "
        "PostgreSQL server, checking each session's hash chain at the chair and again on "
        "the server. Idempotent: a session already copied is not copied again. Interrupted "
        "sessions stay at the chair until they are resumed or closed there.",
    )
    migrate_p.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH",
                           help="the chair's records file")
    migrate_p.add_argument("--to", dest="target", required=True, metavar="postgresql://…",
                           help="the clinic's records server")
    migrate_p.set_defaults(func=migrate_records)


def replay_records(args: argparse.Namespace) -> int:
    file: Path = args.file
    db: Path | str | None = args.db if args.db is not None else db_path_of(file)
    if db is None and file.name.startswith(PG_PREFIX):
        raise DevicectlError(f"{file} holds records of a PostgreSQL server: say which with "
                             "--db postgresql://…")
    if db is None:
        raise DevicectlError(
            f"{file} does not end in {SUFFIX}: say which database it belongs to with --db PATH"
        )
    problem = folder_problem(db, given=args.db is not None,
                             ask="create the folder first if they belong there")
    if problem is not None:
        raise DevicectlError(problem)
    for sentence in replay(file, db):
        print(f"{sentence} (into {redact(db) if isinstance(db, str) else db})")
    return 0


def migrate_records(args: argparse.Namespace) -> int:
    from devicectl.migrate import migrate, parse_source
    from devicectl.store_pg import is_pg_url, redact

    if not is_pg_url(args.target):
        raise DevicectlError(f"--to {args.target!r} is not a postgresql:// URL")
    source = parse_source(args.source)
    copied = kept = left = 0
    for moved in migrate(source, args.target):
        there = f" -> {moved.target_id}" if moved.target_id is not None else ""
        print(f"session {moved.source_id}{there}: {moved.verdict}")
        if moved.verdict == "copied":
            copied += 1
        elif moved.verdict == "already there":
            kept += 1
        else:
            left += 1
    print(f"{copied} copied, {kept} already on {redact(args.target)}, {left} not moved")
    return 0
