"""`python -m firmware_sim`: serve a simulated pen on a pseudo-terminal, or list scenarios.

`serve` prints `PORT <path>` first (flushed), then runs the pen in real time
until SIGINT or SIGTERM, and exits 0. Any program that opens the path as a
serial port talks to the pen. With `--state FILE` the pen's firmware slots live
in FILE: an update installed while serving is still there at the next serve.
`key SERIAL` prints a simulated pen's test-only device key, for `devicectl keys add`.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
import tty
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from devicectl.errors import DevicectlError
from devicectl.protocol import Capability
from devicectl.signing import sim_device_key
from firmware_sim.bootloader import load_slots
from firmware_sim.faults import load_scenarios
from firmware_sim.misbehave import MisbehavingPen, get_misbehaviour, load_misbehaviours
from firmware_sim.physics import PenParams, load_pen
from firmware_sim.virtual import VirtualPen

TICK_S = 0.001
#: `serve --realtime`: the simulated pen's SCHED_FIFO priority, above the host loop's
#: (devicectl/penloop.py RT_PRIORITY): it stands in for the pen's microcontroller,
#: which the host's load never delays. Opt-in, where permitted, never required.
SIM_RT_PRIORITY = 20


def ask_real_time(priority: int = SIM_RT_PRIORITY) -> str:
    """The calling thread (the simulated pen's loop) at SCHED_FIFO `priority` where
    permitted, what it starts normal again (SCHED_RESET_ON_FORK); what it got, in words.
    Safe to ask: the serve loop waits in select every tick, and the kernel throttles
    real-time threads (sched_rt_runtime_us)."""
    if not hasattr(os, "SCHED_RESET_ON_FORK"):
        return "normal priority (real-time scheduling is not offered by this OS)"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                              os.sched_param(priority))
    except OSError as exc:
        return f"normal priority (real-time refused: {exc.strerror})"
    return f"SCHED_FIFO {priority}"


def serve(
    seed: int,
    scenario: str | None,
    pen: PenParams | None,
    position: bool,
    state: Path | None = None,
    misbehave: str | None = None,
    realtime: bool = False,
) -> int:
    if realtime:  # said on stderr: stdout's first line is the PORT
        print(f"firmware_sim: the simulated pen at {ask_real_time()}", file=sys.stderr,
              flush=True)
    slots = load_slots(state) if state is not None else None
    inner = VirtualPen(seed=seed, scenario=scenario, pen=pen, position=position, slots=slots)
    saved = slots.to_json() if slots is not None else None
    vpen: VirtualPen | MisbehavingPen = inner
    if misbehave is not None:
        vpen = MisbehavingPen(inner, get_misbehaviour(misbehave), seed=seed)
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.set_blocking(master, False)
    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"PORT {path}", flush=True)
    try:
        while not stopping:
            try:
                ready, _, _ = select.select([master], [], [], TICK_S)
            except InterruptedError:
                continue
            now_us = time.monotonic_ns() // 1000
            if ready:
                try:
                    data = os.read(master, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    data = b""  # EIO: nobody holds the port open just now
                if data:
                    vpen.receive_data(data, now_us)
                    if state is not None and slots is not None and slots.to_json() != saved:
                        saved = slots.to_json()
                        _save(state, saved)
            out = vpen.advance(now_us)
            if out:
                # Like a UART with nobody listening: what the terminal cannot
                # take is lost, never queued without bound.
                try:
                    os.write(master, out)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass
    finally:
        os.close(master)
        os.close(slave)
    return 0


def _save(path: Path, text: str) -> None:
    """Write the slots atomically: a pen that loses power mid-write keeps the old file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def list_scenarios() -> int:
    scenarios = load_scenarios()
    misbehaviours = load_misbehaviours()
    width = max(len(n) for n in [*scenarios, *misbehaviours])
    for sc in scenarios.values():
        print(f"{sc.name:<{width}}  {sc.description}")
    print("\nmisbehaving pens (--misbehave):")
    for mb in misbehaviours.values():
        print(f"{mb.name:<{width}}  {mb.description}")
    return 0


def with_auth(pen: PenParams | None, auth: bool, required: bool) -> PenParams | None:
    """The pen with the AUTH (and AUTH_REQUIRED) capability bits set as asked."""
    if not (auth or required):
        return pen
    base = pen or PenParams()
    bits = Capability.AUTH | (Capability.AUTH_REQUIRED if required else 0)
    return replace(base, capabilities=base.capabilities | int(bits))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    srv = sub.add_parser("serve", help="serve a simulated pen on a pseudo-terminal")
    srv.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    srv.add_argument("--scenario", help="fault scenario name (see `scenarios`)")
    srv.add_argument("--pen", help="YAML file describing the pen (PenParams fields)")
    srv.add_argument("--no-position", action="store_true", help="a pen without position tracking")
    srv.add_argument("--auth", action="store_true", help="the pen offers the authenticated link")
    srv.add_argument("--auth-required", action="store_true",
                     help="the pen obeys only signed commands (implies --auth)")
    srv.add_argument("--state", type=Path,
                     help="file keeping the pen's firmware slots between runs")
    srv.add_argument("--misbehave", help="a misbehaving pen's name (see `scenarios`)")
    srv.add_argument("--realtime", action="store_true",
                     help="run the pen at real-time priority where permitted (SCHED_FIFO "
                     f"{SIM_RT_PRIORITY}), as its own microcontroller would; never required")
    sub.add_parser("scenarios", help="list the fault scenarios and the misbehaving pens")
    key = sub.add_parser("key", help="print a simulated pen's test-only device key (hex)")
    key.add_argument("serial", type=int, help="the pen's serial number")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "scenarios":
            return list_scenarios()
        if args.command == "key":
            print(sim_device_key(args.serial).hex())
            return 0
        pen = load_pen(args.pen) if args.pen else None
        return serve(args.seed, args.scenario, with_auth(pen, args.auth, args.auth_required),
                     not args.no_position, args.state, args.misbehave, args.realtime)
    except DevicectlError as exc:
        print(f"firmware_sim: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
