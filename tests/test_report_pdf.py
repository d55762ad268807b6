"""The report for the patient's file: A4 pages with the full content, the same
content in the HTML, every ESTOP of a fault session, and text from people
printed as itself (never typeset as math), from a real simulated session.
"""

from __future__ import annotations

import html as html_lib
import re
import zlib
from pathlib import Path

import pytest
from clinic_support import ALL_NO

from devicectl.cli import main
from devicectl.store import Store

SHORT = Path(__file__).parent / "data" / "short-frontal.yaml"
A4_PT = (595.28, 841.89)
OPERATOR = r"OP $\frac{1}{0}$"
NOTE = "itching for 3 days; cost $5 for cream $x$"
PROFILE_NAME = r"Test $\alpha$ frontal, 100$"


def pdf_lines(path: Path) -> list[str]:
    """The text of each line drawn in the PDF (matplotlib writes one BT block per line).

    A stream's data is taken up to "endstream" with its end-of-line, and zlib finds
    where the compressed data ends: a delimiter pattern of `\\r?\\n` would also eat
    a last compressed byte that happens to be 0x0D (1 stream in 256; the page then
    went missing and the test failed at random)."""
    raw = path.read_bytes()
    lines = []
    for stream in re.finditer(rb"stream\r?\n(.*?)endstream", raw, re.S):
        try:
            data = zlib.decompressobj().decompress(stream.group(1))
        except zlib.error:
            continue
        for block in re.finditer(rb"BT(.*?)ET", data, re.S):
            parts = re.findall(rb"\(((?:[^()\\]|\\.)*)\)", block.group(1))
            text = b"".join(re.sub(rb"\\(.)", rb"\1", p) for p in parts)
            lines.append(text.decode("latin-1"))
    return lines


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list[str]]:
    tmp = tmp_path_factory.mktemp("pdf")
    db = tmp / "r.db"
    profile = tmp / "p.yaml"
    profile.write_text(re.sub(r"^name: .*$", lambda _: f"name: '{PROFILE_NAME}'", SHORT.read_text(),
                              flags=re.M))
    code = main(["run", "--profile", str(profile), "--patient", "P-PDF1", "--sim", "--yes",
                 "--speed", "0", "--db", str(db), "--seed", "9", "--scenario",
                 "overshoot-no-limit", "--operator", OPERATOR, "--checklist", str(ALL_NO),
                 "--consent"])
    assert code == 3
    assert main(["sessions", "note", "1", "--db", str(db), "--adverse", "itching", "--text",
                 NOTE, "--by", "DR $"]) == 0
    out = tmp / "out"
    assert main(["sessions", "report", "1", "--db", str(db), "--out", str(out)]) == 0
    pdf = out / "session-1-report.pdf"
    return db, pdf, out / "session-1-report.html", pdf_lines(pdf)


def test_every_page_is_a4(report: tuple[Path, Path, Path, list[str]]) -> None:
    _, pdf, _, _ = report
    boxes = re.findall(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", pdf.read_bytes())
    assert len(boxes) >= 2
    for width, height in boxes:
        assert abs(float(width) - A4_PT[0]) < 0.5 and abs(float(height) - A4_PT[1]) < 0.5


def test_the_header_names_patient_operator_profile_pen_and_cartridge(
    report: tuple[Path, Path, Path, list[str]],
) -> None:
    db, _, _, lines = report
    with Store(db) as store:
        rec = store.session(1)
    text = "\n".join(lines)
    assert rec.fw_version == 0x0101  # the simulated pen's factory firmware
    for value in ("P-PDF1", OPERATOR, PROFILE_NAME, rec.profile_hash,
                  f"serial {rec.device_serial}, firmware 1.1", str(rec.cartridge_id)):
        assert value in text, value


def test_a_fault_session_lists_every_estop_and_the_outcome_says_so(
    report: tuple[Path, Path, Path, list[str]],
) -> None:
    db, _, _, lines = report
    with Store(db) as store:
        estops = [e for e in store.events(1) if e.kind == "ESTOP" or (
            e.kind == "SENT" and e.data.get("type") == "ESTOP")]
    assert len(estops) == 2  # the host's decision and the frame it sent: one stop
    assert any("fault after 1 ESTOP" in line for line in lines)
    assert any("ESTOPs: 1 (each listed below)" in line for line in lines)
    faults = lines[next(i for i, x in enumerate(lines) if x == "Faults and safety stops"):]
    assert any("SENT" in x and "ESTOP sent" in x for x in faults)
    assert any("ESTOP" in x and "emergency stop sent: measured needle depth" in x for x in faults)


def test_text_from_people_is_printed_as_itself(
    report: tuple[Path, Path, Path, list[str]],
) -> None:
    _, _, html_path, lines = report
    text = "\n".join(lines)
    assert NOTE in text and "DR $" in text and OPERATOR in text
    page = html_path.read_text(encoding="utf-8")
    assert html_lib.escape(NOTE) in page and html_lib.escape(OPERATOR) in page


def test_checklist_consent_adverse_events_and_the_chain_head(
    report: tuple[Path, Path, Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, _, lines = report
    text = "\n".join(lines)
    assert "Pregnant or breastfeeding?" in text and "Consent given at 20" in text
    assert "adverse event: itching" in text
    with Store(db) as store:
        head = store.session(1).chain_head
    assert head is not None
    footers = [x for x in lines if x.startswith("records' hash chain head ")]
    pages = max(int(m.group(1)) for x in lines if (m := re.match(r"page \d+ of (\d+)", x)))
    assert footers == [f"records' hash chain head {head}"] * pages
    assert main(["sessions", "verify", "1", "--db", str(db)]) == 0
    assert head in capsys.readouterr().out


def test_the_html_carries_the_same_sections_and_header(
    report: tuple[Path, Path, Path, list[str]],
) -> None:
    _, _, html_path, lines = report
    page = html_lib.unescape(re.sub(r"<[^>]+>", "\n", html_path.read_text(encoding="utf-8")))
    headings = re.findall(r"<h2>(.*?)</h2>", html_path.read_text(encoding="utf-8"))
    assert len(headings) >= 8
    for heading in headings:
        assert html_lib.unescape(heading) in lines
    for key in ("patient ref", "operator", "profile hash", "pen", "cartridge", "outcome"):
        assert any(x.startswith(key) for x in lines) and f"\n{key}\n" in page
