"""`devicectl run` and `devicectl demo`: a treatment session from profile to summary.

This is where a session is put together: the profile and its plan, the facts
from the records, the link (a port, or the simulator in virtual time), the
controller on its loop thread, the records' writer, and the technician's view.
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from devicectl.adjuncts import adjunct_instructions
from devicectl.commands.checklist_cmd import (
    acknowledge_adjuncts,
    eligibility_gate,
    read_gate_inputs,
    staff_id,
)
from devicectl.commands.profile_cmd import plan_table
from devicectl.commands.run_checks import check_override, check_records, check_records_kind
from devicectl.controller import Command, Controller, StartFacts, State
from devicectl.errors import DevicectlError, RefusedError
from devicectl.link import open_transport, pipe_pair
from devicectl.monitor.progress import (
    event_record,
    progress_line,
    progress_record,
)
from devicectl.monitor.terminal import clock, event_line, is_chatty
from devicectl.monitor.viewproc import ViewOptions, ViewProcess
from devicectl.patients import patient_ref
from devicectl.plain import plain
from devicectl.plan import make_plan
from devicectl.profile import (
    DEFAULT_TOPICAL_WAIT_HOURS,
    LoadedProfile,
    load_profile,
    load_profile_text,
)
from devicectl.safety import INTERVAL_DEPTH_UM, OVERRIDE_REASON_MIN_CHARS
from devicectl.session import Outcome, Policy, Session, VirtualClock
from devicectl.store import EventRecord, RecordWriter, SessionRecord, Store, default_db_path
from devicectl.unsaved import not_yet_replayed
from devicectl.zones import ZoneMap, load_zone_map

#: The live view's refresh rate, and the GIL switch interval during a session.
VIEW_HZ = 10
SWITCH_INTERVAL_S = 0.0005
#: How long the go/no-go may take: the handshake gives up after 2 s by itself.
CONNECT_WAIT_S = 5.0
#: The demo: a shipped profile, accelerated so a full session takes well under a minute.
DEMO_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "aga-crown-midscalp.yaml"
DEMO_SPEED = 40.0
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
    p.add_argument("--operator", metavar="ID", help="who runs the session (required; recorded)")
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
    p.add_argument("--speed", type=float, default=1.0,
                   help="simulator speed, times real time (0 = as fast as possible)")
    p.add_argument("--seed", type=int,
                   help="simulator seed (default: a new one each run, so a new cartridge)")
    p.add_argument("--no-position", action="store_true",
                   help="simulate a pen without position tracking")
    p.add_argument("--sim-auth-required", action="store_true",
                   help="simulate a pen that obeys only signed commands (its test key is derived)")
    p.add_argument("--sim-state", type=Path,
                   help="the simulated pen's firmware slots (see `firmware update --sim`)")
    p.add_argument("--db", type=Path, help=f"records database (default {default_db_path()})")
    p.add_argument("--new-records", action="store_true",
                   help="let a clinical run start new records where --db points (none there "
                   "yet: no patient history to check intervals and cartridges against)")
    p.add_argument("--yes", action="store_true",
                   help="answer the confirmations (start, next zone) for scripted runs")
    p.add_argument("--override-interval", metavar="REASON",
                   help="start although a zone's minimum interval has not passed: the "
                   f"clinician's reason, at least {OVERRIDE_REASON_MIN_CHARS} characters "
                   "(recorded, with --clinician)")
    p.add_argument("--clinician", metavar="ID",
                   help="the clinician who decided the interval override (recorded)")
    p.add_argument("--resume", type=int, metavar="SESSION_ID",
                   help="continue an interrupted session with its coverage")
    _output_args(p)
    _web_args(p, default=False)
    p.set_defaults(func=run)

    d = sub.add_parser(
        "demo", help="a full simulated session with the live view",
        description="A whole simulated session of the shipped profile "
        f"({DEMO_PROFILE.name}), accelerated, with the live view and the live page.")
    d.add_argument("--speed", type=float, default=DEMO_SPEED,
                   help="simulator speed, times real time (0 = as fast as possible)")
    d.add_argument("--db", type=Path, default=DEMO_DB, metavar="PATH",
                   help="records database, relative to the current folder")
    _output_args(d)
    _web_args(d, default=True)
    d.set_defaults(func=demo)


def _output_args(p: Any) -> None:
    """--quiet and --json: what a script reads (no live view with either)."""
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only refusals, errors and the outcome line (no live view)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a line on stdout: the session, each event, progress "
                   "every 5 s of session time, the end; other text goes to stderr")


def _web_args(p: Any, *, default: bool) -> None:
    """--web: the live page (devicectl/web; docs/web.md), on for the demo."""
    p.add_argument("--web", action=argparse.BooleanOptionalAction, default=default,
                   help="serve the live page for a screen beside the chair")
    p.add_argument("--web-port", type=int, default=8765, help="the page's port (default 8765)")
    p.add_argument("--web-host", default="127.0.0.1",
                   help="the page's address (default 127.0.0.1: this computer only)")


def demo(args: argparse.Namespace) -> int:
    args.db.parent.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(
        profile=DEMO_PROFILE, patient=f"DEMO-{secrets.randbelow(10**6):06d}", port=None, sim=True,
        scenario=None, speed=args.speed, seed=None, no_position=False, db=args.db, yes=True,
        override_interval=None, clinician=None, resume=None, operator="DEMO-OPERATOR",
        checklist=None, consent=True, simulated_answers=True, ack_adjuncts=True,
        topical_wait_hours=DEFAULT_TOPICAL_WAIT_HOURS, new_records=False, web=args.web,
        web_port=args.web_port, web_host=args.web_host, quiet=args.quiet, json=args.json,
    )
    return run(ns)


@dataclass
class _Setup:
    loaded: LoadedProfile
    patient: str
    session_id: int
    resumed: bool


def run(args: argparse.Namespace) -> int:
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
    zone_map = load_zone_map()
    db_path: Path = args.db or default_db_path()
    check_records(db_path, args)
    with Store(db_path) as store:
        store.require_writable()  # no treatment without a record: refused before anything
        check_records_kind(store, db_path, args.sim)
        unreplayed = not_yet_replayed(db_path)  # the cartridge and interval checks need them
        if unreplayed is not None:
            raise RefusedError(unreplayed)
        loaded, patient, resume_id = _load(args, store)
    vclock = VirtualClock(time.monotonic_ns() // 1000) if args.sim else None
    # The keyring and the link open before a record is made: a wrong port or an
    # unsafe keyring leaves no empty session behind.
    keys = _session_keys(args, console)
    wire, pen, pen_wire, port_name = _link(args, zone_map, vclock)
    try:
        with Store(db_path) as store:
            setup = _setup(store, loaded, patient, resume_id, operator, args.sim)
            refusals = eligibility_gate(console, store, setup.session_id, gate,
                                        setup.loaded.warnings)
            if refusals:
                store.close_session(setup.session_id, Outcome.REFUSED.value, _now_iso())
            resumed = store.session(setup.session_id) if setup.resumed else None
            facts = _facts(store, setup, resumed, args)
            coverage_state = store.coverage_state(setup.session_id) if resumed else None
    except BaseException:
        wire.close()
        raise
    if refusals:  # the clinic's gate said no: the pen was never started
        wire.close()
        for reason in refusals:
            _always(console, plain("NO-GO: " + reason, "bold red"))
        _always(console, plain(f"refused · session id {setup.session_id} · details: devicectl "
                               f"sessions show {setup.session_id} --db {db_path}", "bold red"))
        if as_json:
            _json_line({"type": "end", "session_id": setup.session_id, "outcome": "refused",
                        "reasons": refusals, "exit_code": Outcome.REFUSED.exit_code,
                        "db": str(db_path)})
        return Outcome.REFUSED.exit_code
    start_zone = _first_unfinished_zone(setup.loaded, resumed.zones) if resumed else 0
    console.print(Text.assemble(
        (f"session {setup.session_id}", "bold"),
        plain(f" · patient {setup.patient} · profile {setup.loaded.profile.name} "
              f"({setup.loaded.content_hash[:12]}){' · resumed' if setup.resumed else ''}"),
    ))
    for w in setup.loaded.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), plain(w)))
    if as_json:
        _json_line({"type": "session", "session_id": setup.session_id,
                    "patient_ref": setup.patient, "profile": setup.loaded.profile.name,
                    "profile_hash": setup.loaded.content_hash, "resumed": setup.resumed,
                    "db": str(db_path)})

    controller = Controller(
        lambda dev: make_plan(setup.loaded, dev, zone_map),
        zone_map,
        facts,
        nonce=secrets.randbits(32),
        now_us=time.monotonic_ns() // 1000,
        coverage_state=coverage_state,
        start_zone_index=start_zone,
        keys=keys,
    )
    writer = RecordWriter(db_path, setup.session_id)
    writer.start()
    policy = Policy(auto_confirm=args.yes, end_on_fault=args.yes or not interactive)
    session = Session(
        controller, wire=wire, writer=writer, policy=policy, pen=pen, pen_wire=pen_wire,
        virtual_clock=vclock, speed=args.speed if args.sim else 1.0,
    )
    previous_handlers = _install_signals(session)
    # The inner loop shares the GIL with the view and the writer: a short switch
    # interval lets it take the GIL back within 0.5 ms, and a frozen heap keeps
    # full garbage collections (milliseconds) off its path (docs/performance.md).
    previous_switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()
    session.start()
    web = _start_web(console, args, session, zone_map, setup, db_path)
    feed = _Feed(console, as_json, zone_map)
    go = False
    try:
        go = _go_no_go(console, session, port_name, zone_map)
        if go and not args.yes:
            go = _confirm(console, "Start the treatment?")
            if go:
                session.submit(Command.START)
        if not go:
            session.request_stop("the technician did not start")
        elif interactive and not (quiet or as_json):
            _live(console, session, setup)
        else:
            dev = controller.device  # fixed once the pen has answered
            feed.footprint_mm = dev.footprint_dmm / 10 if dev is not None else 0.0
            _plain(console, session, feed)
        session.wait()
    finally:
        session.request_stop("the session ended")
        session.wait(5.0)
        outcome = session.outcome or Outcome.ABORTED
        if not go and outcome is not Outcome.REFUSED and controller.state is not State.LINK_LOST:
            outcome = Outcome.REFUSED
        writer.close(outcome.value, datetime.now(UTC).isoformat(timespec="milliseconds"))
        if web is not None:
            web.stop()
        wire.close()
        _restore_signals(previous_handlers)
        sys.setswitchinterval(previous_switch)
        gc.unfreeze()
    for e in session.drain_events():
        feed.event(e, session.t0_us)
    if isinstance(session.error, DevicectlError):
        _always(console, plain(session.error, "bold red"))
    elif session.error is not None:
        _always(console, Text.assemble(("internal error, pen stopped: ", "bold red"),
                                       plain(repr(session.error))))
    for err in writer.errors:
        _always(console, Text.assemble(("records: ", "bold red"), plain(err)))
    _summary(console, session, setup, outcome, db_path)
    _records_banner(console, writer)
    if outcome is not Outcome.REFUSED:  # the patient was treated: the adjuncts' instructions
        instructions = adjunct_instructions(setup.loaded.profile.adjuncts,
                                            args.topical_wait_hours)
        acknowledge_adjuncts(console, db_path, setup.session_id, instructions, operator,
                             bool(args.ack_adjuncts), interactive,
                             simulated=bool(getattr(args, "simulated_answers", False)))
    if as_json:
        failed = {"records_failure": writer.failure,
                  "unsaved": str(writer.unsaved_path)} if writer.failure is not None else {}
        _json_line({"type": "end", "session_id": setup.session_id, "outcome": outcome.value,
                    "exit_code": outcome.exit_code, "db": str(db_path), **failed})
    return outcome.exit_code


def _records_banner(console: Console, writer: RecordWriter) -> None:
    """When the records failed: in red, where they went and how to put them back;
    the lines that could not be written anywhere go to stderr, to be saved by hand."""
    if writer.failure is None:
        return
    _always(console, plain(writer.failure, "bold white on red"))
    if writer.unsaved_count:
        _always(console, plain(
            f"the records not saved in {writer.path} are in {writer.unsaved_path}; once the "
            f"database can be written: devicectl records replay {writer.unsaved_path}",
            "bold red"))
    if writer.unwritten:
        _always(console, Text(
            f"{len(writer.unwritten)} records could not be written anywhere; they follow on "
            "stderr as JSON lines: save them to a file and run devicectl records replay FILE",
            style="bold red"))
        for line in writer.unwritten:
            print(line, file=sys.stderr)


def _always(console: Console, text: Text) -> None:
    """Printed even with --quiet: refusals, errors and the outcome line."""
    quiet, console.quiet = console.quiet, False
    try:
        console.print(text, highlight=False, soft_wrap=True)
    finally:
        console.quiet = quiet


def _json_line(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _load(args: argparse.Namespace, store: Store) -> tuple[LoadedProfile, str, int | None]:
    """The profile and patient of a new session, or those of the one to resume."""
    if args.resume is not None:
        record = store.session(args.resume)
        if record.outcome is not None:
            raise RefusedError(
                f"session {record.id} ended ({record.outcome}); only an interrupted session "
                "can be resumed"
            )
        loaded = load_profile_text(record.profile_text, f"session {record.id} profile",
                                   topical_wait_hours=args.topical_wait_hours)
        if loaded.content_hash != record.profile_hash:
            raise RefusedError(f"session {record.id}'s stored profile does not match its hash")
        return loaded, record.patient_ref, record.id
    if args.profile is None or not args.patient:
        raise DevicectlError("a new session needs --profile FILE and --patient REF")
    return (load_profile(args.profile, topical_wait_hours=args.topical_wait_hours),
            patient_ref(args.patient), None)




def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _setup(
    store: Store, loaded: LoadedProfile, patient: str, resume_id: int | None, operator: str,
    simulated: bool,
) -> _Setup:
    if resume_id is not None:
        store.append_events(resume_id, [EventRecord(
            time.monotonic_ns() // 1000, _now_iso(), "OPERATOR",
            f"resumed by operator {operator}", None, {"operator": operator})])
        return _Setup(loaded, patient, resume_id, resumed=True)
    session_id = store.create_session(
        patient_ref=patient,
        profile_name=loaded.profile.name,
        profile_hash=loaded.content_hash,
        profile_text=loaded.text,
        started_at=_now_iso(),
        operator=operator,
        simulated=simulated,
    )
    return _Setup(loaded, patient, session_id, resumed=False)


def _first_unfinished_zone(loaded: LoadedProfile, zones: Any) -> int:
    """The index, in the profile's order, of the first zone the records do not show done."""
    done = {z.name for z in zones if z.done}
    names = [z.zone for z in loaded.profile.zones]
    return next((i for i, name in enumerate(names) if name not in done), len(names))


