"""`devicectl monitor --db PATH`: the live page for a session another process runs.

It reads the session's records (read-only: every control answers 403) and
serves the same page as `devicectl run --web`, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from devicectl.commands import session_id, utf8_text, web_port
from devicectl.errors import StoreError
from devicectl.liveness import is_running
from devicectl.records_where import db_arg, default_db_path, resolve_db
from devicectl.store import Store


def register(sub: Any) -> None:
    p = sub.add_parser(
        "monitor",
        help="serve the live page of a session recorded in a database (read-only)",
        description="Watch a session that another devicectl process runs, through its records: "
        "the page shows its state, zones, events and faults. No controls.",
    )
    p.add_argument("--db", type=db_arg, default=None, metavar="PATH|URL",
                   help=f"records database (default $DEVICECTL_DB, else {default_db_path()}); "
                   "the clinic's postgresql://… server serves the clinic view: every live "
                   "session in the clinic, each linking to its page")
    p.add_argument("--session", type=session_id, default=None, metavar="ID",
                   help="the session to watch (default: the newest)")
    p.add_argument("--web-port", type=web_port, default=8766, help="the page's port (default 8766)")
    p.add_argument("--web-host", type=utf8_text, default="127.0.0.1",
                   help="the page's address (default 127.0.0.1: this computer only)")
    p.set_defaults(func=monitor)


def monitor(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    from devicectl.web.hub import EventFeed, Hub
    from devicectl.web.records_source import RecordsSource
    from devicectl.web.server import serve
    from devicectl.zones import load_zone_map

    where = resolve_db(args.db)
    if isinstance(where, str):
        return _clinic(args, where, stop)
    db_path: Path = where
    if not db_path.exists():
        raise StoreError(f"no records yet at {db_path}")
    with Store(db_path, create=False, read_only=True) as store:
        if args.session is not None:
            rec = store.session(args.session)
        else:
            newest = store.sessions(limit=1)
            if not newest:
                raise StoreError(f"no sessions recorded in {db_path} yet")
            rec = newest[0]
    header = {"session_id": rec.id, "patient_ref": rec.patient_ref,
              "profile": rec.profile_name, "controls": False, "mode": "records"}
    hub = Hub(RecordsSource(db_path, rec.id), load_zone_map(), header,
              events=EventFeed(db_path, rec.id))
    web = serve(hub, args.web_host, args.web_port, token=None, submit=None)
    if rec.outcome is None and is_running(db_path, rec.id):
        print(f"watching session {rec.id} in {db_path} (read-only): {web.url} · Ctrl-C to stop",
              flush=True)
    else:
        ended = rec.outcome or "interrupted"
        print(f"session {rec.id} in {db_path} has ended ({ended}): its record, read-only, at "
              f"{web.url} · Ctrl-C to stop", flush=True)
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        web.stop()
    return 0


def _clinic(args: argparse.Namespace, url: str, stop: threading.Event | None) -> int:
    """The clinic view (devicectl/web/clinic_page.py), until Ctrl-C."""
    from devicectl.clinic import zone_labels
    from devicectl.web.clinic_page import ClinicPage
    from devicectl.zones import load_zone_map

    with Store(url) as store:  # the server answers, or one sentence and exit 1
        if args.session is not None:
            store.session(args.session)
    labels = zone_labels(load_zone_map())
    page = ClinicPage(url, args.web_host, args.web_port, labels).start()
    where = f"{page.url}session/{args.session}" if args.session is not None else page.url
    print(f"the clinic's live sessions on {page.where} (read-only): {where} · Ctrl-C to stop",
          flush=True)
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        page.stop()
    return 0
