"""`devicectl run` and `devicectl demo`: a treatment session from profile to summary.

This is where a session is put together: the profile and its plan recipe, the
facts from the records, and the pen process (devicectl/penproc.py), which opens
the link (a port, or the simulator in virtual time) and alone runs the
controller and the records' writer. This process shows its snapshots (the
terminal view, the live page, the plain lines) and sends the technician's
commands through its one door.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from devicectl.adjuncts import adjunct_instructions
from devicectl.claim import CLAIM_TIMEOUT_S
from devicectl.commands import session_id, sim_speed, utf8_text, web_port
from devicectl.commands.checklist_cmd import (
    acknowledge_adjuncts,
    eligibility_gate,
    read_gate_inputs,
    staff_id,
)
from devicectl.commands.profile_cmd import plan_table
from devicectl.commands.run_checks import check_override, check_records, check_records_kind
from devicectl.commands.run_output import (
    Feed,
    always,
    json_line,
    output_args,
    records_banner,
    start_web_page,
)
from devicectl.commands.run_pen import link_settings, session_keys, set_cores, share_cores
from devicectl.commands.run_setup import (
    Setup,
    coverage_to_restore,
    first_unfinished_zone,
    load_session,
    now_iso,
    setup_session,
    start_facts,
)
from devicectl.commands.run_signals import Interrupts, ask
from devicectl.controller_core import COVERAGE_CELL_MM
from devicectl.errors import DevicectlError, RefusedError
from devicectl.liveness import running_lock
from devicectl.monitor.progress import Pace
from devicectl.monitor.terminal import zone_time
from devicectl.monitor.viewproc import ViewOptions, ViewProcess
from devicectl.patients import patient_ref
from devicectl.penproc import MapRaster, PenProcess, SessionSettings
from devicectl.plain import plain
from devicectl.profile import DEFAULT_TOPICAL_WAIT_HOURS
from devicectl.profile_plan import plan_recipe
from devicectl.records_where import db_arg, default_db_path, resolve_db
from devicectl.safety import OVERRIDE_REASON_MIN_CHARS
from devicectl.snapshot import Outcome, Watched
from devicectl.store import Store
from devicectl.store_pg import redact
from devicectl.transitions import Command, State
from devicectl.unsaved import not_yet_replayed
from devicectl.zones import ZoneMap, default_zone_map

#: The live view's refresh rate.
VIEW_HZ = 10
#: How long the go/no-go may take: the handshake gives up after 2 s by itself.
CONNECT_WAIT_S = 5.0
#: The demo: a shipped profile, accelerated so a full session takes well under a minute.
DEMO_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "aa-patch.yaml"
DEMO_SPEED = 2.0  # about 25 s of wall time for the AA patch session: slow enough to watch
DEMO_DB = Path("demo-out") / "sessions.db"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a treatment session on a pen or the simulator",
        description="Run a treatment profile zone by zone, live. Exit codes: 0 complete, "
        "1 refused before start, 2 aborted, 3 fault, 4 link lost.",
    )
    p.add_argument("--profile", type=Path, help="the treatment profile (YAML)")
    p.add_argument("--patient", help="the patient's pseudonymous reference (no names)")
    p.add_argument("--operator", type=utf8_text, metavar="ID",
                   help="who runs the session (required; recorded)")
    p.add_argument("--checklist", type=Path, metavar="FILE",
                   help="answers to the contraindication checklist, a YAML mapping of item id "
                   "to yes/no (`devicectl checklist template`); without it they are asked in "
                   "the terminal")
    p.add_argument("--ack-adjuncts", action="store_true",
                   help="the adjunct instructions were given to the patient (recorded at the "
                   "end); without it, it is asked in the terminal")
    p.add_argument("--topical-wait-hours", type=float, default=DEFAULT_TOPICAL_WAIT_HOURS,
                   metavar="H", help="the clinic's wait after a session before a topical "
                   "adjunct (a clinic setting)")
    p.add_argument("--consent", action="store_true",
                   help="the patient has given informed consent to this treatment today "
                   "(recorded with the time); without it, it is asked in the terminal")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--port", help="serial port path or pyserial URL of the pen")
    src.add_argument("--sim", action="store_true", help="run the simulated pen in-process")
    p.add_argument("--scenario",
                   help="simulator fault scenario (python -m firmware_sim scenarios; "
                   "default: none, a well-behaved pen)")
    p.add_argument("--speed", type=sim_speed, default=1.0,
                   help="simulator speed, times real time (0 = as fast as possible)")
    p.add_argument("--seed", type=int,
                   help="simulator seed (default: a new one each run, so a new cartridge)")
    p.add_argument("--misbehave", metavar="NAME",
                   help="simulate a misbehaving pen (python -m firmware_sim scenarios lists "
                   "them; default: none)")
    p.add_argument("--no-position", action="store_true",
                   help="simulate a pen without position tracking")
    p.add_argument("--sim-auth-required", action="store_true",
                   help="simulate a pen that obeys only signed commands (its test key is derived)")
    p.add_argument("--sim-state", type=Path,
                   help="the simulated pen's firmware slots (see `firmware update --sim`)")
    p.add_argument("--db", type=db_arg, metavar="PATH|URL",
                   help=f"records database (default $DEVICECTL_DB, else {default_db_path()}):"
                   " an SQLite file, or the clinic's postgresql://… server")
    p.add_argument("--room", type=utf8_text, default=None, metavar="NAME",
                   help="the treatment room, recorded with the session")
    p.add_argument("--new-records", action="store_true",
                   help="let a clinical run start new records where --db points (none there "
                   "yet: no patient history to check intervals and cartridges against), and "
                   "any run make --db's folder when it does not exist")
    p.add_argument("--yes", action="store_true",
                   help="answer the confirmations (start, next zone) for scripted runs")
    p.add_argument("--override-interval", type=utf8_text, metavar="REASON",
                   help="start although a zone's minimum interval has not passed: the "
                   f"clinician's reason, at least {OVERRIDE_REASON_MIN_CHARS} characters "
                   "(recorded, with --clinician)")
    p.add_argument("--clinician", type=utf8_text, metavar="ID",
                   help="the clinician who decided the interval override (recorded)")
    p.add_argument("--resume", type=session_id, metavar="SESSION_ID",
                   help="continue an interrupted session, or one that lost its link, with its "
                   "coverage (default: a new session)")
    output_args(p)
    _web_args(p, default=False)
    p.set_defaults(func=run)

    d = sub.add_parser(
        "demo", help="a full simulated session with the live view",
        description="A whole simulated session of the shipped profile "
        f"({DEMO_PROFILE.name}), accelerated, with the live view and the live page.")
    d.add_argument("--speed", type=sim_speed, default=DEMO_SPEED,
                   help="simulator speed, times real time (0 = as fast as possible)")
    d.add_argument("--db", type=db_arg, default=DEMO_DB, metavar="PATH|URL",
                   help="records: a file (relative to the current folder) or a "
                   "postgresql:// URL")
    d.add_argument("--new-records", action="store_true",
                   help="make --db's folder when it does not exist (default: only the "
                   "demo's own folder is made)")
    output_args(d)
    _web_args(d, default=True)
    d.set_defaults(func=demo)


def _web_args(p: Any, *, default: bool) -> None:
    """--web: the live page (devicectl/web; docs/web.md), on for the demo."""
    p.add_argument("--web", action=argparse.BooleanOptionalAction, default=default,
                   help="serve the live page for a screen beside the chair")
    p.add_argument("--web-port", type=web_port, default=8765, help="the page's port (default 8765)")
    p.add_argument("--web-host", type=utf8_text, default="127.0.0.1",
                   help="the page's address (default 127.0.0.1: this computer only)")


def demo(args: argparse.Namespace) -> int:
    if args.db == DEMO_DB:  # the demo's own place; a typed one is checked as run's is
        DEMO_DB.parent.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(
        profile=DEMO_PROFILE, patient=f"DEMO-{secrets.randbelow(10**6):06d}", port=None, sim=True,
        scenario=None, speed=args.speed, seed=None, no_position=False, db=args.db, yes=True,
        override_interval=None, clinician=None, resume=None, operator="DEMO-OPERATOR",
        checklist=None, consent=True, simulated_answers=True, ack_adjuncts=True,
        topical_wait_hours=DEFAULT_TOPICAL_WAIT_HOURS, new_records=args.new_records, web=args.web,
        web_port=args.web_port, web_host=args.web_host, quiet=args.quiet, json=args.json,
    )
    return run(ns)


def run(args: argparse.Namespace) -> int:
    """The session, with Ctrl-C, SIGTERM and SIGHUP answered from the first step to the
    last line printed (devicectl/commands/run_signals.py)."""
    interrupts = Interrupts()
    interrupts.install()
    try:
        return _run(args, interrupts)
    finally:
        interrupts.restore()


def _run(args: argparse.Namespace, interrupts: Interrupts) -> int:
    quiet, as_json = bool(getattr(args, "quiet", False)), bool(getattr(args, "json", False))
    console = Console(stderr=as_json, quiet=quiet)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not args.port and not args.sim:
        raise DevicectlError("say where the pen is: --port PATH, or --sim for the simulator")
    if not args.yes and not interactive:
        raise RefusedError("no terminal to confirm the start; pass --yes for a scripted run")
    check_override(args)
    operator = staff_id(args.operator, "--operator", "who runs the session")
    gate = read_gate_inputs(args, interactive)
    if args.resume is None and args.patient is not None:
        patient_ref(args.patient)  # a name is refused before a record is made
    zone_map = default_zone_map()  # the shipped map, checked once per process
    db_path = resolve_db(args.db)
    shown = redact(db_path) if isinstance(db_path, str) else db_path  # no password shown
    check_records(db_path, args)
    with Store(db_path) as store:
        store.require_writable()  # no treatment without a record: refused before anything
        check_records_kind(store, db_path, args.sim)
        unreplayed = not_yet_replayed(db_path)  # the cartridge and interval checks need them
        if unreplayed is not None:
            raise RefusedError(unreplayed)
        loaded, patient, resume_id = load_session(args, store, db_path)
    # The keyring and the link open before a record is made: a wrong port or an
    # unsafe keyring leaves no empty session behind. The pen process opens the link.
    keys = session_keys(args, console)
    pen = PenProcess.open(link_settings(args, zone_map))
    if interrupts.signal is not None:
        pen.close()
        raise RefusedError(f"stopped by {interrupts.signal} before the start: nothing was "
                           "started or recorded")
    lock = None
    try:
        with Store(db_path) as store:
            resumed = store.session(resume_id) if resume_id is not None else None
            setup = setup_session(store, loaded, patient, resumed, operator, args.sim,
                                  getattr(args, "room", None))
            # Held until the end: lists show the session "running", and nobody resumes it.
            lock = running_lock(db_path, setup.session_id)
            refusals = eligibility_gate(console, store, setup.session_id, gate,
                                        setup.loaded.warnings, interrupts)
            if refusals and (setup.continues is not None or not setup.resumed):
                # one resumed in place (it treated) stays interrupted, to be resumed again
                store.close_session(setup.session_id, Outcome.REFUSED.value, now_iso())
            facts = start_facts(store, setup, resumed, args,
                                {z.id: z.name for z in zone_map.zones})
            coverage_state = coverage_to_restore(store, resumed) if resumed else None
    except BaseException:
        if lock is not None:
            lock.release()
        pen.close()
        raise
    if refusals:  # the clinic's gate said no: the pen was never started
        pen.close()
        lock.release()
        for reason in refusals:
            always(console, plain("NO-GO: " + reason, "bold red"))
        always(console, plain(f"{_outcome_words(setup, Outcome.REFUSED)} · session id "
                              f"{setup.session_id} · details: devicectl "
                              f"sessions show {setup.session_id} --db {shown}", "bold red"))
        if as_json:
            json_line({"type": "end", "session_id": setup.session_id,
                       "outcome": _recorded_outcome(setup, Outcome.REFUSED),
                       "reasons": refusals, "exit_code": Outcome.REFUSED.exit_code,
                       "db": str(shown)})
        return Outcome.REFUSED.exit_code
    start_zone = first_unfinished_zone(setup.loaded, resumed.zones) if resumed else 0
    console.print(Text.assemble(
        (f"session {setup.session_id}", "bold"),
        plain(f" · patient {setup.patient} · profile {setup.loaded.profile.name} "
              f"({setup.loaded.content_hash[:12]})"
              f"{' · resumed' if setup.resumed and not setup.continues else ''}"
              f"{f' · continues session {setup.continues}' if setup.continues else ''}"),
    ))
    for w in setup.loaded.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), plain(w)))
    if as_json:
        json_line({"type": "session", "session_id": setup.session_id,
                    "patient_ref": setup.patient, "profile": setup.loaded.profile.name,
                    "profile_hash": setup.loaded.content_hash, "resumed": setup.resumed,
                    "db": str(shown)})

    pen.begin(SessionSettings(
        recipe=plan_recipe(setup.loaded, zone_map),
        raster=MapRaster.of(zone_map, COVERAGE_CELL_MM),
        facts=facts,
        db_path=db_path,
        session_id=setup.session_id,
        nonce=secrets.randbits(32),
        started_wall=datetime.now(UTC),
        coverage_state=coverage_state,
        start_zone_index=start_zone,
        zone_seconds_before=tuple((z.zone_id, z.seconds) for z in resumed.zones)
        if resumed else (),
        keys=keys,
        auto_confirm=args.yes,
        end_on_fault=args.yes or not interactive,
        claim=True,  # a continuation too: its own cartridge is its own (claim.CONTINUED_CHAIN)
        in_place=setup.resumed and setup.continues is None,
    ))
    interrupts.watch(pen)
    previous_cores = share_cores(pen)
    if pen.grants:
        console.print(plain(pen.grants), style="dim", highlight=False, soft_wrap=True)
    wall0 = time.monotonic()
    web = start_web_page(console, args, pen, zone_map, setup, db_path)
    feed = Feed(console, as_json, zone_map, Pace(args.speed if args.sim else 0.0), wall0)
    go = False
    try:
        go = _go_no_go(console, pen, pen.link.name, zone_map)
        if go and not args.yes:
            go = _confirm(console, "Start the treatment?")
            if go:
                pen.submit(Command.START)
        if not go:
            pen.request_stop("the technician did not start", not_started=True)
        elif interactive and not (quiet or as_json):
            _live(console, pen, setup, zone_map, web)
        else:
            dev = pen.snapshot.device  # fixed once the pen has answered
            feed.footprint_mm = dev.footprint_dmm / 10 if dev is not None else 0.0
            _plain(console, pen, feed)
        pen.wait()
    finally:
        pen.request_stop("the session ended")
        pen.wait(15.0)
        pen.close()
        if web is not None:
            web.stop()
        lock.release()
        set_cores(previous_cores)
    report = pen.report
    assert report is not None  # set by the end message, or when the pen process died
    outcome = report.outcome
    for e in pen.drain_events():
        feed.event(e, pen.snapshot.t0_us)
    if report.error is not None:
        always(console, plain(report.error, "bold red"))
    elif report.internal_error is not None:
        always(console, Text.assemble(("internal error, pen stopped: ", "bold red"),
                                       plain(report.internal_error)))
    for err in report.errors:
        always(console, Text.assemble(("records: ", "bold red"), plain(err)))
    _summary(console, pen, setup, outcome, shown, zone_map)
    records_banner(console, report)
    slow = feed.pace.summary(pen.snapshot.elapsed_s, time.monotonic() - wall0)
    if slow:
        console.print(slow, style="yellow", highlight=False, soft_wrap=True)
    if outcome is not Outcome.REFUSED:  # the patient was treated: the adjuncts' instructions
        instructions = adjunct_instructions(setup.loaded.profile.adjuncts,
                                            args.topical_wait_hours)
        acknowledge_adjuncts(console, db_path, setup.session_id, instructions, operator,
                             bool(args.ack_adjuncts), interactive,
                             simulated=bool(getattr(args, "simulated_answers", False)))
    if as_json:
        failed = {"records_failure": report.failure,
                  "unsaved": report.unsaved_path} if report.failure is not None else {}
        json_line({"type": "end", "session_id": setup.session_id,
                   "outcome": _recorded_outcome(setup, outcome),
                   "exit_code": outcome.exit_code, "db": str(shown), **failed})
    return outcome.exit_code


def _recorded_outcome(setup: Setup, outcome: Outcome) -> str:
    """The outcome the records say: resumed in place and refused, interrupted (penloop.py)."""
    if outcome is Outcome.REFUSED and setup.resumed and setup.continues is None:
        return "interrupted"
    return outcome.value


def _outcome_words(setup: Setup, outcome: Outcome) -> str:
    """The outcome line's first words; a refused resume in place says what the records do."""
    words = outcome.value.replace("_", " ")
    if _recorded_outcome(setup, outcome) == "interrupted":
        words += " (the session stays interrupted, to be resumed again)"
    return words


