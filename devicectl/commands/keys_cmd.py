"""`devicectl keys add|list|remove`: the keyring of the clinic's pens.

`add SERIAL` reads the pen's key (64 hex digits) from stdin, so it never shows
in the shell's history or the process list; `list` shows serial numbers, never keys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from devicectl.commands import pen_serial
from devicectl.keys import Keyring, KeyringError, parse_key

#: Read from stdin at most: a key file is 64 hex digits, maybe spaced.
_MAX_KEY_CHARS = 4096


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys", help="the keyring of the clinic's pens (authenticated link)"
    )
    keys.add_argument("--keyring", type=Path, default=None,
                      help="keyring file (default: $DEVICECTL_KEYRING, else "
                      "~/.config/devicectl/keyring.json)")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add or replace a pen's key, read as hex from stdin")
    add.add_argument("serial", type=pen_serial, metavar="SERIAL")
    add.set_defaults(func=run_add)
    lst = sub.add_parser("list", help="the serial numbers the keyring holds keys for")
    lst.set_defaults(func=run_list)
    rm = sub.add_parser("remove", help="forget a pen's key")
    rm.add_argument("serial", type=int, metavar="SERIAL")
    rm.set_defaults(func=run_remove)
    req = sub.add_parser(
        "require", help="whether every pen must authenticate (on: a pen without the "
        "authenticated link is refused, whatever serial it claims)")
    req.add_argument("setting", choices=("on", "off"), metavar="on|off")
    req.set_defaults(func=run_require)


def run_add(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        print(f"paste the key of pen {args.serial} (64 hex digits), then Enter:", file=sys.stderr)
        text = sys.stdin.readline()
    else:
        text = sys.stdin.read(_MAX_KEY_CHARS)  # a key is 64 hex digits; /dev/zero is not one
    if not text.strip():
        raise KeyringError("no key on stdin; e.g. `devicectl keys add 100042 < pen-100042.key`")
    ring = Keyring(args.keyring)
    ring.add(args.serial, parse_key(text, "the key on stdin"))
    print(f"key of pen {args.serial} stored in {ring.path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    ring = Keyring(args.keyring)
    policy = ring.policy()
    if not policy.keys:
        print(f"no keys in {ring.path}", file=sys.stderr)
    for serial in sorted(policy.keys):
        print(serial)
    rule = "every pen must authenticate" if policy.require_auth else (
        "pens without the authenticated link are accepted unless the keyring holds their key")
    print(f"{rule} (`devicectl keys require on|off`)", file=sys.stderr)
    return 0


def run_require(args: argparse.Namespace) -> int:
    ring = Keyring(args.keyring)
    ring.set_require_auth(args.setting == "on")
    if args.setting == "on":
        print(f"every pen must now authenticate ({ring.path}); a pen without the "
              "authenticated link is refused")
    else:
        print(f"pens without the authenticated link are accepted again ({ring.path}), unless "
              "the keyring holds their key")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    ring = Keyring(args.keyring)
    if not ring.remove(args.serial):
        raise KeyringError(f"{ring.path} has no key for pen {args.serial}; `devicectl keys list`")
    print(f"key of pen {args.serial} removed from {ring.path}")
    return 0
