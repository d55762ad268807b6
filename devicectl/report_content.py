"""What a session report says, as plain blocks (headings, paragraphs, tables,
figures), built once from the records: report.py renders them as HTML and
report_pdf.py as A4 pages, so both carry the same content.

Text that came from people (patient reference, operator, notes, answers) is
kept as plain strings here; each renderer escapes it for its own medium.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devicectl.chain import ChainCheck
from devicectl.continuation import continued_by_text
from devicectl.errors import DevicectlError, StoreError
from devicectl.mapstyle import zone_words
from devicectl.note_anchor import AnchorCheck
from devicectl.notes import Note
from devicectl.records import EventRecord, SessionRecord
from devicectl.safety import DEPTH_CAP_UM
from devicectl.store import parse_wall
from devicectl.zones import ZoneMap

#: Routine events counted, not listed: there are thousands in a session.
ROUTINE_KINDS = frozenset({"SENT", "COVERAGE_HOLD", "RESUMED_STAMPING", "PEN_EVENT", "RESEND",
                           "SAMPLE"})
#: Events that are faults or safety stops, listed in their own section.
FAULT_KINDS = frozenset({"PEN_FAULT", "SAFETY_STOP", "ESTOP", "LINK_LOST"})
#: The clinic's gate, listed in its own section.
GATE_KINDS = frozenset({"CHECKLIST", "CONSENT", "OPERATOR", "OVERRIDE", "INSTRUCTIONS"})
ZONE_HEAD = ("zone", "depth mm", "rate Hz", "coverage reached", "done", "strokes", "time",
             "spots at maximum", "punctures", "punctures per cm², mean (most)")
EVENT_HEAD = ("time", "kind", "zone", "text")


@dataclass(frozen=True, slots=True)
class Heading:
    text: str


@dataclass(frozen=True, slots=True)
class Para:
    text: str
    #: "note" (quiet), "warn", "bad" or "" (plain)
    style: str = ""


@dataclass(frozen=True, slots=True)
class Grid:
    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    cls: str
    #: the column that takes the rest of the width (long text), or None
    wide: int | None = None


@dataclass(frozen=True, slots=True)
class FigureRef:
    name: str
    alt: str


Block = Heading | Para | Grid | FigureRef


@dataclass(frozen=True)
class ReportContent:
    title: str
    header: tuple[tuple[str, str], ...]
    blocks: tuple[Block, ...]
    chain_head: str
    #: short lines repeated at the top of every PDF page
    running: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def since_start_s(rec: SessionRecord, event: EventRecord) -> float:
    """Seconds from the session's start; wall time, since a resumed session restarts t_us."""
    try:
        return (parse_wall(event.wall) - parse_wall(rec.started_at)).total_seconds()
    except StoreError:
        return event.t_us / 1e6


def clock(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60.0)
    return f"{int(minutes):02d}:{secs:04.1f}"


def fw_text(v: int | None) -> str:
    return "?" if v is None else f"{v >> 8}.{v & 0xFF}"


def profile_warnings(rec: SessionRecord) -> list[str]:
    """The warnings the technician was shown at the start (the stored profile's)."""
    from devicectl.profile import load_profile_text

    try:
        return list(load_profile_text(rec.profile_text, f"session {rec.id} profile").warnings)
    except DevicectlError as exc:
        return [f"the stored profile could not be read again: {exc}"]


def cartridges_text(rec: SessionRecord, events: Sequence[EventRecord]) -> str:
    """Every cartridge the session's pen held, in order (a session resumed with a new
    one used both; each DEVICE record names the one in the pen), else the recorded one."""
    fitted = [e.data["cartridge_id"] for e in events
              if e.kind == "DEVICE" and isinstance(e.data.get("cartridge_id"), int)]
    if rec.cartridge_id is not None:
        fitted.append(rec.cartridge_id)
    ids = list(dict.fromkeys(int(c) for c in fitted))
    return ", then ".join(str(c) for c in ids) or "?"


def operators_text(rec: SessionRecord, events: Sequence[EventRecord]) -> str | None:
    """The session's operator, then whoever resumed it (OPERATOR records), in order;
    None when none is recorded."""
    resumed = [str(e.data["operator"]) for e in events
               if e.kind == "OPERATOR" and isinstance(e.data.get("operator"), str)]
    ids = list(dict.fromkeys(([rec.operator] if rec.operator else []) + resumed))
    return ", then ".join(ids) or None


