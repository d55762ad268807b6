"""Build hook: pure Python by default; DEVICECTL_COMPILE=1 compiles the sans-I/O core with mypyc.

The pure-Python package is the reference and what `pip install` gives. With
DEVICECTL_COMPILE=1 (what `make compiled` sets, building into build/compiled)
the modules below are compiled with mypyc; when that is impossible (mypy not
importable, no C compiler, a module mypyc rejects) the build says so on stderr
and leaves those modules pure Python. What compiling changes, and how the code
keeps both builds alike (docs/performance.md, "Round 5: compiled core"):
mypyc checks annotated argument and field types at run time, so untrusted
inputs the pure code checks itself are typed `object` (safety.checked_set_target);
a frozen dataclass that crosses a process pickles by its fields (devicectl/frozen.py);
message classes get TYPE/FORMAT after their body (mypyc issue 1122); the two classes
built a thousand times a second (Telemetry, Frame) write their `__init__` out. The
session's loop, its records side and the flight recorder are compiled; the pen
process's set-up (penproc, penloop), the records, the views and the CLI are not
(I/O and set-up, run seldom: docs/performance.md, "Round 6").
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "devicectl/messages.py",
    "devicectl/protocol.py",
    "devicectl/safety.py",
    "devicectl/safety_gonogo.py",
    "devicectl/controller.py",
    "devicectl/controller_auth.py",
    "devicectl/controller_checks.py",
    "devicectl/controller_connect.py",
    "devicectl/controller_core.py",
    "devicectl/controller_status.py",
    "devicectl/controller_telemetry.py",
    "devicectl/plan.py",
    "devicectl/dose.py",
    "devicectl/reach.py",
    "devicectl/signing.py",
    "devicectl/footprint.py",
    "devicectl/coverage.py",
    "devicectl/coverage_views.py",
    "devicectl/coverage_archive.py",
    "devicectl/coverage_zones.py",
    "devicectl/stamping.py",
    "devicectl/linkstate.py",
    "devicectl/fd_port.py",
    "devicectl/clock.py",
    "devicectl/transitions.py",
    "devicectl/flight.py",
    "devicectl/session.py",
    "devicectl/session_records.py",
    "firmware_sim/pen_states.py",
    "firmware_sim/pen_core.py",
    "firmware_sim/firmware.py",
    "firmware_sim/physics.py",
    "firmware_sim/pen_link.py",
    "firmware_sim/pen_auth.py",
    "firmware_sim/supervision.py",
    "firmware_sim/faults.py",
    "firmware_sim/triggers.py",
    "firmware_sim/hand_rows.py",
    "firmware_sim/handpiece.py",
    "firmware_sim/virtual.py",
]


def _say(text: str) -> None:
    print(f"devicectl build: {text}", file=sys.stderr)


# mypyc -O1 with one C file per module: the compiled core runs as fast as at -O3
# with one C file (controller step 3.5 µs either way) and gcc takes 26 s of CPU
# instead of 56 s, spread over every core (docs/performance.md, "Round 6").
OPT_LEVEL = "1"


def _compile_in_parallel(compiler: Any) -> None:
    """Lets `compiler` compile an extension's C files on every core at once.

    setuptools compiles one file after another; mypyc's multi_file mode gives one C
    file per module, so on two cores this halves the build's wall time. Uses the
    compiler's own steps (`_setup_compile`, `_get_cc_args`, `_compile`), unchanged
    since distutils; any failure still reaches `build_extension` below.
    """

    def compile_all(sources: list[str], output_dir: str | None = None, macros: Any = None,
                    include_dirs: Any = None, debug: bool = False, extra_preargs: Any = None,
                    extra_postargs: Any = None, depends: Any = None) -> list[str]:
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj: str) -> None:
            src, ext = build[obj]
            compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(one, objects))
        return list(objects)

    compiler.compile = compile_all


class OptionalBuildExt(build_ext):  # type: ignore[misc]
    """Compiles what it can; a module that fails stays pure Python, and the build says so."""

    def build_extensions(self) -> None:
        _compile_in_parallel(self.compiler)
        super().build_extensions()

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            _say(f"compilation failed ({exc}); the pure-Python modules are used")

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _say(f"{ext.name} not compiled ({exc}); it stays pure Python")


def ext_modules() -> list[Any]:
    if os.environ.get("DEVICECTL_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed (it comes with mypy); installing pure Python")
        return []
    try:
        return list(mypycify(COMPILED, opt_level=OPT_LEVEL, multi_file=True))
    except BaseException as exc:
        _say(f"mypyc cannot compile the core ({exc!r}); installing pure Python")
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
