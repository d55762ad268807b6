"""The compiled build (make compiled, build/compiled) is compiled: every module that
setup.py lists is an extension module there, wherever a C compiler is at hand.

setup.py falls back to pure Python when a module cannot be compiled, and says so;
`make test` runs the suite inside build/compiled, so without this test a build
that quietly fell back would pass as the compiled one.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_COMPILED_BUILD = (ROOT / ".built").is_file() and ROOT.parent.name == "build"


def _listed() -> list[str]:
    """The module names of setup.py's COMPILED list, read from its source."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets
        ):
            paths = ast.literal_eval(node.value)
            return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED list")


def test_setup_lists_the_sans_io_core() -> None:
    listed = _listed()
    for core in ("devicectl.protocol", "devicectl.safety", "devicectl.controller",
                 "devicectl.coverage", "firmware_sim.firmware", "firmware_sim.physics"):
        assert core in listed
    assert all((ROOT / (m.replace(".", "/") + ".py")).is_file() for m in listed)


@pytest.mark.skipif(not IN_COMPILED_BUILD, reason="not inside build/compiled (make compiled)")
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler: the build is pure Python, as setup.py said")
def test_every_listed_module_is_compiled_in_the_compiled_build() -> None:
    pure = []
    for name in _listed():
        origin = importlib.import_module(name).__file__ or ""
        if not origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            pure.append(f"{name} ({origin})")
    assert not pure, f"pure Python in the compiled build: {', '.join(pure)}"