def continued_id(events: Sequence[EventRecord]) -> int | None:
    """The session this one continues (its first record, CONTINUES), or None."""
    first = events[0] if events else None
    if first is not None and first.kind == "CONTINUES":
        sid = first.data.get("session_id")
        return sid if isinstance(sid, int) else None
    return None


def _needle_count(events: Sequence[EventRecord]) -> int | None:
    for e in events:
        if e.kind == "DEVICE" and isinstance(e.data.get("needle_count"), int):
            return int(e.data["needle_count"])
    return None


def _stored_zones(rec: SessionRecord) -> list[Any]:
    """The stored profile's zones (ZoneTargets), or none if it cannot be read again."""
    from devicectl.profile import load_profile_text

    try:
        return list(load_profile_text(rec.profile_text, f"session {rec.id} profile").profile.zones)
    except DevicectlError:
        return []


def grid_dose(rec: SessionRecord, coverage: bytes | None) -> dict[int, dict[str, Any]]:
    """Each zone's dose measures on the saved grid (dose.zone_dose_stats); none without
    one, or for a pen without position (its grid holds no dose)."""
    from devicectl.dose import zone_dose_stats

    if rec.position_mode != "tracked" or not coverage:
        return {}
    try:
        return zone_dose_stats(coverage)
    except DevicectlError:
        return {}  # a grid saved before dose was recorded


def zone_rows(rec: SessionRecord, events: Sequence[EventRecord], zone_map: ZoneMap | None,
              stats: Mapping[int, Mapping[str, Any]] | None = None) -> list[tuple[str, ...]]:
    """The zones table; punctures per cm² is the zone's mean (and its most-dosed spot's)
    on the saved grid (`stats`: grid_dose), or without position its punctures over its area."""
    needles = _needle_count(events)
    areas = {z.name: z.area_mm2 for z in zone_map.zones} if zone_map is not None else {}
    if zone_map is not None and "patches" in rec.profile_text:  # treated as patches
        from devicectl.patches import patch_area_mm2

        areas |= {z.zone: patch_area_mm2(zone_map, z.zone, z.patch_shapes)
                  for z in _stored_zones(rec) if z.patches and z.zone in zone_map.names}
    stats = stats or {}
    rows: list[tuple[str, ...]] = []
    for z in rec.zones:
        punctures = z.strokes * needles if needles is not None else None
        s = stats.get(z.zone_id)
        area_cm2 = areas.get(z.name, 0.0) / 100.0
        if s is not None and s["cells"]:  # the dose the saved map holds, spot by spot
            density = (f"{s['punctures_per_cm2_mean']:.0f} "
                       f"(most {s['punctures_per_cm2_max']:.0f})")
        elif punctures is not None and area_cm2 > 0 and not stats:  # no position: no map
            density = f"{punctures / area_cm2:.0f} (estimated)"
        else:
            density = "?"
        rows.append((
            z.name, f"{z.depth_um / 1000:.2f}", f"{z.rate_dhz / 10:.1f}",
            zone_words(z.fraction, z.target_fraction),
            "yes" if z.done else "no", str(z.strokes), clock(z.seconds), str(z.cells_at_max),
            "?" if punctures is None else str(punctures), density,
        ))
    return rows


def stored_patches(rec: SessionRecord) -> dict[str, tuple[Any, ...]]:
    """Zone name -> the patches (patches.Patch) the session's profile treated."""
    if "patches" not in rec.profile_text:
        return {}
    return {z.zone: z.patch_shapes for z in _stored_zones(rec) if z.patches}


def _patch_rows(rec: SessionRecord, zone_map: ZoneMap | None) -> list[tuple[str, ...]]:
    if zone_map is None or "patches" not in rec.profile_text:
        return []
    from devicectl.patches import patch_rows

    return patch_rows(_stored_zones(rec), zone_map)


def is_estop(e: EventRecord) -> bool:
    return e.kind == "ESTOP" or (e.kind == "SENT" and e.data.get("type") == "ESTOP") or (
        e.kind == "PEN_FAULT" and "ESTOP" in e.text.upper())


def estop_count(events: Sequence[EventRecord]) -> int:
    """The emergency stops: each ESTOP frame the host sent (its ESTOP event is the same
    stop, with its reason; records without SENT count those) and each the pen reported."""
    sent = sum(1 for e in events if e.kind == "SENT" and e.data.get("type") == "ESTOP")
    decided = sum(1 for e in events if e.kind == "ESTOP")
    pen = sum(1 for e in events if e.kind == "PEN_FAULT" and "ESTOP" in e.text.upper())
    return max(sent, decided) + pen


