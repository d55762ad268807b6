"""A careful YAML reader for files people write: profiles and the zone map.

`yaml.safe_load` semantics, plus: duplicate keys refused, alias expansion and
nesting bounded, a size limit, UTF-8 only, and every node keeps its line and
column so a problem can be named as `file:line:col: field.path: why`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from devicectl.errors import ProfileError

#: A profile or zone map is a few KiB; anything this big is not one.
MAX_FILE_BYTES: Final = 256 * 1024
#: Values an alias may expand to, summed over the file (an alias bomb stops here).
MAX_NODES: Final = 10_000
#: Nesting deeper than this is not a profile (and would exhaust the stack).
MAX_DEPTH: Final = 32

_YAML: Final = "tag:yaml.org,2002:"
_ALLOWED_SCALAR_TAGS: Final = frozenset(
    _YAML + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)
_SEQ_TAG: Final = _YAML + "seq"
_MAP_TAG: Final = _YAML + "map"
_MERGE_TAG: Final = _YAML + "merge"

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Mark:
    """A place in a file, 1-based, as editors count."""

    line: int
    col: int


def format_loc(loc: Loc) -> str:
    """`("zones", 1, "depth_mm")` -> `zones[1].depth_mm`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def located(file: str, mark: Mark, loc: Loc, why: str) -> str:
    """One problem line: `file:line:col: field.path: why`."""
    where = format_loc(loc)
    return f"{file}:{mark.line}:{mark.col}: {where + ': ' if where else ''}{why}"


def profile_error(problems: list[str]) -> ProfileError:
    return ProfileError("\n".join(problems), problems=problems)


@dataclass
class YamlDoc:
    """Plain data read from a YAML file, with the place of every value and key."""

    file: str
    data: Any
    text: str = ""
    value_marks: dict[Loc, Mark] = field(default_factory=dict)
    key_marks: dict[Loc, Mark] = field(default_factory=dict)

    def mark_of(self, loc: Loc, *, key: bool = False) -> Mark:
        """The mark of `loc`, or of its nearest ancestor present in the file."""
        if key and loc in self.key_marks:
            return self.key_marks[loc]
        for n in range(len(loc), -1, -1):
            mark = self.value_marks.get(loc[:n])
            if mark is not None:
                return mark
        return Mark(1, 1)

    def problem(self, loc: Loc, why: str, *, key: bool = False) -> str:
        return located(self.file, self.mark_of(loc, key=key), loc, why)


class _Problem(Exception):
    """One located problem that stops reading the file."""

    def __init__(self, mark: Mark, loc: Loc, why: str) -> None:
        super().__init__(why)
        self.mark, self.loc, self.why = mark, loc, why


