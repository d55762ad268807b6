"""`devicectl records replay FILE`: put back the records a session could not write.

When the records database could not be written during a session, the records
went to `<db>.unsaved.jsonl` beside it (devicectl/unsaved.py). Once the database
is writable again, replay puts them in; replaying again adds nothing twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from devicectl.errors import DevicectlError
from devicectl.unsaved import SUFFIX, db_path_of, replay


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
        "--db", type=Path, default=None, metavar="PATH",
        help=f"records database (default: FILE without {SUFFIX})",
    )
    replay_p.set_defaults(func=replay_records)


def replay_records(args: argparse.Namespace) -> int:
    file: Path = args.file
    db: Path | None = args.db if args.db is not None else db_path_of(file)
    if db is None:
        raise DevicectlError(
            f"{file} does not end in {SUFFIX}: say which database it belongs to with --db PATH"
        )
    for sentence in replay(file, db):
        print(f"{sentence} (into {db})")
    return 0
