"""`devicectl firmware info|update|sign`: the pen's firmware images.

`info` reads an image and says whether its signature holds for a known maker's
key (exit 1 when the image is bad). `update` sends one to a pen on a port, or
to the in-process simulated pen (`--sim`, its slots kept in `--sim-state FILE`
between runs), with a progress bar. `sign` makes images for simulated pens
only, with the spec's test-only key, and only when `--test-key` says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from devicectl.clock import monotonic_us
from devicectl.commands import whole_number
from devicectl.errors import DevicectlError, LinkError
from devicectl.firmware import (
    MAX_IMAGE_BYTES,
    SIM_HW_ID,
    TEST_KEY_NAME,
    Image,
    ImageError,
    check_image,
    load_image,
    parse_version,
    read_at_most,
    sign_with_test_key,
    version_text,
)
from devicectl.fw_update import KeySource, Updater

_READ_TIMEOUT_S = 0.002
_VIRTUAL_STEP_US = 1000
_VIRTUAL_LIMIT_US = 120_000_000
_REOPEN_ATTEMPTS = 5


def register(subparsers: Any) -> None:
    fw = subparsers.add_parser("firmware", help="inspect, sign and install the pen's firmware")
    sub = fw.add_subparsers(dest="firmware_command", required=True, metavar="ACTION")
    info = sub.add_parser("info", help="what an image holds, and whether its signature holds")
    info.add_argument("image", type=Path, metavar="IMAGE")
    info.set_defaults(func=run_info)

    upd = sub.add_parser("update", help="install an image on the pen")
    upd.add_argument("image", type=Path, metavar="IMAGE")
    where = upd.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the pen's port: device path, pseudo-terminal or URL")
    where.add_argument("--sim", action="store_true", help="the in-process simulated pen")
    upd.add_argument("--sim-state", type=Path, default=None,
                     help="with --sim: file keeping the simulated pen's firmware between runs")
    upd.add_argument("--sim-auth-required", action="store_true",
                     help="with --sim: the simulated pen obeys only signed commands")
    upd.add_argument("--keyring", type=Path, default=None, help="keyring file (see `keys`)")
    upd.add_argument("--baud", type=whole_number, default=None, help="UART baud rate")
    upd.add_argument("--test-key", action="store_true",
                     help="with --port: send an image signed with the simulator's public test "
                     "key (a pen served by `python -m firmware_sim serve`, never a real one)")
    upd.set_defaults(func=run_update)

    sign = sub.add_parser("sign", help="sign a payload for SIMULATED pens (test key only)")
    sign.add_argument("payload", type=Path, metavar="PAYLOAD")
    sign.add_argument("--version", required=True, help="firmware version, e.g. 1.2")
    sign.add_argument("--hw-id", type=int, default=SIM_HW_ID, help="hardware id (default 1)")
    sign.add_argument("--out", "-o", type=Path, required=True, help="the image file to write")
    sign.add_argument("--test-key", action="store_true",
                      help="required: sign with the simulator's public test key (never for "
                      "a real pen)")
    sign.set_defaults(func=run_sign)


# --- info ---------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    signer = image.signed_by()
    print(f"image      {args.image}")
    print(f"format     {image.image_format}")
    print(f"hw id      {image.hw_id}")
    print(f"version    {image.version_text}")
    print(f"payload    {len(image.payload)} bytes")
    print(f"crc32      0x{image.crc32:08x}")
    print(f"signature  {'valid: ' + signer if signer else 'NOT VALID for any known key'}")
    check_image(image, str(args.image))  # exit 1, one sentence, on a bad signature
    return 0


# --- sign ---------------------------------------------------------------------


def run_sign(args: argparse.Namespace) -> int:
    if not args.test_key:
        raise DevicectlError(
            "`firmware sign` only signs images for simulated pens, with the spec's public test "
            "key; say so with --test-key (a real pen's images are signed by its maker)"
        )
    try:
        payload = read_at_most(args.payload, MAX_IMAGE_BYTES + 1)  # sign names "too large"
    except OSError as exc:
        raise ImageError(f"{args.payload}: cannot read the payload ({exc.strerror})") from None
    image = sign_with_test_key(args.hw_id, parse_version(args.version), payload)
    args.out.write_bytes(image)
    print(f"{args.out}: firmware {args.version} for hw id {args.hw_id}, {len(image)} bytes, "
          "signed with the simulator's TEST key")
    return 0


# --- update -------------------------------------------------------------------


class _Pen(Protocol):
    def receive_data(self, data: bytes, now_us: int) -> None: ...
    def advance(self, now_us: int) -> bytes: ...


class _Bar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._shown = -1
        self._notes = 0

    def show(self, updater: Updater) -> None:
        for note in updater.notes[self._notes:]:
            print(("\n" if self._tty else "") + f"note: {note}", file=sys.stderr)
        self._notes = len(updater.notes)
        done, total = updater.progress
        pct = 100 * done // total
        if pct == self._shown:
            return
        self._shown = pct
        if self._tty:
            bar = "#" * (pct * 30 // 100)
            print(f"\r[{bar:<30}] {pct:3d}% {done}/{total} B", end="", file=sys.stderr)
        elif pct % 25 == 0:
            print(f"sent {done}/{total} bytes ({pct}%)", file=sys.stderr)

    def end(self) -> None:
        if self._tty:
            print(file=sys.stderr)


def _keys(args: argparse.Namespace) -> KeySource:
    from devicectl.keys import Keyring

    return Keyring(args.keyring).policy()


def drive_virtual(updater: Updater, pen: _Pen, now_us: int, bar: _Bar | None = None) -> int:
    """Run an update against an in-process pen in virtual time; the time it ended."""
    pen.receive_data(updater.start(now_us), now_us)
    end_us = now_us + _VIRTUAL_LIMIT_US
    while not updater.done and now_us < end_us:
        now_us += _VIRTUAL_STEP_US
        out = updater.receive_data(pen.advance(now_us), now_us) + updater.tick(now_us)
        if out:
            pen.receive_data(out, now_us)
        if bar is not None:
            bar.show(updater)
    return now_us


def _update_sim(args: argparse.Namespace, image: Image, bar: _Bar) -> Updater:
    from devicectl.protocol import Capability
    from devicectl.signing import sim_device_key
    from firmware_sim.bootloader import load_slots
    from firmware_sim.physics import PenParams
    from firmware_sim.virtual import VirtualPen

    if args.sim_state and not args.sim_state.parent.is_dir():  # before anything is sent
        raise DevicectlError(f"no folder {args.sim_state.parent} for --sim-state "
                             f"{args.sim_state}: check the path, or create the folder first")
    slots = load_slots(args.sim_state) if args.sim_state else None
    pen = PenParams()
    if args.sim_auth_required:
        pen = replace(pen, capabilities=pen.capabilities
                      | int(Capability.AUTH | Capability.AUTH_REQUIRED))
        print("simulated pen: using its test-only key, derived from its serial number",
              file=sys.stderr)
    vpen = VirtualPen(seed=0, pen=pen, slots=slots)
    # The simulated pen's "keyring": its derived test key, when it offers AUTH at all.
    keys: KeySource = sim_device_key if args.sim_auth_required else (lambda _serial: None)
    updater = Updater(image, key_for=keys, now_us=0)
    drive_virtual(updater, vpen, 0, bar)
    if args.sim_state and slots is not None:
        try:
            args.sim_state.write_text(slots.to_json(), encoding="utf-8")
        except OSError as exc:
            raise DevicectlError(f"{args.sim_state}: cannot keep the simulated pen's state "
                                 f"({exc.strerror})") from None
    elif not args.sim_state:
        print("note: without --sim-state the simulated pen's new firmware is not kept",
              file=sys.stderr)
    return updater


def _update_port(args: argparse.Namespace, image: Image, bar: _Bar) -> Updater:
    from devicectl.link import DEFAULT_BAUDRATE, open_transport

    baud = args.baud or DEFAULT_BAUDRATE
    updater = Updater(image, key_for=_keys(args), now_us=monotonic_us())
    reopened = 0
    start = True
    while not updater.done:
        try:
            with open_transport(args.port, baudrate=baud) as port:
                if start:
                    port.write(updater.start(monotonic_us()))
                    start = False
                while not updater.done:
                    data = port.read(4096, _READ_TIMEOUT_S)
                    now = monotonic_us()
                    out = (updater.receive_data(data, now) if data else b"") + updater.tick(now)
                    if out:
                        port.write(out)
                    bar.show(updater)
        except LinkError as exc:
            # The port itself went away (a cable pulled): open it again and begin again;
            # the chunks are idempotent.
            reopened += 1
            if reopened > _REOPEN_ATTEMPTS:
                raise
            updater.notes.append(f"{exc}; opening {args.port} again")
            time.sleep(0.5)
            start = True
            updater = _restarted(updater, args)
    return updater


def _restarted(old: Updater, args: argparse.Namespace) -> Updater:
    new = Updater(old.image, key_for=_keys(args), now_us=monotonic_us())
    new.notes = old.notes
    new.attempt = old.attempt
    return new


def run_update(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    signer = check_image(image, str(args.image))  # a bad image never reaches the pen
    if signer == TEST_KEY_NAME and not (args.sim or args.test_key):
        raise ImageError(
            f"{args.image} is signed with the simulator's public test key, for simulated pens "
            "only; for a simulated pen on a port say so with --test-key"
        )
    print(f"installing firmware {image.version_text} ({len(image.data)} bytes) from {args.image}",
          file=sys.stderr)
    bar = _Bar()
    try:
        # the image checked above, not a second reading of the file (which could differ)
        updater = _update_sim(args, image, bar) if args.sim else _update_port(args, image, bar)
    finally:
        bar.end()
    if updater.error is not None:
        raise DevicectlError(f"firmware update failed: {updater.error}")
    if not updater.done:
        raise DevicectlError("firmware update did not finish in time; the pen's state is unknown")
    print(f"the pen now runs firmware {version_text(updater.running_version or 0)}")
    return 0
