"""The `devicectl` command: parses arguments, runs a subcommand, maps errors to exits.

A user's mistake arrives here as a DevicectlError: one sentence on stderr and
its exit code, never a traceback. Anything else is a bug in devicectl: one sentence
too, exit 70, and the traceback kept in a file it names (devicectl/crash.py).

Only the command given is imported: `devicectl --help` and `--version` load no
command module (so neither numpy nor pydantic), and `devicectl run ...` loads
run_cmd alone. LAZY_COMMANDS names each command's module and one-line help for
the top-level list; a module in COMMAND_MODULES that is not in it is imported
every time (it still works, only more slowly: add it to LAZY_COMMANDS).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from devicectl.errors import DevicectlError, ProfileError
from devicectl.plain import escape_controls

# Each module defines `register(subparsers)`; its parsers set `func(args) -> int`.
COMMAND_MODULES = (
    "devicectl.commands.link_cmd",
    "devicectl.commands.profile_cmd",
    "devicectl.commands.run_cmd",
    "devicectl.commands.sessions_cmd",
    "devicectl.commands.records_cmd",
    "devicectl.commands.monitor_cmd",
    "devicectl.commands.keys_cmd",
    "devicectl.commands.firmware_cmd",
    "devicectl.commands.checklist_cmd",
    "devicectl.commands.patients_cmd",
)

#: command -> (its module, its one-line help). A test checks that each help is
#: the one the module registers, so the two cannot drift apart.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "ports": ("devicectl.commands.link_cmd", "list serial ports, marking the likely pen"),
    "wire": ("devicectl.commands.link_cmd", "decode, encode or spy on pen-link frames"),
    "profile": ("devicectl.commands.profile_cmd",
                "validate, show or describe treatment profiles"),
    "run": ("devicectl.commands.run_cmd", "run a treatment session on a pen or the simulator"),
    "demo": ("devicectl.commands.run_cmd", "a full simulated session with the live view"),
    "sessions": ("devicectl.commands.sessions_cmd",
                 "list, show, export and report recorded sessions"),
    "records": ("devicectl.commands.records_cmd",
                "repair the session records (replay what could not be written)"),
    "monitor": ("devicectl.commands.monitor_cmd",
                "serve the live page of a session recorded in a database (read-only)"),
    "keys": ("devicectl.commands.keys_cmd",
             "the keyring of the clinic's pens (authenticated link)"),
    "firmware": ("devicectl.commands.firmware_cmd",
                 "inspect, sign and install the pen's firmware"),
    "checklist": ("devicectl.commands.checklist_cmd",
                  "the contraindication checklist asked before every session"),
    "patients": ("devicectl.commands.patients_cmd",
                 "each patient's sessions, intervals and adverse events"),
}


def version() -> str:
    """The installed package's version (pyproject.toml's), without importing the package."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("devicectl")
    except PackageNotFoundError:  # pragma: no cover - run from a tree never installed
        return "unknown (not installed: pip install -e .)"


class _Version(argparse.Action):
    """--version, looked up only when asked (importlib.metadata costs a --help 25 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"devicectl {version()}")
        parser.exit()


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it already says it or has none
    worth saying (a flag that is off, an option that is absent)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if isinstance(action, argparse.BooleanOptionalAction) and "default" not in text:
            flag = action.option_strings[0]
            on = flag if action.default else "--no-" + flag.removeprefix("--")
            return f"{text} (default: {on})"
        if (
            action.option_strings
            and "default" not in text
            and action.default not in (None, False, argparse.SUPPRESS)
            and action.nargs != 0
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows the defaults, and whose usage errors exit 1,
    a user's mistake (argparse's 2 is "aborted" here); sub-commands inherit it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word: the first argument that is not an option."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(load: str | None = "*") -> argparse.ArgumentParser:
    """The parser; `load` is the command whose module to import ("*": all, None: none).

    The commands not loaded appear in the top-level list with their help only.
    """
    parser = Parser(
        prog="devicectl",
        description="Host controller for a scalp microneedling pen, and its simulator.",
        epilog="`devicectl COMMAND --help` for a command's options. Exit codes: 0 done, "
        "1 refused or a user's mistake, 2 aborted, 3 fault, 4 link lost.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lazy_modules = {module for module, _ in LAZY_COMMANDS.values()}
    wanted = {name for name, (module, _) in LAZY_COMMANDS.items()
              if module in COMMAND_MODULES}
    loaded: set[str] = set()
    for name in COMMAND_MODULES:
        eager = name not in lazy_modules
        chosen = load == "*" or (load in LAZY_COMMANDS and LAZY_COMMANDS[load][0] == name)
        if not (eager or chosen):
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a subcommand not built yet
        module.register(sub)
        loaded.update(c for c, (m, _) in LAZY_COMMANDS.items() if m == name)
    for name in LAZY_COMMANDS:
        if name in wanted and name not in loaded:
            stub = sub.add_parser(name, help=LAZY_COMMANDS[name][1])
            stub.set_defaults(func=_unavailable(name))
    return parser


def _unavailable(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        raise DevicectlError(f"the command {name!r} is not available in this installation")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _main(args_in)
    except KeyboardInterrupt:  # while the command loaded, or again while answering one
        code = _interrupted()
    while argv is None:  # the program (not a test's call): its exit follows
        try:
            _answered(code)
            break
        except KeyboardInterrupt:  # one pending from before the handler: the answer stands
            continue
    return code


def _answered(code: int) -> None:
    """The command has answered: a Ctrl-C during the interpreter's exit (its threads,
    its atexit callbacks) ends the process with that answer, not a traceback. Nothing
    is left to write but the output buffers, which go first."""

    def handler(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    with contextlib.suppress(Exception):
        sys.stdout.flush()
    signal.signal(signal.SIGINT, handler)


def _interrupted() -> int:
    """Ctrl-C's answer (`run` answers its own: devicectl/commands/run_signals.py): a
    second one while it is printed changes nothing (nor, at worst, a traceback)."""
    with contextlib.suppress(KeyboardInterrupt):
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            print("devicectl: interrupted", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
    return 130


def _main(args_in: list[str]) -> int:
    command = _command_of(args_in)
    parser = build_parser(command if command in LAZY_COMMANDS else None)
    args = parser.parse_args(args_in)
    try:
        code: int = args.func(args)
    except DevicectlError as exc:
        # A profile's problems one a line, as `profile validate` prints them (each escaped:
        # the newline between them is ours, one inside a problem is not).
        for line in exc.problems if isinstance(exc, ProfileError) else [exc]:
            print(f"devicectl: {escape_controls(line)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: the sentence here, the traceback in a file
        from devicectl.crash import report

        return report(exc, args_in)
    return code


if __name__ == "__main__":
    sys.exit(main())
