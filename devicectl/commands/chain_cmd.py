"""`devicectl sessions verify [ID]`: recompute the records' hash chains
(devicectl/chain.py) and name the first row that breaks one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from devicectl.chain import ChainCheck, verify_all, verify_session
from devicectl.commands import session_id
from devicectl.errors import StoreError
from devicectl.note_anchor import AnchorCheck, verify_anchors
from devicectl.plain import plain
from devicectl.records_where import resolve_db
from devicectl.store import Store

Parser = argparse.ArgumentParser


def add_verify(sub: Any, with_db: Callable[[Parser], Parser]) -> None:
    p = with_db(sub.add_parser(
        "verify",
        help="check the records' hash chains: exit 0 when they hold, 1 naming the first bad row",
        description="Recompute each session's hash chain from its rows (events, then the "
        "session's closure: outcome, end, pen, zones, coverage; its notes), and the chain "
        "of notes through the whole records. Exit 0 when every chain holds; 1 otherwise, "
        "naming the first row that breaks each.",
    ))
    p.add_argument("id", type=session_id, nargs="?", metavar="ID",
                   help="one session (default: every session)")
    p.set_defaults(func=verify)


def verify(args: argparse.Namespace) -> int:
    path = resolve_db(args.db)
    if isinstance(path, Path) and not path.exists():
        raise StoreError(f"no records at {path}")
    store = Store(path, create=False, read_only=True)
    conn = store.conn
    try:
        if args.id is not None:
            if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (args.id,)).fetchone() is None:
                raise StoreError(f"no session {args.id} in {store.path}; `devicectl sessions list` "
                                 "shows them")
            checks = [verify_session(conn, args.id)]
        else:
            checks = verify_all(conn)
        notes = verify_anchors(conn)
    finally:
        store.close()
    console = Console()
    for check in checks:
        console.print(_line(check), soft_wrap=True)
    console.print(_notes_line(notes), soft_wrap=True)
    bad = [c for c in checks if c.problem is not None]
    if bad:
        console.print(Text(f"{len(bad)} of {len(checks)} sessions fail the check",
                           style="bold red"))
        return 1
    if notes.problem is not None:
        console.print(Text("the chain of notes fails the check", style="bold red"))
        return 1
    console.print(Text(f"{len(checks)} sessions checked: the chains hold", style="bold green"))
    return 0


def _line(check: ChainCheck) -> Text:
    if check.problem is not None:
        return plain(f"BROKEN {check.problem}", "bold red")
    if check.unchained:
        return Text(f"session {check.session_id}: recorded before the records kept a hash "
                    "chain; not checked")
    state = "closed" if check.closed else "open (interrupted or running)"
    return Text(f"ok session {check.session_id}: {check.events} events, {state}, "
                f"head {check.head}")


def _notes_line(check: AnchorCheck) -> Text:
    if check.problem is not None:
        return plain(f"BROKEN {check.problem}", "bold red")
    old = ""
    if check.unanchored:
        many = "notes" if check.unanchored != 1 else "note"
        old = (f"{check.unanchored} {many} written before the records anchored them (not "
               "anchored: the last notes of their session, removed, are not caught); ")
    if not check.anchored:
        return Text(f"notes: {old}none anchored")
    return Text(f"ok notes: {old}{check.anchored} anchored, head {check.head}")
