"""What `devicectl run` checks before any record is made: the interval override
names its reason and clinician, and the records file is the right one (simulator
runs and clinical sessions apart; no new, history-less records by accident).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from devicectl.errors import RefusedError
from devicectl.records_where import folder_problem, given_db
from devicectl.safety_gonogo import interval_override_problem
from devicectl.store import Store


def check_override(args: argparse.Namespace) -> None:
    """An interval override names its reason and its clinician, or nothing starts."""
    if args.override_interval is not None:
        problem = interval_override_problem(args.override_interval, args.clinician)
        if problem is not None:
            raise RefusedError(problem)
    elif args.clinician is not None:
        raise RefusedError(
            "--clinician names who decided an interval override; pass it with "
            "--override-interval REASON"
        )


def check_records(db_path: Path | str, args: argparse.Namespace) -> None:
    """A clinical run needs the clinic's records: a new file has no history at all
    (a server's records are the clinic's: it is asked when connected). Any run: a
    typed --db in a folder that does not exist is a typo until --new-records says not."""
    if isinstance(db_path, str):
        return
    asked = getattr(args, "new_records", False)
    problem = folder_problem(db_path, given=given_db(args.db),
                             ask="--new-records starts them there")
    if problem is not None and not asked:
        raise RefusedError(problem)
    if not args.sim and not getattr(args, "new_records", False) and not db_path.exists():
        raise RefusedError(
            f"no records at {db_path}: a clinical session checks the patient's intervals and "
            "the cartridges against them; pass the clinic's --db, or --new-records to start "
            "new records there"
        )


def check_records_kind(store: Store, db_path: Path | str, sim: bool) -> None:
    """Simulator runs and clinical sessions never share a database."""
    if store.holds_sessions(simulated=not sim):
        held, this = ("clinical sessions", "a simulator run") if sim else (
            "simulator runs", "a clinical session")
        raise RefusedError(f"{store.path} holds {held}; {this} needs its own --db")
