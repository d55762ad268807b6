"""The records' side of `devicectl run`: which session a run records into (new,
resumed, or continuing one that lost its link), and what the records say about
the cartridge, the patient's intervals and the zones already done."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devicectl.clock import monotonic_us
from devicectl.controller_core import StartFacts
from devicectl.errors import DevicectlError, RefusedError, StoreError
from devicectl.liveness import is_running
from devicectl.patients import patient_ref
from devicectl.profile import LoadedProfile, load_profile, load_profile_text
from devicectl.safety import INTERVAL_DEPTH_UM
from devicectl.store import EventRecord, PatientBusyError, SessionRecord, Store


@dataclass
class Setup:
    loaded: LoadedProfile
    patient: str
    session_id: int
    resumed: bool
    #: the closed session (link lost) that this new one continues
    continues: int | None = None


#: Sessions that ended this way can be continued (in a new session that says so).
CONTINUABLE = frozenset({"link_lost"})


def load_session(args: argparse.Namespace, store: Store,
          db_path: Path | str) -> tuple[LoadedProfile, str, int | None]:
    """The profile and patient of a new session, or those of the one to resume."""
    if args.resume is not None:
        record = store.session(args.resume)
        if record.outcome is None and is_running(db_path, record.id):
            raise RefusedError(
                f"session {record.id} is still running in another process; it cannot be "
                "resumed while it runs"
            )
        if record.outcome is not None and record.outcome not in CONTINUABLE:
            raise RefusedError(
                f"session {record.id} ended ({record.outcome}); only an interrupted session, "
                "or one that lost its link, can be resumed"
            )
        later = continued_in(store, record)
        if later is not None:
            raise RefusedError(
                f"session {record.id} was already continued in session {later}; "
                f"resume that one if it is unfinished (`devicectl sessions show {later}`)"
            )
        loaded = load_profile_text(record.profile_text, f"session {record.id} profile",
                                   topical_wait_hours=args.topical_wait_hours)
        if loaded.content_hash != record.profile_hash:
            raise RefusedError(f"session {record.id}'s stored profile does not match its hash")
        _same_as_resumed(args, record.id, record.patient_ref, record.profile_hash)
        return loaded, record.patient_ref, record.id
    if args.profile is None or not args.patient:
        raise DevicectlError("a new session needs --profile FILE and --patient REF")
    return (load_profile(args.profile, topical_wait_hours=args.topical_wait_hours),
            patient_ref(args.patient), None)




def _same_as_resumed(args: argparse.Namespace, session_id: int, patient: str,
                     profile_hash: str) -> None:
    """A --patient or --profile given with --resume must be the session's own: it
    continues the patient and profile it started with, never others asked for."""
    if args.patient and patient_ref(args.patient) != patient:
        raise RefusedError(
            f"session {session_id} is of patient {patient}, not {patient_ref(args.patient)} "
            "(--patient): --resume continues the session's own patient; leave --patient out, "
            "or start a new session"
        )
    if args.profile is not None:
        given = load_profile(args.profile, topical_wait_hours=args.topical_wait_hours)
        if given.content_hash != profile_hash:
            raise RefusedError(
                f"session {session_id} runs another profile than {args.profile} (--profile): "
                "--resume continues the session's own profile; leave --profile out, or start "
                "a new session"
            )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def setup_session(
    store: Store, loaded: LoadedProfile, patient: str, resumed: SessionRecord | None,
    operator: str, simulated: bool, room: str | None = None,
) -> Setup:
    """The session to record into: the interrupted one itself (still open), or a
    new one, which for a closed session (link lost) continues it."""
    if resumed is not None and resumed.outcome is None:
        store.append_events(resumed.id, [EventRecord(
            monotonic_us(), now_iso(), "OPERATOR",
            f"resumed by operator {operator}", None, {"operator": operator})])
        return Setup(loaded, patient, resumed.id, resumed=True)
    try:
        session_id = store.create_session(
            patient_ref=patient,
            profile_name=loaded.profile.name,
            profile_hash=loaded.content_hash,
            profile_text=loaded.text,
            started_at=now_iso(),
            operator=operator,
            simulated=simulated,
            room=room,
            continues=resumed.id if resumed is not None else None,
        )
    except PatientBusyError as exc:  # another room has them: kept apart from the sessions
        with contextlib.suppress(StoreError):
            store.record_refusal(reason=str(exc), wall=now_iso(), patient_ref=patient,
                                 room=room, operator=operator)
        raise
    if resumed is not None:  # its first record says so too, for people to read
        store.append_events(session_id, [continues_event(resumed.id, resumed)])
        return Setup(loaded, patient, session_id, resumed=True, continues=resumed.id)
    return Setup(loaded, patient, session_id, resumed=False)


def first_unfinished_zone(loaded: LoadedProfile, zones: Any) -> int:
    """The index, in the profile's order, of the first zone the records do not show done."""
    done = {z.name for z in zones if z.done}
    names = [z.zone for z in loaded.profile.zones]
    return next((i for i, name in enumerate(names) if name not in done), len(names))