def _go_no_go(console: Console, session: Watched, port: str, zone_map: ZoneMap) -> bool:
    deadline = time.monotonic() + CONNECT_WAIT_S
    while time.monotonic() < deadline and not session.wait(0.02):
        if session.snapshot.state not in (State.CONNECTING, State.CONFIGURING):
            break
    snap = session.snapshot  # one moment: state, pen, plan and verdict agree
    dev = snap.device
    if snap.state is State.LINK_LOST or dev is None:
        always(console, Text.assemble(("NO-GO: ", "bold red"), plain(
            f"no pen answered on {port}; check the cable and that the pen is on, then run again"
        )))
        return False
    console.print(
        f"pen: serial {dev.serial_number} · firmware {dev.fw_version >> 8}.{dev.fw_version & 0xFF}"
        f" · cartridge {dev.cartridge_id or 'none'} ({dev.cartridge_stamps} stamps delivered)"
        f" · {dev.needle_count} needles · footprint {dev.footprint_dmm / 10:.1f} mm"
    )
    if snap.plan is not None:
        labels = {z.name: z.label for z in zone_map.zones}
        console.print(plan_table(snap.plan, labels))
    reasons = list(snap.go_no_go)
    if snap.state is State.REFUSED and not reasons:
        reasons = ["the profile cannot be run on this pen"]
    if not reasons and (snap.claim_requested or snap.state is State.READY):
        # At the GO the records take the cartridge first (claim.py, in the pen process).
        deadline = time.monotonic() + CLAIM_TIMEOUT_S
        while (not session.snapshot.claim_decided and time.monotonic() < deadline
               and not session.wait(0.02)):
            pass
        snap = session.snapshot
        if not snap.claim_decided:
            reasons = [f"the records did not answer the claim on cartridge {dev.cartridge_id} "
                       f"in {CLAIM_TIMEOUT_S:.0f} s; no treatment without a record"]
        elif snap.claim_refused is not None:
            reasons = [snap.claim_refused]
    if reasons:
        for r in reasons:
            always(console, Text.assemble(("NO-GO: ", "bold red"), plain(r)))
        return False
    console.print("[bold green]GO:[/] pen, cartridge, interval and plan checked")
    return True


