"""The `devicectl` command: parses arguments, runs a subcommand, maps errors to exits.

A user's mistake arrives here as a DevicectlError: one sentence on stderr and
its exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from devicectl.errors import DevicectlError

# Each module defines `register(subparsers)`; its parsers set `func(args) -> int`.
COMMAND_MODULES = (
    "devicectl.commands.link_cmd",
    "devicectl.commands.profile_cmd",
    "devicectl.commands.run_cmd",
    "devicectl.commands.sessions_cmd",
    "devicectl.commands.monitor_cmd",
    "devicectl.commands.keys_cmd",
    "devicectl.commands.firmware_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devicectl",
        description="Host controller for a scalp microneedling pen, and its simulator.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a subcommand not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except DevicectlError as exc:
        print(f"devicectl: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("devicectl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