def _facts(
    store: Store, setup: _Setup, resumed: SessionRecord | None, args: argparse.Namespace
) -> StartFacts:
    """What the records say about this cartridge and this patient's zones.

    A resumed session's own cartridge and strokes are not "earlier": they are
    left out, and the cartridge may have delivered stamps in it.
    """
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    own = resumed.id if resumed is not None else None
    return StartFacts(
        patient_ref=setup.patient,
        used_cartridge_ids=store.used_cartridge_ids(exclude_session=own),
        days_since_deep_treatment=store.days_since_deep_treatment(
            setup.patient, now, INTERVAL_DEPTH_UM, exclude_session=own
        ),
        interval_override_reason=args.override_interval,
        resumed_cartridge_id=resumed.cartridge_id if resumed is not None else None,
        days_since_treatment=store.days_since_deep_treatment(
            setup.patient, now, 0, exclude_session=own
        ),
        interval_override_clinician=args.clinician,
    )


def _link(args: argparse.Namespace, zone_map: ZoneMap, vclock: VirtualClock | None) -> Any:
    if vclock is None:
        return open_transport(args.port), None, None, args.port
    from firmware_sim.virtual import VirtualPen

    host_end, pen_end = pipe_pair(vclock)
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    from firmware_sim.bootloader import load_slots

    sim_state = getattr(args, "sim_state", None)
    pen = VirtualPen(seed=seed, scenario=args.scenario, zone_map=zone_map,
                     position=not args.no_position, pen=_sim_params(args),
                     slots=load_slots(sim_state) if sim_state else None)
    return host_end, pen, pen_end, f"the simulator (seed {seed})"