def start_facts(
    store: Store, setup: Setup, resumed: SessionRecord | None, args: argparse.Namespace,
    zone_names: Mapping[int, str],
) -> StartFacts:
    """What the records say about this cartridge and this patient's zones.

    A resumed session's own cartridge and strokes are not "earlier": they are
    left out, and the cartridge may have delivered stamps in it. A zone that took
    spill from an earlier session (the footprint over its border) counts as treated
    then, at the spill's depth.
    """
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    own = resumed.id if resumed is not None else None

    def days(min_depth_um: int) -> dict[str, float]:
        treated = store.days_since_deep_treatment(
            setup.patient, now, min_depth_um, exclude_session=own)
        spilled = store.days_since_spill(
            setup.patient, now, min_depth_um, zone_names, exclude_session=own)
        for name, d in spilled.items():
            treated[name] = min(d, treated.get(name, d))
        return treated

    return StartFacts(
        patient_ref=setup.patient,
        used_cartridge_ids=store.used_cartridge_ids(exclude_session=own),
        days_since_deep_treatment=days(INTERVAL_DEPTH_UM),
        interval_override_reason=args.override_interval,
        resumed_cartridge_id=resumed.cartridge_id if resumed is not None else None,
        days_since_treatment=days(0),
        interval_override_clinician=args.clinician,
    )


def coverage_to_restore(store: Store, record: SessionRecord) -> bytes | None:
    """The coverage a resumed session starts from: its own saved one, else that of the
    latest session it continues that saved one. A continuation's coverage carries the
    whole treatment's strokes, which the interval rules then leave out (start_facts);
    one interrupted before its first write saved none."""
    seen: set[int] = set()
    current: SessionRecord | None = record
    while current is not None and current.id not in seen:
        state = store.coverage_state(current.id)
        if state is not None:
            return state
        seen.add(current.id)
        current = None if current.continues is None else store.session(current.continues)
    return None


def continued_in(store: Store, record: SessionRecord) -> int | None:
    """The later session that continues `record`, as the records link them: not one
    that ended refused (it sent no START, the records check it: devicectl/continuation.py),
    so the treatment is resumed again once the cause is fixed."""
    if record.outcome is None:
        return None
    return next((later.id for later in store.sessions(limit=1_000)
                 if later.continues == record.id and later.outcome != "refused"), None)


def continues_event(old_id: int, old: SessionRecord | None) -> EventRecord:
    """The first record of a session that continues one which lost its link."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    done = [z.name for z in old.zones if z.done] if old is not None else []
    return EventRecord(
        t_us=0, wall=now, kind="CONTINUES",
        text=f"continues session {old_id} ({old.outcome if old else '?'}), with its coverage;"
        f" zones already done: {', '.join(done) or 'none'}",
        zone_id=None, data={"session_id": old_id}, safety=False)
