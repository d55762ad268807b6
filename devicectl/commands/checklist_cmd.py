"""`devicectl checklist`, and the eligibility gate of `devicectl run`: the
contraindication checklist answered (terminal or file), consent given, both
recorded in the session's log before the pen is started; any "yes", any item
unanswered, or no consent is a NO-GO naming why.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.text import Text

from devicectl.checklist import (
    Answer,
    Checklist,
    answer_text,
    answers_record,
    eligibility_problems,
    load_answers,
    load_checklist,
    template_text,
)
from devicectl.clock import monotonic_us
from devicectl.commands.run_signals import Interrupts, ask
from devicectl.errors import RefusedError
from devicectl.notes import add_note
from devicectl.plain import plain
from devicectl.store import EventRecord, Store

#: What the demo says instead of a person's answers: nobody is being treated.
SIMULATED: Final = "simulated for the demo: no patient, nobody answered"
#: The longest operator or clinician ID accepted.
STAFF_ID_MAX_CHARS: Final = 64


def register(sub: Any) -> None:
    p = sub.add_parser(
        "checklist",
        help="the contraindication checklist asked before every session",
        description="The contraindication checklist (profiles/checklist.yaml, clinic data). "
        "Any item answered yes, or left unanswered, refuses the session.",
    )
    actions = p.add_subparsers(dest="checklist_command", required=True, metavar="ACTION")
    t = actions.add_parser(
        "template",
        help="print the answers file for `run --checklist FILE`, every answer null",
    )
    t.add_argument("--items", type=Path, default=None, metavar="FILE",
                   help="the checklist (default: the shipped profiles/checklist.yaml)")
    t.set_defaults(func=template)
    s = actions.add_parser("show", help="the items, each with its source")
    s.add_argument("--items", type=Path, default=None, metavar="FILE",
                   help="the checklist (default: the shipped profiles/checklist.yaml)")
    s.set_defaults(func=show)


def template(args: argparse.Namespace) -> int:
    sys.stdout.write(template_text(load_checklist(args.items)))
    return 0


def show(args: argparse.Namespace) -> int:
    checklist = load_checklist(args.items)
    console = Console()
    console.print(f"{checklist.file} (sha256 {checklist.content_hash[:12]})", markup=False,
                  highlight=False)
    for item in checklist.items:
        console.print(plain(f"{item.id}: {item.question}"), highlight=False)
        console.print(plain(f"    sources: {'; '.join(item.sources)}"), highlight=False)
    return 0


def staff_id(text: str | None, option: str, who: str) -> str:
    """An operator's or clinician's ID, trimmed, or RefusedError saying what is missing."""
    value = (text or "").strip()
    if not value:
        raise RefusedError(f"a session needs {option} ID: {who} (recorded)")
    if len(value) > STAFF_ID_MAX_CHARS or not value.isprintable():
        raise RefusedError(
            f"{option} takes an ID of at most {STAFF_ID_MAX_CHARS} printable characters"
        )
    return value


@dataclass(frozen=True)
class GateInputs:
    """What the technician gave on the command line, read before any record is made."""

    checklist: Checklist
    #: answers from --checklist FILE, or None: ask in the terminal (or unanswered)
    answers: dict[str, Answer] | None
    consent: bool
    interactive: bool
    simulated: bool


def read_gate_inputs(args: argparse.Namespace, interactive: bool) -> GateInputs:
    """The checklist and the answers file: a malformed file stops here, before a record."""
    checklist = load_checklist(getattr(args, "checklist_items", None))
    simulated = bool(getattr(args, "simulated_answers", False))
    path: Path | None = getattr(args, "checklist", None)
    answers: dict[str, Answer] | None = None
    if simulated:
        answers = {item_id: False for item_id in checklist.ids}
    elif path is not None:
        answers = load_answers(path, checklist)
    return GateInputs(checklist, answers, bool(getattr(args, "consent", False)) or simulated,
                      interactive, simulated)


def eligibility_gate(
    console: Console, store: Store, session_id: int, inputs: GateInputs,
    shown: Sequence[str] = (), interrupts: Interrupts | None = None,
) -> list[str]:
    """Asks what the files did not answer, records the answers and the consent in the
    session's log with the warnings and adjunct instructions `shown`, and returns the
    NO-GO reasons (empty: go); a signal to `run` so far (`interrupts`) is one."""
    answers, how = _answers(console, inputs)
    consent_how = "--consent" if inputs.consent else "not given"
    consent = inputs.consent
    if inputs.simulated:
        consent_how = SIMULATED
    elif not consent and inputs.interactive:
        consent = _ask(console, "Has the patient given informed consent to this treatment today?")
        consent_how = "confirmed in the terminal" if consent else "not given in the terminal"
    consent_wall = _wall()
    reasons = eligibility_problems(inputs.checklist, answers)
    if not consent:
        reasons.append("the patient's informed consent was not given (--consent, or confirm "
                       "it in the terminal)")
    if interrupts is not None and interrupts.signal is not None:
        reasons.append(f"stopped by {interrupts.signal} before the start")
    events = [
        _event("CHECKLIST", f"checklist ({how}): " + ", ".join(
            f"{i}={answer_text(answers.get(i))}" for i in inputs.checklist.ids),
            answers_record(inputs.checklist, answers, how)),
        _event("CONSENT", f"consent {'given' if consent else 'NOT given'} ({consent_how}) "
               f"at {consent_wall}", {"given": consent, "how": consent_how, "at": consent_wall},
               wall=consent_wall),
    ]
    if shown:
        events.append(_event("INSTRUCTIONS", "warnings and adjunct instructions shown: "
                             + " | ".join(shown), {"lines": list(shown)}))
    if reasons:
        events.append(_event("GO_NO_GO", "no go: " + "; ".join(reasons),
                             {"reasons": reasons}, safety=True))
    store.append_events(session_id, events)
    return reasons


def acknowledge_adjuncts(
    console: Console, db_path: Path | str, session_id: int, instructions: Sequence[str],
    operator: str, given: bool, interactive: bool, simulated: bool = False,
) -> None:
    """At the end of a session: the adjunct instructions shown again, acknowledged (or
    not) by the operator, and recorded as a note of the session (notes.py)."""
    lines = list(instructions)
    if not lines:
        return
    console.print(Text("Adjunct instructions for the patient:", style="bold"))
    for line in lines:
        console.print(plain(f"  {line}"), soft_wrap=True)
    how = "--ack-adjuncts" if given else "no --ack-adjuncts, no terminal"
    if simulated:
        how = SIMULATED
    if not given and interactive:
        given = _ask(console, "Were these instructions given to the patient?")
        how = "confirmed in the terminal" if given else "not given in the terminal"
    text = ("adjunct instructions given to the patient" if given else
            "adjunct instructions NOT acknowledged") + f" ({how}): " + " | ".join(lines)
    with Store(db_path, create=False) as store:
        add_note(store.conn, session_id, wall=_wall(), text=text, adverse=None,
                 author=operator, where=store.path)
    if not given:
        console.print(Text("the adjunct instructions were not acknowledged; this is recorded",
                           style="bold red"))


def _answers(console: Console, inputs: GateInputs) -> tuple[dict[str, Answer], str]:
    if inputs.simulated:
        assert inputs.answers is not None
        return inputs.answers, SIMULATED
    if inputs.answers is not None:
        return inputs.answers, "from --checklist FILE"
    if not inputs.interactive:
        return {i: None for i in inputs.checklist.ids}, "not asked (no terminal, no --checklist)"
    console.print(Text("Contraindications: answer each question (y/n); any yes means "
                       "no treatment today.", style="bold"))
    answers: dict[str, Answer] = {}
    for item in inputs.checklist.items:
        answer = _ask_answer(console, item.question)
        answers[item.id] = answer
        if answer is None:  # interrupted: the rest stay unanswered
            break
    return {i: answers.get(i) for i in inputs.checklist.ids}, "in the terminal"


def _ask_answer(console: Console, question: str) -> Answer:
    while True:
        line = ask(lambda: console.input(plain(f"{question} [y/n] ")))
        if line is None:  # Ctrl-C or the end of input: no answer
            return None
        reply = line.strip().lower()
        if reply in ("y", "yes"):
            return True
        if reply in ("n", "no"):
            return False
        console.print(Text("answer y or n"))


def _ask(console: Console, question: str) -> bool:
    return _ask_answer(console, question) is True


def _wall() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _event(kind: str, text: str, data: dict[str, Any], *, wall: str | None = None,
           safety: bool = False) -> EventRecord:
    return EventRecord(t_us=monotonic_us(), wall=wall or _wall(), kind=kind,
                       text=text, zone_id=None, data=data, safety=safety)
