"""The command line as a user meets it: --version, help with defaults, the lazy
imports behind a fast `--help`, `ports`, `wire decode` at a terminal, the
README's links, and `run --quiet`, `--json` and piped progress."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from clinic_support import GATE

from devicectl import cli
from devicectl.link import PortInfo

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _all_parsers(parser: argparse.ArgumentParser, path: str = "devicectl") -> list[
        tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for name, sub in _subparsers(parser).items():
        out += _all_parsers(sub, f"{path} {name}")
    return out


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"devicectl {version('devicectl')}"


def test_help_and_version_import_no_command_module_nor_numpy_or_pydantic() -> None:
    heavy = ("numpy", "pydantic", "yaml", "rich", "serial", "starlette", "uvicorn",
             "matplotlib", "devicectl.commands.run_cmd", "devicectl.controller")
    for argv in (["--help"], ["--version"], []):
        code = (
            "import sys, devicectl.cli as c\n"
            f"try:\n    c.main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
        assert proc.stderr.strip().splitlines()[-1] == "[]", (argv, proc.stderr)
        if argv == ["--help"]:
            for name in cli.LAZY_COMMANDS:  # every command is still listed
                assert re.search(rf"^\s+{name}\s", proc.stdout, re.M), name


def test_a_command_loads_only_its_own_module() -> None:
    code = ("import sys, devicectl.cli as c\n"
            "try:\n    c.main(['ports', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('devicectl.commands.')),"
            " file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.stderr.strip().splitlines()[-1] == "['devicectl.commands.link_cmd']"


def test_the_top_level_list_says_what_each_command_registers() -> None:
    full = _subparsers(cli.build_parser("*"))
    top = cli.build_parser(None)
    listed = {a.dest: a.help for a in top._subparsers._group_actions[0]._choices_actions}  # type: ignore[union-attr]
    registered = {a.dest: a.help
                  for a in cli.build_parser("*")._subparsers._group_actions[0]._choices_actions}  # type: ignore[union-attr]
    assert set(listed) == set(full) == set(cli.LAZY_COMMANDS)
    assert listed == registered


def test_every_option_shows_its_default() -> None:
    checked = 0
    for path, parser in _all_parsers(cli.build_parser("*")):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
                continue
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            text = formatter._expand_help(action)
            assert "default" in text, f"{path} {action.option_strings[0]}: {text!r}"
            checked += 1
    assert checked > 10
    demo = cli.build_parser("demo")
    demo_help = _subparsers(demo)["demo"].format_help()
    assert "(default: 2.0)" in " ".join(demo_help.split())
    assert "(default: demo-out/sessions.db)" in " ".join(demo_help.split())
    run_help = " ".join(_subparsers(cli.build_parser("run"))["run"].format_help().split())
    assert "records database (default" in run_help and "(default: --no-web)" in run_help


def test_sessions_help_lists_report(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["sessions", "--help"])
    out = capsys.readouterr().out
    assert re.search(r"^\s+report\s", out, re.M)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "report" in capsys.readouterr().out.split("sessions", 1)[1].splitlines()[0]


# --- ports and wire decode ---------------------------------------------------


def test_ports_prints_a_header_and_says_when_no_pen_is_found(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devicectl.commands import link_cmd

    # The ports are the one thing a test machine cannot provide: pyserial's scan is the edge.
    monkeypatch.setattr(link_cmd, "list_serial_ports", lambda: [])
    assert cli.main(["ports"]) == 0
    assert "no pen found" in capsys.readouterr().out
    uart = PortInfo("/dev/ttyS0", "n/a", "n/a", False)
    monkeypatch.setattr(link_cmd, "list_serial_ports", lambda: [uart])
    assert cli.main(["ports"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PORT", "DESCRIPTION", "HARDWARE", "ID", "PEN?"]
    assert lines[1].startswith("/dev/ttyS0") and "no pen found" in lines[-1]
    pen = PortInfo("/dev/ttyACM0", "Pen CDC", "USB VID:PID=1209:0001", True)
    monkeypatch.setattr(link_cmd, "list_serial_ports", lambda: [uart, pen])
    assert cli.main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "no pen found" not in out
    assert next(x for x in out.splitlines() if "likely pen" in x).startswith("/dev/ttyACM0")


def test_wire_decode_at_a_terminal_prints_its_usage_instead_of_waiting() -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "devicectl.cli", "wire", "decode"], stdin=slave,
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 1  # a user's mistake (argparse's 2 is "aborted" here)
    assert proc.stderr.startswith("usage: devicectl wire decode")
    assert "pipe them in" in proc.stderr and proc.stdout == ""


# --- the README --------------------------------------------------------------


def test_the_readme_links_resolve_in_a_clone() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert "docs/pen-protocol.md" in links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        assert (ROOT / link).exists(), f"README links to {link}, which is not in the repository"
    assert "../shared" not in text
    assert ".venv/bin/devicectl" in text and "source .venv/bin/activate" in text


# --- run: --quiet, --json, piped progress -------------------------------------


def _run(tmp_path: Path, *extra: str, profile: Path = DATA / "short-two-zones.yaml",
         speed: str = "0") -> int:
    return cli.main(["run", "--profile", str(profile), "--patient", "P-0031", "--sim", "--yes",
                     "--seed", "31", "--speed", speed, "--db", str(tmp_path / "r.db"), *GATE,
                     *extra])


def test_run_quiet_prints_only_the_outcome(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--quiet") == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [x for x in out.splitlines() if x.strip()]
    assert len(out.splitlines()) <= 2, out  # the outcome line, soft-wrapped at most once
    assert out.startswith("complete · session id 1")
    assert _run(tmp_path, "--quiet") == 1  # the same zones again: refused, and it says why
    out = capsys.readouterr().out
    assert "NO-GO" in out and "refused" in out


def test_run_json_prints_one_object_a_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--json") == 0
    out, err = capsys.readouterr()
    records: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert records[0]["type"] == "session" and records[0]["session_id"] == 1
    assert records[-1] == {"type": "end", "session_id": 1, "outcome": "complete",
                           "exit_code": 0, "db": str(tmp_path / "r.db")}
    events = [r for r in records if r["type"] == "event"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("ZONE_DONE") == 2 and "DEVICE" in kinds
    # Events and progress in one session-time order, however fast the session ran:
    # no progress line after its zone is done.
    timed = [r for r in records if r["type"] in ("event", "progress")]
    assert any(r["type"] == "progress" for r in timed)
    times = [r["t_s"] for r in timed]
    assert times == sorted(times), [(r["type"], r.get("kind"), r["t_s"]) for r in timed]
    assert "GO:" in err  # the human text went to stderr


def test_a_piped_run_prints_progress_at_least_every_5_s_of_session_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    longer = tmp_path / "longer.yaml"  # one zone to a fifth: about 25 s of session time
    longer.write_text((DATA / "short-frontal.yaml").read_text(encoding="utf-8")
                      .replace("target_fraction: 0.04", "target_fraction: 0.2"), encoding="utf-8")
    assert _run(tmp_path, profile=longer, speed="8") == 0
    out = capsys.readouterr().out
    stamp = re.compile(r"^\[(\d\d):(\d\d)\.(\d\d\d)\] (\S+)")
    times: list[tuple[float, str]] = []
    for line in out.splitlines():
        m = stamp.match(line)
        if m:
            times.append((int(m[1]) * 60 + int(m[2]) + int(m[3]) / 1000, m[4]))
    start = next(t for t, kind in times if kind == "ZONE_STARTED")
    end = max(t for t, _ in times)
    progress = [t for t, kind in times if kind == "PROGRESS"]
    assert end - start > 10, "the session is long enough to need progress lines"
    marks = [start, *progress]
    gaps = [b - a for a, b in itertools.pairwise(marks)] + [end - marks[-1]]
    assert len(progress) >= 2 and max(gaps) <= 5.0, gaps
    line = next(x for x in out.splitlines() if " PROGRESS " in x)
    assert re.search(r"PROGRESS STAMPING · zone 1/1 Frontal \(hairline band\) · \d+ % of 20 % · "
                     r"≈ \d+\.\d\d passes \(mean\) · about \d\d:\d\d left", line), line


def test_a_run_that_cannot_keep_its_speed_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from devicectl.monitor.progress import Pace

    pace = Pace(40.0)
    assert pace.check(100.0, 4.0, 600.0) is None  # too early to judge
    assert pace.check(200.0, 6.0, 600.0) is None  # 33× of 40×: within the slack
    note = pace.check(60.0, 10.0, 600.0)  # 6×
    assert note is not None and "6.0× real time, behind the 40× asked for" in note
    assert "about 01:40 left" in note  # 600 s of session at 6×
    assert pace.check(60.0, 20.0, 600.0) is None  # said once
    assert Pace(0.0).check(1.0, 100.0, 1.0) is None  # "as fast as possible" is never behind
    # A real run asked for more than any machine gives: the end says how fast it really ran.
    assert _run(tmp_path, speed="1000000") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert re.search(r"note: \d\d:\d\d of session time took \d\d:\d\d: [\d.]+× real time "
                     r"instead of the 1e\+06× asked for", out), out


def test_a_bug_is_one_sentence_exit_70_and_its_traceback_kept_in_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Anything but a DevicectlError escaping a command is a bug in devicectl (a compiled
    build's TypeError on data it should have refused, say): the technician sees one
    sentence naming where the details are, never a traceback; the file has them."""
    from devicectl.commands import profile_cmd

    def bug(args: argparse.Namespace) -> int:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str' \x1b[2J")

    monkeypatch.setattr(profile_cmd, "run_schema", bug)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert cli.main(["profile", "schema"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "\x1b" not in err
    assert err.startswith("devicectl: unexpected error, a bug in devicectl (TypeError: "
                          "unsupported operand type(s) for +: 'int' and 'str' ")
    (kept,) = (tmp_path / "state" / "devicectl" / "crashes").iterdir()
    assert f"the details are in {kept}: please send them" in err
    text = kept.read_text()
    assert text.startswith("devicectl profile schema\n")
    assert "Traceback" in text and "TypeError: unsupported operand" in text


def test_a_bug_where_no_file_can_be_written_prints_the_traceback_after_the_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import tempfile

    from devicectl.commands import profile_cmd

    def bug(args: argparse.Namespace) -> int:
        raise KeyError("zone_id")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(profile_cmd, "run_schema", bug)
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker))
    assert cli.main(["profile", "schema"]) == 70
    first, rest = capsys.readouterr().err.split("\n", 1)
    assert first.startswith("devicectl: unexpected error, a bug in devicectl (KeyError: ")
    assert first.endswith("the details follow (no file could be written): please send "
                          "them to its developers")
    assert rest.startswith("Traceback") and "KeyError: 'zone_id'" in rest
