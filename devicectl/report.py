"""`devicectl sessions report ID`: a session's report for the patient's record.

A self-contained HTML file (figures inlined), the same figures as PNG files,
and a PDF, all from the records alone: works for completed, aborted and
interrupted sessions, and for sessions recorded before SAMPLE events existed.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicectl.errors import DevicectlError, StoreError
from devicectl.records import EventRecord, SessionRecord
from devicectl.report_figures import (
    NO_SAMPLES,
    Sample,
    coverage_map,
    depth_over_time,
    rate_over_time,
)
from devicectl.safety import DEPTH_CAP_UM
from devicectl.store import Store, parse_wall
from devicectl.zones import ZoneMap, load_zone_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Routine events counted, not listed: there are thousands in a session.
ROUTINE_KINDS = frozenset({"SENT", "COVERAGE_HOLD", "RESUMED_STAMPING", "PEN_EVENT", "RESEND",
                           "SAMPLE"})
#: Events that are faults or safety stops, listed in their own section.
FAULT_KINDS = frozenset({"PEN_FAULT", "SAFETY_STOP", "ESTOP", "LINK_LOST"})
FIGURES = ("map", "depth", "rate")


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pdf: Path
    figures: tuple[Path, ...]


def since_start_s(rec: SessionRecord, event: EventRecord) -> float:
    """Seconds from the session's start; wall time, since a resumed session restarts t_us."""
    try:
        return (parse_wall(event.wall) - parse_wall(rec.started_at)).total_seconds()
    except StoreError:
        return event.t_us / 1e6


def samples_of(rec: SessionRecord, events: Sequence[EventRecord]) -> list[Sample]:
    def num(v: Any) -> int | None:
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    return [
        Sample(
            t_s=since_start_s(rec, e),
            depth_cmd_um=num(e.data.get("depth_cmd_um")),
            depth_meas_um=num(e.data.get("depth_meas_um")),
            rate_meas_dhz=num(e.data.get("rate_meas_dhz")),
        )
        for e in events
        if e.kind == "SAMPLE"
    ]


def profile_warnings(rec: SessionRecord) -> list[str]:
    """The warnings the technician was shown at the start (the stored profile's)."""
    from devicectl.profile import load_profile_text

    try:
        return list(load_profile_text(rec.profile_text, f"session {rec.id} profile").warnings)
    except DevicectlError as exc:
        return [f"the stored profile could not be read again: {exc}"]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60.0)
    return f"{int(minutes):02d}:{secs:04.1f}"


def _fw(v: int | None) -> str:
    return "?" if v is None else f"{v >> 8}.{v & 0xFF}"


def _rows(rows: Sequence[Sequence[object]]) -> str:
    return "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{_rows(rows)}</tbody></table>'


def zone_rows(rec: SessionRecord) -> list[list[object]]:
    return [
        [
            z.name,
            f"{z.depth_um / 1000:.2f}",
            f"{z.rate_dhz / 10:.1f}",
            f"{100 * z.fraction:.0f} % of {100 * z.target_fraction:.0f} %",
            "yes" if z.done else "no",
            z.strokes,
            _clock(z.seconds),
            z.cells_at_max,
        ]
        for z in rec.zones
    ]


ZONE_HEAD = ("zone", "depth mm", "rate Hz", "coverage reached", "done", "strokes", "time",
             "spots at maximum")
STYLE = """body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f2f2f2}.outcome{font-weight:700}
.fault td{color:#a00}.warn li{color:#8a5a00}img{max-width:100%}.note{color:#666}"""