def _confirm(console: Console, question: str) -> bool:
    # a Text: "[y/N]" in a string is markup to rich, which printed nothing of it
    answer = ask(lambda: console.input(Text.assemble((question, "bold"), " [y/N] ")))
    return answer is not None and answer.strip().lower() in ("y", "yes")


def _live(console: Console, session: Watched, setup: Setup, zone_map: ZoneMap,
          web: Any) -> None:
    """The live view, drawn by a child process (devicectl/monitor/viewproc.py) that
    owns the terminal; this thread feeds it snapshots and carries out its keys
    (what a key means in a state, e.g. RESUME on a ready zone, is the controller's)."""
    pinned = None
    if web is not None:  # the page's address and token stay on screen
        pinned = f"page {web.url}#token={web.token} · read-only {web.url}"
    view = ViewProcess(ViewOptions(
        f"devicectl · patient {setup.patient} · {setup.loaded.profile.name}",
        pinned_line=pinned,
        zones=tuple((z.id, z.name, z.label) for z in zone_map.zones)))
    try:
        while not session.wait(1 / VIEW_HZ):
            view.push(session)
            for request in view.requests():
                if request == "stop":
                    session.request_stop("aborted by the technician")
                elif request == "closed":
                    session.request_stop("the terminal closed")
                elif isinstance(request, Command):
                    session.submit(request)
            if not view.alive:
                session.request_stop("the terminal view ended")
    finally:
        view.close(session.snapshot.view_status(), session.drain_events())


