"""Eligibility at the go/no-go: the contraindication checklist, consent and the
operator, through the real CLI and the simulator, read back from the real record.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from clinic_support import ALL_NO
from rich.console import Console

from devicectl.checklist import (
    DEFAULT_CHECKLIST_PATH,
    eligibility_problems,
    load_answers,
    load_checklist,
    template_text,
)
from devicectl.cli import main
from devicectl.commands.checklist_cmd import GateInputs, eligibility_gate
from devicectl.errors import ProfileError
from devicectl.store import Store

SHORT = Path(__file__).parent / "data" / "short-frontal.yaml"
SHIPPED = load_checklist()
#: The contraindications the issue names, each of which must be on the shipped list.
NAMED = ("infection", "wound", "keloid", "anticoagulant", "isotretinoin", "pregnan", "cancer")


def run(tmp_path: Path, *gate: str, seed: int = 7) -> int:
    return main(["run", "--profile", str(SHORT), "--patient", "P-C1", "--sim", "--yes",
                 "--speed", "0", "--db", str(tmp_path / "r.db"), "--seed", str(seed), *gate])


def answers_file(tmp_path: Path, **changes: str) -> Path:
    text = ALL_NO.read_text()
    for item_id, answer in changes.items():
        assert f"{item_id}: no" in text
        text = text.replace(f"{item_id}: no", f"{item_id}: {answer}")
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    return path


def record(tmp_path: Path) -> tuple[str | None, str | None, dict[str, list[dict]]]:
    with Store(tmp_path / "r.db") as store:
        (rec,) = store.sessions()
        events: dict[str, list[dict]] = {}
        for e in store.events(rec.id):
            events.setdefault(e.kind, []).append(dict(e.data) | {"text": e.text})
    return rec.outcome, rec.operator, events


def test_the_shipped_checklist_has_each_contraindication_with_a_source() -> None:
    text = " ".join(item.question.lower() for item in SHIPPED.items)
    for word in NAMED:
        assert word in text, word
    for item in SHIPPED.items:
        assert any("DEN160029" in s for s in item.sources)
        assert any("NCT04147845" in s for s in item.sources)


@pytest.mark.parametrize("item_id", SHIPPED.ids)
def test_each_contraindication_is_a_no_go_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item_id: str
) -> None:
    gate = ("--operator", "OP-1", "--consent", "--checklist")
    assert run(tmp_path, *gate, str(answers_file(tmp_path, **{item_id: "yes"}))) == 1
    out = capsys.readouterr().out
    (item,) = [i for i in SHIPPED.items if i.id == item_id]
    assert f"NO-GO: contraindication: {item.question}" in out
    outcome, _, events = record(tmp_path)
    assert outcome == "refused"
    assert events["CHECKLIST"][0]["answers"][item_id]["answer"] == "yes"
    assert "SENT" not in events and "ZONE_STARTED" not in events  # the pen was never told


def test_an_unanswered_item_is_a_no_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = answers_file(tmp_path, keloid_history="null")
    assert run(tmp_path, "--operator", "OP-1", "--consent", "--checklist", str(path)) == 1
    assert "NO-GO: checklist item not answered" in capsys.readouterr().out
    outcome, _, events = record(tmp_path)
    assert outcome == "refused"
    assert events["CHECKLIST"][0]["answers"]["keloid_history"]["answer"] == "unanswered"


def test_an_item_missing_from_the_file_is_unanswered(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text("pregnancy: no\n")
    answers = load_answers(path, SHIPPED)
    assert answers["pregnancy"] is False and answers["open_wounds"] is None
    assert len(eligibility_problems(SHIPPED, answers)) == len(SHIPPED.items) - 1


def test_a_scripted_run_without_answers_or_consent_is_a_no_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--operator", "OP-1") == 1
    out = capsys.readouterr().out
    assert out.count("NO-GO: checklist item not answered") == len(SHIPPED.items)
    assert "NO-GO: the patient's informed consent was not given" in out
    _, _, events = record(tmp_path)
    assert events["CONSENT"][0]["given"] is False


def test_answers_consent_and_operator_are_recorded_and_the_session_runs(tmp_path: Path) -> None:
    assert run(tmp_path, "--operator", " OP-7 ", "--consent", "--checklist", str(ALL_NO)) == 0
    outcome, operator, events = record(tmp_path)
    assert outcome == "complete" and operator == "OP-7"
    (checklist,) = events["CHECKLIST"]
    assert checklist["checklist_hash"] == SHIPPED.content_hash
    assert {v["answer"] for v in checklist["answers"].values()} == {"no"}
    (consent,) = events["CONSENT"]
    assert consent["given"] is True and consent["how"] == "--consent"
    assert consent["at"].startswith("20")  # its time, ISO-8601


def test_a_run_without_an_operator_is_refused_before_any_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--consent", "--checklist", str(ALL_NO)) == 1
    assert "--operator ID" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("pregnancy: no\nsunburn: no\n", ":2:1: sunburn: not an item of the checklist"),
        ("pregnancy: maybe\n", ":1:12: pregnancy: answer yes or no, not 'maybe'"),
        ("- pregnancy\n", "a mapping of item id to yes or no"),
    ],
)
def test_a_bad_answers_file_is_one_located_message_and_no_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, why: str
) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    assert run(tmp_path, "--operator", "OP-1", "--consent", "--checklist", str(path)) == 1
    err = capsys.readouterr().err
    assert f"{path}" in err and why in err and "Traceback" not in err
    assert not (tmp_path / "r.db").exists()


def test_the_template_lists_every_item_unanswered_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["checklist", "template"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "t.yaml"
    path.write_text(text)
    answers = load_answers(path, SHIPPED)
    assert list(answers) == list(SHIPPED.ids) and set(answers.values()) == {None}
    for item in SHIPPED.items:
        assert f"{item.id}: null" in text and item.question in text


def test_a_clinics_own_checklist_is_checked_with_located_messages(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("items:\n  - id: Bad Id\n    question: ok?\n    sources: [clinic]\n"
                    "  - id: ok_item\n    question: fine?\n")
    with pytest.raises(ProfileError) as caught:
        load_checklist(path)
    assert any(":2:9: items[0].id:" in p for p in caught.value.problems)
    assert any("items[1].sources: a list of the sources" in p for p in caught.value.problems)


def test_answers_given_in_the_terminal_are_asked_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = ["maybe"] + ["n"] * len(SHIPPED.items) + ["y"]  # a bad reply is asked again
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(replies) + "\n"))
    console = Console(file=io.StringIO(), force_terminal=False)
    with Store(tmp_path / "r.db") as store:
        sid = store.create_session(patient_ref="P-1", profile_name="p", profile_hash="h",
                                   profile_text="", started_at="2026-01-01T00:00:00+00:00")
        inputs = GateInputs(SHIPPED, None, consent=False, interactive=True, simulated=False)
        assert eligibility_gate(console, store, sid, inputs) == []
        kinds = {e.kind: e.data for e in store.events(sid)}
    assert kinds["CHECKLIST"]["how"] == "in the terminal"
    assert kinds["CONSENT"]["how"] == "confirmed in the terminal"


def test_the_shipped_checklist_is_the_default() -> None:
    assert SHIPPED.file == str(DEFAULT_CHECKLIST_PATH)
    assert template_text(SHIPPED).count(": null") == len(SHIPPED.items)


def test_a_refusal_is_one_json_line_for_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = answers_file(tmp_path, open_wounds="yes")
    assert run(tmp_path, "--operator", "OP-1", "--consent", "--checklist", str(path),
               "--json") == 1
    captured = capsys.readouterr()
    end = json.loads(captured.out.strip().splitlines()[-1])
    assert end["type"] == "end" and end["outcome"] == "refused" and end["exit_code"] == 1
    assert any("open_wounds: yes" in r for r in end["reasons"])
    assert "NO-GO: contraindication" in captured.err  # the words for people go to stderr