def _sim_params(args: argparse.Namespace) -> Any:
    from firmware_sim.__main__ import with_auth

    return with_auth(None, False, bool(getattr(args, "sim_auth_required", False)))


def _session_keys(args: argparse.Namespace, console: Console) -> Any:
    """The keys a pen must prove: the keyring's (checked now), or the simulator's test key."""
    from devicectl.keys import Keyring
    from devicectl.signing import sim_device_key

    if getattr(args, "sim", False):
        if not getattr(args, "sim_auth_required", False):
            return None
        console.print("simulated pen: its test-only key is derived from its serial number")
        return sim_device_key
    return Keyring().snapshot().get


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _start_web(console: Console, args: argparse.Namespace, session: Session,
               zone_map: ZoneMap, setup: _Setup, db_path: Path) -> Any:
    """The live page, if asked for; the session runs on without it if it cannot start."""
    if not getattr(args, "web", False):
        return None
    from devicectl.web.server import start_web

    token = secrets.token_urlsafe(16)
    header = {"session_id": setup.session_id, "patient_ref": setup.patient,
              "profile": setup.loaded.profile.name}
    try:
        web = start_web(session, args.web_host, args.web_port, token, zone_map=zone_map,
                        header=header, db_path=db_path, session_id=setup.session_id)
    except DevicectlError as exc:
        console.print(Text.assemble(("web page not started: ", "yellow"), plain(exc)))
        return None
    # The token rides in the fragment, which the browser never sends to a server.
    console.print(f"web page: {web.url}#token={token} (with controls) · {web.url} (read-only)"
                  f" · session token {token}", markup=False, highlight=False, soft_wrap=True)
    return web