#: The plain output's feed (firmware_sim/campaign_cell.py drives `_plain` with it).
_Feed = Feed


def _plain(console: Console, session: Watched, feed: Feed) -> None:
    """Without a terminal: one line per event, as the live log shows them (the
    many-a-minute holds and commands are in the record, not on the screen), and
    a progress line every 5 s of session time."""
    while True:
        done = session.wait(0.05)
        feed.print_new(session)  # this pass's events and progress, in session-time order
        if done:
            return


def _summary(
    console: Console, session: Watched, setup: Setup, outcome: Outcome, db_path: Path | str,
    zone_map: ZoneMap,
) -> None:
    snap = session.snapshot  # the last one, taken when the loop ended
    status = snap.status
    table = Table(title=f"session {setup.session_id} · {outcome.value}", title_justify="left")
    from devicectl.dose import DOSE_COLUMNS, dose_cells

    labels = {z.name: z.label for z in zone_map.zones}
    for col in ("zone", *DOSE_COLUMNS, "strokes", "time", "over max"):
        table.add_column(col, justify="left" if col == "zone" else "right")
    for z in status.get("zones") or ():
        over = snap.over_max.get(z["zone_id"], 0)
        table.add_row(
            plain(labels.get(z["name"], z["name"])),
            *dose_cells(z),
            str(z["strokes"]),
            zone_time(z.get("seconds")),
            str(over),
        )
    console.print(table)
    style = "bold green" if outcome is Outcome.COMPLETE else "bold red"
    always(console, Text.assemble(
        (_outcome_words(setup, outcome), style),
        plain(f" · session id {setup.session_id} · details: devicectl sessions show "
              f"{setup.session_id} --db {db_path}"),
    ))