def _event_rows(rec: SessionRecord, evs: Sequence[EventRecord]) -> tuple[tuple[str, ...], ...]:
    return tuple((clock(since_start_s(rec, e)), e.kind, "" if e.zone_id is None else
                  str(e.zone_id), e.text) for e in evs)


def _gate_blocks(events: Sequence[EventRecord]) -> list[Block]:
    blocks: list[Block] = [Heading("Eligibility and consent")]
    checklists = [e for e in events if e.kind == "CHECKLIST"]
    if not checklists:
        blocks.append(Para("no contraindication checklist recorded (a session from before "
                           "it was asked)", "note"))
    for e in checklists:
        answers = e.data.get("answers") or {}
        rows = tuple(
            (str(v.get("question", k)), str(v.get("answer", "?")))
            for k, v in answers.items() if isinstance(v, dict)
        )
        blocks.append(Para(f"Contraindication checklist ({e.data.get('how', '?')}; "
                           f"{e.data.get('checklist', '?')}, sha256 "
                           f"{str(e.data.get('checklist_hash', '?'))[:12]}):"))
        blocks.append(Grid(("question", "answer"), rows, "checklist", wide=0))
    consents = [e for e in events if e.kind == "CONSENT"]
    for e in consents:
        given = "given" if e.data.get("given") else "NOT given"
        blocks.append(Para(f"Consent {given} at {e.data.get('at', e.wall)} "
                           f"({e.data.get('how', '?')}).", "" if e.data.get("given") else "bad"))
    if not consents:
        blocks.append(Para("no consent recorded (a session from before it was asked)", "note"))
    for e in events:
        if e.kind == "OPERATOR":
            blocks.append(Para(e.text))
        elif e.kind == "OVERRIDE":
            blocks.append(Para(f"Interval override by {e.data.get('clinician', '?')}: "
                               f"{e.data.get('reason', '?')} ({e.text})", "warn"))
    return blocks


