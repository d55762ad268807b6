"""Eligibility: the contraindication checklist (clinic data, profiles/checklist.yaml)
and the technician's answers to it.

Every item is a question whose "yes" means: do not treat today. Any "yes" is a
NO-GO naming the item, and so is an item left unanswered. Pure: the CLI asks
the questions (commands/checklist_cmd.py) and records the answers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from devicectl.yaml_reader import YamlDoc, profile_error, read_yaml

DEFAULT_CHECKLIST_PATH: Final = (
    Path(__file__).resolve().parent.parent / "profiles" / "checklist.yaml"
)
_ID: Final = re.compile(r"[a-z][a-z0-9_]{0,47}")

#: An item's answer: True (yes: a contraindication), False (no), None (not answered).
Answer = bool | None


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    id: str
    question: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Checklist:
    """The checklist as loaded; `content_hash` names the exact text in the records."""

    file: str
    items: tuple[ChecklistItem, ...]
    content_hash: str

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(item.id for item in self.items)


def load_checklist(path: Path | None = None) -> Checklist:
    """The checklist in `path` (default: the shipped one), or a ProfileError naming
    each problem as file:line:col."""
    doc = read_yaml(path or DEFAULT_CHECKLIST_PATH, what="checklist")
    problems: list[str] = []
    data = doc.data
    if not isinstance(data, dict):
        raise profile_error([doc.problem((), "a checklist is a mapping with `items:`")])
    unknown = sorted(set(data) - {"version", "items"})
    problems += [doc.problem((k,), "unknown field; a checklist has version and items", key=True)
                 for k in unknown]
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        problems.append(doc.problem(("items",), "a list of at least one item is required"))
        raw_items = []
    items: list[ChecklistItem] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_items):
        item = _item(doc, i, raw, problems)
        if item is None:
            continue
        if item.id in seen:
            problems.append(doc.problem(("items", i, "id"), f"{item.id!r} is given twice"))
        seen.add(item.id)
        items.append(item)
    if problems:
        raise profile_error(problems)
    digest = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    return Checklist(doc.file, tuple(items), digest)


def _item(doc: YamlDoc, i: int, raw: Any, problems: list[str]) -> ChecklistItem | None:
    loc: tuple[str | int, ...] = ("items", i)
    if not isinstance(raw, dict):
        problems.append(doc.problem(loc, "an item is a mapping with id, question and sources"))
        return None
    before = len(problems)
    for k in sorted(set(raw) - {"id", "question", "sources"}):
        problems.append(doc.problem((*loc, k), "unknown field; an item has id, question and "
                                    "sources", key=True))
    item_id, question = raw.get("id"), raw.get("question")
    raw_sources = raw.get("sources")
    sources: list[Any] = raw_sources if isinstance(raw_sources, list) else []
    if not isinstance(item_id, str) or not _ID.fullmatch(item_id):
        problems.append(doc.problem((*loc, "id"), "an id of lower-case letters, digits and _ "
                                    "(e.g. open_wounds) is required"))
    if not isinstance(question, str) or not question.strip():
        problems.append(doc.problem((*loc, "question"), "the question is required"))
    if (not sources
            or not all(isinstance(s, str) and s.strip() for s in sources)):
        problems.append(doc.problem((*loc, "sources"), "a list of the sources of this item "
                                    "(labelling, trial criteria, clinic policy) is required"))
    if len(problems) > before:
        return None
    return ChecklistItem(str(item_id), " ".join(str(question).split()),
                         tuple(str(s).strip() for s in sources))


def load_answers(path: Path, checklist: Checklist) -> dict[str, Answer]:
    """Answers from a YAML file mapping each item's id to yes or no (null: not
    answered), or a ProfileError naming file:line:col for an unknown id or an
    answer that is not yes/no."""
    doc = read_yaml(path, what="checklist answers")
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise profile_error([doc.problem((), "the answers are a mapping of item id to yes or "
                                         "no; `devicectl checklist template` prints one")])
    problems: list[str] = []
    known = set(checklist.ids)
    answers: dict[str, Answer] = {}
    for key, value in data.items():
        if key not in known:
            problems.append(doc.problem((str(key),), "not an item of the checklist "
                                        f"{checklist.file}", key=True))
        elif value is not None and not isinstance(value, bool):
            problems.append(doc.problem((str(key),), f"answer yes or no, not {value!r}"))
        else:
            answers[str(key)] = value
    if problems:
        raise profile_error(problems)
    return {item_id: answers.get(item_id) for item_id in checklist.ids}


def eligibility_problems(checklist: Checklist, answers: Mapping[str, Answer]) -> list[str]:
    """The NO-GO reasons: every item answered yes, and every item not answered."""
    problems = []
    for item in checklist.items:
        answer = answers.get(item.id)
        if answer is True:
            problems.append(f"contraindication: {item.question} ({item.id}: yes)")
        elif answer is None:
            problems.append(f"checklist item not answered: {item.question} ({item.id})")
    return problems


def answer_text(answer: Answer) -> str:
    return "unanswered" if answer is None else ("yes" if answer else "no")


def answers_record(checklist: Checklist, answers: Mapping[str, Answer], how: str) -> dict[str, Any]:
    """What the records keep of the answers: each item's question and answer, the
    checklist's file and hash, and how they were given."""
    return {
        "checklist": checklist.file,
        "checklist_hash": checklist.content_hash,
        "how": how,
        "answers": {
            item.id: {"question": item.question, "answer": answer_text(answers.get(item.id))}
            for item in checklist.items
        },
    }


def template_text(checklist: Checklist) -> str:
    """The answers file to fill in: every item's id with the answer null, and its
    question and sources as a comment."""
    lines = [
        f"# Answers to the contraindication checklist {checklist.file}",
        "# (sha256 " + checklist.content_hash[:12] + "). Answer each item yes or no;",
        "# yes to any, or an item left null, is a NO-GO. Use with: devicectl run --checklist FILE",
    ]
    for item in checklist.items:
        lines.append(f"# {item.question} (sources: {'; '.join(item.sources)})")
        lines.append(f"{item.id}: null")
    return "\n".join(lines) + "\n"
