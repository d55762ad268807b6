"""`devicectl sessions report ID`: a session's report for the patient's record.

A self-contained HTML file (figures inlined), the same figures as PNG files,
and an A4 PDF with the same content (report_content.py builds it once), all
from the records alone: works for completed, aborted and interrupted sessions,
and for sessions recorded before SAMPLE events existed.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicectl.chain import verify_session
from devicectl.continuation import continued_by
from devicectl.errors import DevicectlError, StoreError
from devicectl.note_anchor import verify_anchors
from devicectl.notes import notes_of
from devicectl.records import EventRecord, SessionRecord
from devicectl.report_content import (
    Grid,
    Heading,
    Para,
    ReportContent,
    build_content,
    since_start_s,
    stored_patches,
)
from devicectl.report_figures import (
    NO_SAMPLES,
    Sample,
    coverage_map,
    depth_over_time,
    rate_over_time,
)
from devicectl.report_pdf import write_pdf
from devicectl.store import Store
from devicectl.zones import ZoneMap, load_zone_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURES = ("map", "depth", "rate")
#: Figures are rendered at this resolution: sharp when printed on A4.
FIGURE_DPI = 200


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pdf: Path
    figures: tuple[Path, ...]


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


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    return buf.getvalue()


def _rows(rows: Sequence[Sequence[object]]) -> str:
    return "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{_rows(rows)}</tbody></table>'


STYLE = """body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f2f2f2}.outcome{font-weight:700}
.fault td,.bad{color:#a00}.bad{font-weight:700}.warn li{color:#8a5a00}img{max-width:100%}
.note{color:#666}"""


def render_html(content: ReportContent, figures: dict[str, bytes]) -> str:
    """The report as one HTML document; figures inlined as data URLs (no external files)."""

    def img(name: str, alt: str) -> str:
        data = base64.b64encode(figures[name]).decode("ascii")
        return f'<img id="fig-{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(content.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(content.title)}</h1>",
        _table(("", ""), content.header, "header"),
    ]
    for block in content.blocks:
        if isinstance(block, Heading):
            parts.append(f"<h2>{html.escape(block.text)}</h2>")
        elif isinstance(block, Para):
            cls = f" class='{block.style}'" if block.style else ""
            parts.append(f"<p{cls}>{html.escape(block.text)}</p>")
        elif isinstance(block, Grid):
            parts.append(_table(block.head, block.rows, block.cls))
        else:
            parts.append(img(block.name, block.alt))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    db_path: Path | str, session_id: int, out_dir: Path, zone_map: ZoneMap | None = None
) -> ReportFiles:
    """Write report.html, report.pdf (A4) and the PNG figures of one session into out_dir;
    the records an SQLite file or the clinic's postgresql:// URL."""
    if isinstance(db_path, Path) and not db_path.exists():
        raise StoreError(f"no session {session_id} in {db_path}: no records yet there")
    with Store(db_path, create=False, read_only=True) as store:
        rec = store.session(session_id)
        events = store.events(session_id)
        notes = notes_of(store.conn, [session_id])[session_id]
        chain = verify_session(store.conn, session_id)
        anchors = verify_anchors(store.conn)
        coverage = store.coverage_state(session_id)
        running = rec.outcome is None and bool(store.running_ids([session_id]))
        successor = continued_by(store.conn, session_id)
    zone_map = zone_map or load_zone_map()
    samples = samples_of(rec, events)
    content = build_content(rec, events, notes, zone_map, chain, bool(samples), NO_SAMPLES,
                            coverage, running, anchors, successor)
    figs = {
        "map": coverage_map(zone_map, rec.zones, f"Session {rec.id}: final coverage per zone",
                            stored_patches(rec)),
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
        html_path.write_text(render_html(content, pngs), encoding="utf-8")
        pdf_path = out_dir / f"session-{rec.id}-report.pdf"
        write_pdf(pdf_path, content, pngs)
    except OSError as exc:
        raise DevicectlError(f"cannot write the report to {out_dir}: {exc.strerror}") from exc
    return ReportFiles(html_path, pdf_path, tuple(paths))
