"""Adjuncts and their timing around a session: what the technician tells the
patient, shown at the start, acknowledged at the end, printed on the report.

A profile lists each adjunct by name, or with its timing (`{name: prp, timing:
in_session}`). Applied in the session (PRP, triamcinolone) is a profile's
decision; a wait before a topical is the clinic's setting (--topical-wait-hours),
not a trial result: Malhotra 2020 applied minoxidil right after needling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

AdjunctName = Literal[
    "minoxidil", "finasteride", "dutasteride", "spironolactone", "latanoprost", "bimatoprost",
    "prp", "crp", "triamcinolone",
]
#: in_session: applied during the session onto the needled skin; wait: a topical
#: applied only after the clinic's wait; oral: taken by mouth, not timed to the session.
Timing = Literal["in_session", "wait", "oral"]

DEFAULT_TIMING: Final[dict[str, Timing]] = {
    "prp": "in_session",
    "crp": "in_session",
    "triamcinolone": "in_session",
    "minoxidil": "wait",
    "bimatoprost": "wait",
    "latanoprost": "wait",
    "finasteride": "oral",
    "dutasteride": "oral",
    "spironolactone": "oral",
}
_UPPER: Final = frozenset({"prp", "crp"})


class AdjunctUse(BaseModel):
    """An adjunct with the timing the profile sets for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: AdjunctName = Field(description="The adjunct, e.g. prp.")
    timing: Timing = Field(
        description="in_session (applied during the session), wait (a topical after the "
        "clinic's wait) or oral (not timed to the session)."
    )


def adjunct_entry(value: object) -> object:
    """A profile's entry as AdjunctUse data: a name gets its usual timing; names in any
    case. Anything else is left for the model to refuse, with its place."""
    if isinstance(value, str):
        name = value.lower()
        return {"name": name, "timing": DEFAULT_TIMING.get(name, "wait")}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        name = value["name"].lower()
        return {"timing": DEFAULT_TIMING.get(name, "wait"), **value, "name": name}
    return value


def display_name(name: str) -> str:
    return name.upper() if name in _UPPER else name


def timing_of(adjunct: str | AdjunctUse) -> tuple[str, Timing]:
    if isinstance(adjunct, AdjunctUse):
        return adjunct.name, adjunct.timing
    return adjunct, DEFAULT_TIMING.get(adjunct, "wait")


def adjunct_instructions(
    adjuncts: Sequence[str | AdjunctUse], clinic_wait_hours: float
) -> tuple[str, ...]:
    """The warning and one instruction per adjunct, as shown, acknowledged and printed."""
    if not adjuncts:
        return ()
    names = ", ".join(display_name(timing_of(a)[0]) for a in adjuncts)
    lines = [f"adjuncts ({names}): fresh micro-channels raise absorption and the risk of "
             "systemic side effects"]
    for adjunct in adjuncts:
        name, timing = timing_of(adjunct)
        shown = display_name(name)
        if timing == "in_session":
            lines.append(f"{shown}: applied in the session, onto the freshly needled scalp "
                         "(the profile's timing)")
        elif timing == "wait":
            lines.append(
                f"{shown}: wait {clinic_wait_hours:g} h after the session before applying it; "
                "this wait is the clinic's setting (--topical-wait-hours), not a trial result"
            )
        else:
            lines.append(f"{shown}: taken by mouth; the session does not change when")
    return tuple(lines)