def render_html(
    rec: SessionRecord,
    events: Sequence[EventRecord],
    figures: dict[str, bytes],
    samples: Sequence[Sample],
) -> str:
    """The report as one HTML document; figures inlined as data URLs (no external files)."""
    outcome = rec.outcome or "interrupted"
    head = [
        ("session", rec.id),
        ("patient ref", rec.patient_ref),
        ("profile", rec.profile_name),
        ("profile hash", rec.profile_hash),
        ("device", f"serial {rec.device_serial if rec.device_serial is not None else '?'}, "
                   f"firmware {_fw(rec.fw_version)}"),
        ("cartridge", rec.cartridge_id if rec.cartridge_id is not None else "?"),
        ("position", rec.position_mode or "?"),
        ("started", rec.started_at),
        ("ended", rec.ended_at or "— (interrupted: the session can be resumed)"),
        ("outcome", outcome),
        ("depth cap", f"{DEPTH_CAP_UM / 1000:.2f} mm"),
    ]
    warnings = profile_warnings(rec) + [e.text for e in events if e.kind == "WARNING"]
    faults = [e for e in events if e.kind in FAULT_KINDS or (e.safety and e.kind != "SENT")]
    listed = [e for e in events if e.kind not in ROUTINE_KINDS]
    routine = Counter(e.kind for e in events if e.kind in ROUTINE_KINDS)

    def ev_rows(evs: Sequence[EventRecord]) -> list[list[object]]:
        return [[_clock(since_start_s(rec, e)), e.kind, "" if e.zone_id is None else e.zone_id,
                 e.text] for e in evs]

    def img(name: str, alt: str) -> str:
        data = base64.b64encode(figures[name]).decode("ascii")
        return f'<img id="fig-{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Session {rec.id} report</title><style>{STYLE}</style></head><body>",
        f"<h1>Treatment session {rec.id} — <span class='outcome'>{html.escape(outcome)}</span>"
        "</h1>",
        _table(("", ""), head, "header"),
        "<h2>Zones</h2>",
        _table(ZONE_HEAD, zone_rows(rec), "zones") if rec.zones else
        "<p class='note'>no zone results recorded</p>",
        img("map", "scalp map with the final coverage of each zone"),
        "<h2>Depth and stamp rate</h2>",
        "" if samples else f"<p class='note' id='no-samples'>{NO_SAMPLES}</p>",
        img("depth", "depth over time with the cap line"),
        img("rate", "stamp rate over time"),
        "<h2>Warnings shown</h2>",
        "<ul class='warn'>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
        if warnings else "<p class='note'>none</p>",
        "<h2>Faults and safety stops</h2>",
        _table(("time", "kind", "zone", "what happened"), ev_rows(faults), "fault")
        if faults else "<p class='note'>none</p>",
        "<h2>Events</h2>",
        _table(("time", "kind", "zone", "text"), ev_rows(listed), "events"),
        "<p class='note'>Routine events counted, not listed: "
        + (", ".join(f"{k} {n}" for k, n in sorted(routine.items())) or "none") + ".</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _pdf(path: Path, rec: SessionRecord, figs: dict[str, Figure]) -> None:
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    cover = Figure(figsize=(8.27, 11.69))
    lines = [
        f"Treatment session {rec.id} — {rec.outcome or 'interrupted'}",
        f"patient ref {rec.patient_ref} · profile {rec.profile_name}",
        f"profile hash {rec.profile_hash}",
        f"device serial {rec.device_serial} · firmware {_fw(rec.fw_version)} · "
        f"cartridge {rec.cartridge_id}",
        f"started {rec.started_at} · ended {rec.ended_at or '— (interrupted)'}",
        "",
        "   ".join(ZONE_HEAD),
        *("   ".join(str(c) for c in row) for row in zone_rows(rec)),
    ]
    cover.text(0.06, 0.95, "\n".join(lines), va="top", family="monospace", fontsize=7.5)
    with PdfPages(path) as pdf:
        pdf.savefig(cover)
        for name in FIGURES:
            pdf.savefig(figs[name])


def write_report(
    db_path: Path, session_id: int, out_dir: Path, zone_map: ZoneMap | None = None
) -> ReportFiles:
    """Write report.html, report.pdf and the PNG figures of one session into out_dir."""
    if not db_path.exists():
        raise StoreError(f"no session {session_id} in {db_path}: no records yet there")
    with Store(db_path, create=False) as store:
        rec = store.session(session_id)
        events = store.events(session_id)
    zone_map = zone_map or load_zone_map()
    samples = samples_of(rec, events)
    figs = {
        "map": coverage_map(zone_map, rec.zones, f"Session {rec.id}: final coverage per zone"),
        "depth": depth_over_time(samples),
        "rate": rate_over_time(samples),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        pngs = {name: _png(fig) for name, fig in figs.items()}
        paths = []
        for name, data in pngs.items():
            p = out_dir / f"session-{rec.id}-{name}.png"
            p.write_bytes(data)
            paths.append(p)
        html_path = out_dir / f"session-{rec.id}-report.html"
        html_path.write_text(render_html(rec, events, pngs, samples), encoding="utf-8")
        pdf_path = out_dir / f"session-{rec.id}-report.pdf"
        _pdf(pdf_path, rec, figs)
    except OSError as exc:
        raise DevicectlError(f"cannot write the report to {out_dir}: {exc.strerror}") from exc
    return ReportFiles(html_path, pdf_path, tuple(paths))
