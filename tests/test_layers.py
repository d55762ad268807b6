"""The house reads top-down, and one process owns the pen (issue 12).

Checked through the imports, as test_safety checks who builds SET_TARGET: the
CLI and the views, then the session and the pen process, then the controller,
then safety, coverage, codec and link, with no arrow back up; and no code
outside the pen process imports the controller or the session.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "devicectl"

#: Level of each module in the house (0 at the top); packages stand for their modules.
LEVELS: dict[str, int] = {
    "devicectl.cli": 0,
    "devicectl.commands": 0,
    "devicectl.monitor": 0,
    "devicectl.web": 0,
    "devicectl.session": 1,
    "devicectl.session_records": 1,
    "devicectl.penproc": 1,
    "devicectl.penloop": 1,
    "devicectl.os_grants": 1,
    "devicectl.snapshot": 1,
    "devicectl.snapshot_build": 1,
    "devicectl.controller": 2,
    "devicectl.controller_core": 2,
    "devicectl.controller_connect": 2,
    "devicectl.controller_checks": 2,
    "devicectl.controller_auth": 2,
    "devicectl.controller_status": 2,
    "devicectl.controller_telemetry": 2,
    "devicectl.stamping": 2,
    "devicectl.linkstate": 2,
    "devicectl.safety": 3,
    "devicectl.safety_gonogo": 3,
    "devicectl.coverage": 3,
    "devicectl.coverage_views": 3,
    "devicectl.coverage_archive": 3,
    "devicectl.coverage_zones": 3,
    "devicectl.footprint": 3,
    "devicectl.protocol": 3,
    "devicectl.messages": 3,
    "devicectl.link": 3,
    "devicectl.fd_port": 3,
    "devicectl.clock": 3,
    "devicectl.plan": 3,
    "devicectl.transitions": 3,
    "devicectl.flight": 3,
    "devicectl.signing": 3,
    "devicectl.drain": 3,
}
#: The pen process's own code: the only modules that may import the live controller.
PEN_PROCESS = frozenset({
    "devicectl.session", "devicectl.session_records", "devicectl.penloop",
    "devicectl.snapshot_build",
    "devicectl.controller", "devicectl.controller_connect", "devicectl.controller_status",
    "devicectl.controller_telemetry",
})
#: What holds the live controller (or the session that owns it).
LIVE = frozenset({"devicectl.controller", "devicectl.controller_connect", "devicectl.session",
                  "devicectl.session_records",
                  "devicectl.controller_telemetry", "devicectl.penloop",
                  "devicectl.snapshot_build"})


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every devicectl module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("devicectl"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "devicectl":
                found.update(f"devicectl.{a.name}" for a in node.names)
            elif node.module.startswith("devicectl."):
                found.add(node.module)
    return found


def _level(module: str) -> int | None:
    while module:
        if module in LEVELS:
            return LEVELS[module]
        module = module.rpartition(".")[0]
    return None


def test_the_house_reads_top_down_with_no_arrow_back_up() -> None:
    upward = []
    for name, path in _modules().items():
        mine = _level(name)
        for imported in _imports(path):
            theirs = _level(imported)
            if mine is not None and theirs is not None and theirs < mine:
                upward.append(f"{name} (level {mine}) imports {imported} (level {theirs})")
    assert upward == []


def test_nothing_outside_the_pen_process_reaches_the_controller() -> None:
    reaching = []
    for name, path in _modules().items():
        if name in PEN_PROCESS:
            continue
        for imported in _imports(path) & LIVE:
            reaching.append(f"{name} imports {imported}")
    # The one exception: penproc's child entry, which runs in the pen process
    # (penproc._child imports penloop there, never in the CLI: the next test checks).
    assert sorted(reaching) == ["devicectl.penproc imports devicectl.penloop"]


def test_views_never_read_the_controller_attribute() -> None:
    """No view or command reads `something.controller`: they see snapshots only."""
    readers = []
    for name, path in _modules().items():
        if _level(name) != 0:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "controller":
                readers.append(f"{name}:{node.lineno}")
    assert readers == []


def test_the_cli_and_views_load_neither_controller_nor_session() -> None:
    views = ("devicectl.commands.run_cmd", "devicectl.web.hub", "devicectl.web.server",
             "devicectl.monitor.viewproc", "devicectl.penproc")
    code = (f"import sys, {', '.join(views)}; "
            "print(sorted(m for m in ('devicectl.controller', 'devicectl.session', "
            "'devicectl.penloop') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_pen_process_loads_neither_pydantic_nor_yaml() -> None:
    """The loop's process imports its code and nothing of the profile's edge (the zone
    map's geometry, which the coverage grid needs for patches, but not its YAML reader)."""
    code = ("import sys, devicectl.penloop; "
            "print(sorted(m for m in ('pydantic', 'yaml', 'devicectl.profile', "
            "'devicectl.patch_spec', 'devicectl.yaml_reader') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