def _mark(yaml_mark: Any) -> Mark:
    return Mark(yaml_mark.line + 1, yaml_mark.column + 1)


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses deep nesting (PyYAML composes recursively)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.first_alias: Mark | None = None

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if self.first_alias is None and isinstance(event, yaml.AliasEvent):
            self.first_alias = _mark(event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Problem(
                    _mark(event.start_mark), (), f"nested deeper than {MAX_DEPTH} levels"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Builder:
    """Turns a composed node graph into plain data, recording marks and refusing tricks."""

    def __init__(self, loader: _DepthLimitedLoader, doc: YamlDoc) -> None:
        self.loader = loader
        self.doc = doc
        self.nodes = 0

    def build(self, node: Node, loc: Loc) -> Any:
        mark = _mark(node.start_mark)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            where = self.loader.first_alias or mark
            raise _Problem(
                where, (), f"aliases expand to more than {MAX_NODES} values; use fewer aliases"
            )
        if len(loc) > MAX_DEPTH:
            raise _Problem(mark, loc, f"nested deeper than {MAX_DEPTH} levels")
        self.doc.value_marks.setdefault(loc, mark)
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc, mark)
        if isinstance(node, SequenceNode):
            self._check_tag(node, _SEQ_TAG, loc, mark)
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            self._check_tag(node, _MAP_TAG, loc, mark)
            return self._mapping(node, loc)
        raise _Problem(mark, loc, "unsupported YAML node")  # pragma: no cover

    def _check_tag(self, node: Node, allowed: str, loc: Loc, mark: Mark) -> None:
        if node.tag != allowed:
            raise _Problem(mark, loc, f"tag {_short_tag(node.tag)} is not allowed; plain YAML only")

    def _scalar(self, node: ScalarNode, loc: Loc, mark: Mark) -> Any:
        if node.tag not in _ALLOWED_SCALAR_TAGS:
            self._check_tag(node, "", loc, mark)
        try:
            return self.loader.construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            what = "date" if node.tag.endswith("timestamp") else "value"
            raise _Problem(mark, loc, f"{node.value[:40]!r} is not a valid {what}") from exc

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: list[tuple[ScalarNode, Node]] = []
        for key_node, value_node in node.value:
            key_mark = _mark(key_node.start_mark)
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_entries(value_node, loc))
                continue
            key = (
                self.build(key_node, (*loc, "<key>")) if isinstance(key_node, ScalarNode) else None
            )
            if not isinstance(key, str):
                raise _Problem(key_mark, loc, "mapping keys must be plain text")
            if key in out:
                first = self.doc.key_marks[(*loc, key)]
                raise _Problem(
                    key_mark,
                    (*loc, key),
                    f"duplicate key (first at line {first.line}); give each key once",
                )
            self.doc.key_marks[(*loc, key)] = key_mark
            out[key] = self.build(value_node, (*loc, key))
        for key_node, value_node in merged:  # explicit keys win over merged ones
            key = self.loader.construct_object(key_node)
            if isinstance(key, str) and key not in out:
                self.doc.key_marks[(*loc, key)] = _mark(key_node.start_mark)
                out[key] = self.build(value_node, (*loc, key))
        return out

    def _merge_entries(self, value: Node, loc: Loc) -> Iterator[tuple[ScalarNode, Node]]:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, MappingNode):
                raise _Problem(_mark(source.start_mark), loc, "'<<' must merge a mapping")
            for key_node, value_node in source.value:
                if isinstance(key_node, ScalarNode):
                    yield key_node, value_node


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def _line_col(text: str | bytes, offset: int) -> Mark:
    before = text[:offset]
    newline = "\n" if isinstance(before, str) else b"\n"
    line = before.count(newline) + 1  # type: ignore[arg-type]
    col = offset - (before.rfind(newline) + 1)  # type: ignore[arg-type]
    return Mark(line, col + 1)


def read_yaml(path: Path, *, what: str = "profile") -> YamlDoc:
    """Plain data from a YAML file with `yaml.safe_load` semantics, or a ProfileError.

    Stricter than safe_load: duplicate keys, tags, deep nesting, alias bombs,
    files over MAX_FILE_BYTES and non-UTF-8 bytes are all located problems.
    """
    file = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise profile_error([f"{file}: cannot read the {what}: {exc.strerror or exc}"]) from None
    return parse_yaml(raw, file, what=what)


def parse_yaml(raw: bytes, file: str, *, what: str = "profile") -> YamlDoc:
    """Plain data from YAML bytes, as read_yaml; `file` names them in messages."""
    if len(raw) > MAX_FILE_BYTES:
        raise profile_error(
            [f"{file}: larger than {MAX_FILE_BYTES // 1024} KiB; this is not a {what} file"]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        mark = _line_col(raw, exc.start)
        bad = raw[exc.start]
        return _raise(file, mark, (), f"not UTF-8 text (byte 0x{bad:02x}); save the file as UTF-8")
    doc = YamlDoc(file=file, data=None, text=text)
    loader: _DepthLimitedLoader | None = None
    try:
        loader = _DepthLimitedLoader(text)  # the reader checks characters right here
        node = loader.get_single_node()
        if node is None:
            return _raise(file, Mark(1, 1), (), f"the file is empty; expected a {what}")
        doc.data = _Builder(loader, doc).build(node, ())
    except _Problem as p:
        return _raise(file, p.mark, p.loc, p.why)
    except yaml.reader.ReaderError as exc:
        mark = _line_col(text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        return _raise(file, mark, (), f"character U+{char:04X} is not allowed in YAML text")
    except yaml.MarkedYAMLError as exc:
        ym = exc.problem_mark or exc.context_mark
        mark = _mark(ym) if ym is not None else Mark(1, 1)
        why = " ".join(s for s in (exc.context, exc.problem) if s)
        return _raise(file, mark, (), f"YAML syntax: {why}")
    except yaml.YAMLError as exc:
        return _raise(file, Mark(1, 1), (), f"YAML: {exc}")
    finally:
        if loader is not None:
            loader.dispose()
    return doc


def _raise(file: str, mark: Mark, loc: Loc, why: str) -> YamlDoc:
    raise profile_error([located(file, mark, loc, why)])