class _Prompting:
    """True while the main thread waits at a y/N prompt, which a signal must break."""

    active = False


def _install_signals(session: Session) -> dict[signal.Signals, Any]:
    """Signals stop the pen through the session; returns the handlers they replace."""

    def handler(signum: int, frame: FrameType | None) -> None:
        session.request_stop(f"stopped by {signal.Signals(signum).name}")
        if _Prompting.active:
            raise KeyboardInterrupt  # out of the blocking prompt; the finally stops the pen

    return {sig: signal.signal(sig, handler) for sig in _SIGNALS}


def _restore_signals(previous: dict[signal.Signals, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def _go_no_go(console: Console, session: Session, port: str, zone_map: ZoneMap) -> bool:
    deadline = time.monotonic() + CONNECT_WAIT_S
    ctl = session.controller
    while time.monotonic() < deadline and not session.wait(0.02):
        if ctl.state not in (State.CONNECTING, State.CONFIGURING):
            break
    if ctl.state is State.LINK_LOST or ctl.device is None:
        _always(console, Text.assemble(("NO-GO: ", "bold red"), plain(
            f"no pen answered on {port}; check the cable and that the pen is on, then run again"
        )))
        return False
    dev = ctl.device
    console.print(
        f"pen: serial {dev.serial_number} · firmware {dev.fw_version >> 8}.{dev.fw_version & 0xFF}"
        f" · cartridge {dev.cartridge_id or 'none'} ({dev.cartridge_stamps} stamps delivered)"
        f" · {dev.needle_count} needles · footprint {dev.footprint_dmm / 10:.1f} mm"
    )
    if ctl.plan is not None:
        labels = {z.name: z.label for z in zone_map.zones}
        console.print(plan_table(ctl.plan, labels))
    reasons = list(ctl.go_no_go)
    if ctl.state is State.REFUSED and not reasons:
        reasons = ["the profile cannot be run on this pen"]
    if reasons:
        for r in reasons:
            _always(console, Text.assemble(("NO-GO: ", "bold red"), plain(r)))
        return False
    console.print("[bold green]GO:[/] pen, cartridge, interval and plan checked")
    return True


def _confirm(console: Console, question: str) -> bool:
    _Prompting.active = True
    try:
        answer = console.input(f"[bold]{question}[/] [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return False
    finally:
        _Prompting.active = False
    return answer.strip().lower() in ("y", "yes")


def _live(console: Console, session: Session, setup: _Setup) -> None:
    """The live view, drawn by a child process (devicectl/monitor/viewproc.py) that
    owns the terminal; this thread feeds it snapshots and carries out its keys."""
    ctl = session.controller
    view = ViewProcess(ViewOptions(
        f"devicectl · patient {setup.patient} · {setup.loaded.profile.name}"))
    try:
        while not session.wait(1 / VIEW_HZ):
            view.push(session)
            for request in view.requests():
                if request == "stop":
                    session.request_stop("aborted by the technician")
                elif request == "closed":
                    session.request_stop("the terminal closed")
                elif isinstance(request, Command):
                    cmd = request
                    if cmd is Command.RESUME and ctl.state is State.READY:
                        cmd = Command.START
                    session.submit(cmd)
            if not view.alive:
                session.request_stop("the terminal view ended")
    finally:
        view.close(ctl.status(session.now_us), session.drain_events())


class _Feed:
    """The plain output: event lines (or JSON records), and progress every 5 s of
    session time, from the session's snapshot (monitor/progress.py)."""

    def __init__(self, console: Console, as_json: bool, zone_map: ZoneMap) -> None:
        self.console = console
        self.as_json = as_json
        self.areas_mm2 = {z.id: z.area_mm2 for z in zone_map.zones}
        self.footprint_mm = 0.0

    def event(self, e: Any, t0_us: int) -> None:
        if self.as_json:
            _json_line(event_record(e, t0_us))
        elif not is_chatty(e):
            self.console.print(Text(event_line(e, t0_us), style="red" if e.safety else ""),
                               highlight=False, soft_wrap=True)

    def progress(self, session: Session) -> None:
        for now_us, status in session.drain_progress():
            record = progress_record(status, (now_us - session.t0_us) / 1e6,
                                     areas_mm2=self.areas_mm2, footprint_mm=self.footprint_mm)
            if record is None:
                continue
            if self.as_json:
                _json_line(record)
            else:
                self.console.print(Text(progress_line(record)), highlight=False,
                                   soft_wrap=True)


def _plain(console: Console, session: Session, feed: _Feed) -> None:
    """Without a terminal: one line per event, as the live log shows them (the
    many-a-minute holds and commands are in the record, not on the screen), and
    a progress line every 5 s of session time."""
    while True:
        done = session.wait(0.05)
        for e in session.drain_events():
            feed.event(e, session.t0_us)
        feed.progress(session)
        if done:
            return


def _summary(
    console: Console, session: Session, setup: _Setup, outcome: Outcome, db_path: Path
) -> None:
    ctl = session.controller
    status = ctl.status(session.now_us)
    table = Table(title=f"session {setup.session_id} · {outcome.value}", title_justify="left")
    from devicectl.dose import DOSE_COLUMNS, dose_cells

    for col in ("zone", *DOSE_COLUMNS, "strokes", "time", "over max"):
        table.add_column(col, justify="left" if col == "zone" else "right")
    for z in status.get("zones") or ():
        over = ctl.coverage.cells_over_max(z["zone_id"]) if ctl.coverage else 0
        table.add_row(
            plain(z["name"]),
            *dose_cells(z),
            str(z["strokes"]),
            clock(z.get("seconds")),
            str(over),
        )
    console.print(table)
    style = "bold green" if outcome is Outcome.COMPLETE else "bold red"
    _always(console, Text.assemble(
        (outcome.value.replace("_", " "), style),
        plain(f" · session id {setup.session_id} · details: devicectl sessions show "
              f"{setup.session_id} --db {db_path}"),
    ))
