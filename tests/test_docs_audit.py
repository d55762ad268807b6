"""The pages a new user and a clinician read, held to the code: README.md,
docs/clinic.md, docs/profiles.md and docs/architecture.md.

Each test names the page and the claim it keeps true.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from devicectl import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/clinic.md", "docs/profiles.md", "docs/web.md")

#: A page's placeholders, each replaced by a value of its kind.
_PLACEHOLDERS = {
    "FILE": "profiles/aga-crown-midscalp.yaml", "REF": "P-0042", "ID": "1",
    "SESSION_ID": "1", "DIR": "out", "PATH": "x.db", "KIND": "redness", "HEX...": "00",
    "json|csv": "json", "[ID]": "1", "postgresql://…": "postgresql://h/devicectl",
}
#: `run ...` on a page: the options a session needs, written out.
_RUN_DOTS = ["--profile", "FILE", "--patient", "REF", "--operator", "ID", "--sim"]


def _command_lines() -> list[tuple[str, int, str]]:
    """Every `devicectl ...` command shown in a code block of the pages (page, line, text),
    continuation lines joined, the comment and a redirection dropped."""
    found = []
    for page in PAGES:
        lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            text = lines[i].strip()
            start = i
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            i += 1
            if not text.startswith("devicectl ") or "COMMAND" in text:
                continue
            text = re.sub(r"\s#\s.*$", "", text).strip()  # the comment
            text = re.sub(r"\s>\s\S+$", "", text.strip())  # `> answers.yaml`
            found.append((page, start + 1, text))
    return found


def _argv(text: str) -> list[str]:
    argv: list[str] = []
    for word in shlex.split(text)[1:]:
        if word == "...":
            argv += _RUN_DOTS if argv[-1:] == ["run"] else ["words"]
            continue
        bracketed = word.startswith("[--") or (word.endswith("]") and not word.startswith("["))
        argv.append(word.strip("[]") if bracketed else word)
    argv = [a for a in argv if a not in ("[", "]")]
    return [_PLACEHOLDERS.get(a, a) for a in argv]


COMMANDS = _command_lines()


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of `parser` and its subcommands, spelled out (argparse would
    also take a prefix: a renamed `--clinician-id` still parses `--clinician`)."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def test_the_pages_show_commands() -> None:
    assert len(COMMANDS) > 30, COMMANDS  # the scan found the pages' commands


@pytest.mark.parametrize(("page", "line", "text"), COMMANDS,
                         ids=[f"{p}:{n}" for p, n, _ in COMMANDS])
def test_every_command_a_page_shows_parses_as_shown(page: str, line: int, text: str) -> None:
    """README.md "The command" and the pages' examples: "every command shown must run as
    shown". Each line's options and actions must exist in the real parser (cli.py and
    commands/*.py); a renamed or removed option breaks this, not the reader."""
    argv = _argv(text)
    parser = cli.build_parser("*")
    unknown = [a for a in argv if a.startswith("--") and a not in _option_strings(parser)]
    assert not unknown, f"{page}:{line}: `{text}`: no such option {unknown}"
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0; a usage error exits 2
        assert exc.code == 0, f"{page}:{line}: `{text}` does not parse ({argv})"
        return
    assert callable(args.func), f"{page}:{line}: `{text}`"


def test_profiles_md_unknown_field_example_lists_the_fields_a_zone_has(tmp_path: Path) -> None:
    """docs/profiles.md "Errors": `zones[1].colour: unknown field; allowed: zone, depth_mm,
    rate_hz, target_passes, max_passes, target_fraction`. The validator
    (devicectl/profile.py, the zone model) allows max_punctures_per_cm2, patches and
    patch_margin_mm too, and says so: the example is the message as it is."""
    from devicectl.errors import ProfileError
    from devicectl.profile import load_profile

    page = (ROOT / "docs/profiles.md").read_text(encoding="utf-8")
    shown = re.search(r"\.colour: unknown field; allowed: (.*)$", page, re.M)
    assert shown is not None
    text = (ROOT / "profiles/aga-crown-midscalp.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "aga-crown.yaml"
    bad.write_text(text.replace("    target_fraction: 0.9\n",
                                "    target_fraction: 0.9\n    colour: red\n", 1))
    with pytest.raises(ProfileError) as err:
        load_profile(bad)
    said = [p for p in err.value.problems if ".colour: unknown field" in p]
    assert said and said[0].endswith(f"allowed: {shown.group(1)}"), (said, shown.group(1))


@pytest.mark.parametrize("package", ["devicectl", "firmware_sim"])
def test_architecture_md_names_every_module(package: str) -> None:
    """docs/architecture.md: "this page gives the interfaces each module offers the
    others". Its tables left out devicectl's columnar.py, drain.py, frozen.py, reach.py
    and session_records.py, and firmware_sim's probe.py."""
    page = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    section = page.split("## firmware_sim")[1 if package == "firmware_sim" else 0]
    named = set(re.findall(r"`([\w]+\.py)`", section))
    modules = {p.name for p in (ROOT / package).glob("*.py")} - {"__init__.py"}
    assert sorted(modules - named) == []


def test_architecture_md_house_places_every_module_test_layers_places() -> None:
    """docs/architecture.md "The house, top-down" names each level's modules, "tests/
    test_layers.py checks both through the imports". test_layers.LEVELS places
    safety_gonogo, session_records, os_grants, footprint, coverage_views, coverage_archive,
    fd_port, clock and drain, which the page's paragraph did not name at any level."""
    import fnmatch
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_layers import LEVELS
    finally:
        sys.path.remove(str(ROOT / "tests"))
    page = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    house = page.split("## The house, top-down")[1].split("```")[0]
    named = re.findall(r"`([\w*]+(?:\.py|/))`", house)
    missing = []
    for module in LEVELS:
        short = module.removeprefix("devicectl.")
        if not any(fnmatch.fnmatch(f"{short}.py", n) or n == f"{short}/" for n in named):
            missing.append(short)
    assert missing == []


def test_readme_migrate_from_a_home_relative_sqlite_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README "A clinic": `devicectl records migrate --from
    sqlite:~/.local/share/devicectl/sessions.db --to ...`. The shell leaves a `~` after
    `sqlite:` as it is, and migrate.py:60 took it literally: "no records file at
    ~/.local/share/devicectl/sessions.db"."""
    from devicectl.migrate import parse_source

    monkeypatch.setenv("HOME", str(tmp_path))
    chair = tmp_path / ".local/share/devicectl/sessions.db"
    chair.parent.mkdir(parents=True)
    chair.write_bytes(b"")
    assert parse_source("sqlite:~/.local/share/devicectl/sessions.db") == chair