def build_content(
    rec: SessionRecord,
    events: Sequence[EventRecord],
    notes: Sequence[Note],
    zone_map: ZoneMap | None,
    chain: ChainCheck,
    samples_recorded: bool,
    no_samples_text: str,
    coverage: bytes | None = None,
    running: bool = False,
    anchors: AnchorCheck | None = None,
    continued_by: int | None = None,
) -> ReportContent:
    """`running`: the session has no outcome because its run holds its lock now
    (liveness.py), not because it was interrupted. `continued_by`: the session that
    continues this one (continuation.continued_by)."""
    outcome = rec.outcome or ("running" if running else "interrupted")
    # records that fail `sessions verify` say so first: in the title, on every page
    broken = chain.problem is not None or (anchors is not None and anchors.problem is not None)
    failed = " — RECORDS FAIL VERIFICATION" if broken else ""
    estops = estop_count(events)
    head_text = chain.head or "none (the chain is broken or the session predates it)"
    continues = continued_id(events)
    header = (
        ("session", str(rec.id)),
        *((("continues", f"session {continues}: its strokes, punctures and time are included "
                         "here (its grid was restored)"),) if continues is not None else ()),
        *((("continued by", continued_by_text(continued_by)),)
          if continued_by is not None else ()),
        ("patient ref", rec.patient_ref),
        ("operator", operators_text(rec, events) or "? (not recorded)"),
        ("profile", rec.profile_name),
        ("profile hash", rec.profile_hash),
        ("pen", f"serial {rec.device_serial if rec.device_serial is not None else '?'}, "
                f"firmware {fw_text(rec.fw_version)}"),
        ("cartridge", cartridges_text(rec, events)),
        ("position", rec.position_mode or "?"),
        ("started", rec.started_at),
        ("ended", rec.ended_at or ("— (running: this report holds the records so far)"
                                   if running else "— (interrupted: the session can be resumed)")),
        ("outcome", outcome + (f" after {estops} ESTOP{'s' if estops != 1 else ''}"
                               if estops else "")),
        ("depth cap", f"{DEPTH_CAP_UM / 1000:.2f} mm"),
        ("records", "simulated (no patient)" if rec.simulated else
         "clinical" if rec.simulated is False else "?"),
    )
    shown = [str(line) for e in events if e.kind == "INSTRUCTIONS"
             for line in e.data.get("lines", ())]
    warnings = (shown or profile_warnings(rec)) + [e.text for e in events if e.kind == "WARNING"]
    faults = [e for e in events if e.kind in FAULT_KINDS or is_estop(e)
              or (e.safety and e.kind not in ("SENT",) and e.kind not in GATE_KINDS)]
    listed = [e for e in events if e.kind not in ROUTINE_KINDS]
    routine = Counter(e.kind for e in events if e.kind in ROUTINE_KINDS)
    blocks: list[Block] = [] if chain.problem is None else [Para(
        f"These records FAIL `devicectl sessions verify {rec.id}`: {chain.problem}. "
        "Nothing below can be taken as what happened until the records are checked.", "bad")]
    blocks.append(Heading("Zones"))
    stats = grid_dose(rec, coverage)
    blocks.append(Grid(ZONE_HEAD, tuple(zone_rows(rec, events, zone_map, stats)), "zones")
                  if rec.zones else Para("no zone results recorded", "note"))
    patches = _patch_rows(rec, zone_map)
    if patches:
        from devicectl.patches import PATCH_HEAD

        blocks += [Heading("Patches treated"), Grid(PATCH_HEAD, tuple(patches), "patches")]
    blocks += _gate_blocks(events)
    blocks.append(Heading("Warnings and adjunct instructions"))
    blocks += [Para(w, "warn") for w in warnings] or [Para("none", "note")]
    blocks.append(Heading("Faults and safety stops"))
    overs = [(z.name, stats[z.zone_id]) for z in rec.zones
             if stats.get(z.zone_id, {}).get("cells_over_max")]
    blocks += [Para(f"Zone {name}: {s['cells_over_max']} spots of the saved map over the "
                    "zone's maximum dose (the most: "
                    f"{s['punctures_per_cm2_max']:.0f} punctures per cm²).", "bad")
               for name, s in overs]
    if faults:
        blocks.append(Para(f"ESTOPs: {estops} (each listed below)",
                           "bad" if estops else ""))
        blocks.append(Grid(("time", "kind", "zone", "what happened"), _event_rows(rec, faults),
                           "fault", wide=3))
    elif not overs:
        blocks.append(Para("none", "note"))
    blocks.append(Heading("Adverse events and notes"))
    if notes:
        blocks.append(Grid(("recorded", "kind", "by", "text"), tuple(
            (n.wall, n.label, n.author or "?", n.text) for n in notes), "notes", wide=3))
    else:
        blocks.append(Para("none recorded", "note"))
    blocks.append(Heading("Scalp map"))
    blocks.append(FigureRef("map", "scalp map with the final coverage of each zone"))
    blocks.append(Heading("Depth and stamp rate"))
    if not samples_recorded:
        blocks.append(Para(no_samples_text, "note"))
    blocks.append(FigureRef("depth", "depth over time with the cap line"))
    blocks.append(FigureRef("rate", "stamp rate over time"))
    blocks.append(Heading("Events"))
    blocks.append(Grid(EVENT_HEAD, _event_rows(rec, listed), "events", wide=3))
    blocks.append(Para("Routine events counted, not listed: " + (", ".join(
        f"{k} {n}" for k, n in sorted(routine.items())) or "none") + ".", "note"))
    blocks.append(Heading("Record integrity"))
    if chain.problem is not None:
        blocks.append(Para(f"The hash chain is BROKEN: {chain.problem}", "bad"))
    elif chain.unchained:
        blocks.append(Para("This session was recorded before the records kept a hash chain.",
                           "note"))
    else:
        blocks.append(Para(f"Hash chain head (SHA-256, {chain.events} events"
                           f"{', closed' if chain.closed else ', open'}): {head_text}. "
                           "`devicectl sessions verify` recomputes it from the records."))
    if anchors is not None and anchors.problem is not None:
        blocks.append(Para(f"The chain of notes is BROKEN: {anchors.problem}", "bad"))
    elif anchors is not None and anchors.head is not None:
        blocks.append(Para(f"Notes' anchor head across the records when this was printed "
                           f"({anchors.anchored} notes): {anchors.head}. A note removed "
                           "since changes it."))
    return ReportContent(
        title=f"Treatment session {rec.id} — {outcome}{failed}",
        header=header,
        blocks=tuple(blocks),
        chain_head=head_text,
        running=f"session {rec.id} · patient {rec.patient_ref} · {rec.started_at[:10]}"
                + failed.replace(" — ", " · "),
    )
