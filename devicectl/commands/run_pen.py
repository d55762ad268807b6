"""How `devicectl run` starts the pen process: where the pen is (the link's settings,
built into a link by the pen process itself), the keys a pen must prove, and the
cores: this process and its views keep off the pen process's."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
from typing import Any

from rich.console import Console

from devicectl.penproc import LinkSettings, PenProcess, SimSettings
from devicectl.zones import ZoneMap


def link_settings(args: argparse.Namespace, zone_map: ZoneMap) -> LinkSettings:
    """Where the pen is, as the pen process needs it to open the link itself."""
    if not args.sim:
        return LinkSettings(port=args.port)
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    return LinkSettings(sim=SimSettings(
        seed=seed, scenario=args.scenario, misbehave=getattr(args, "misbehave", None),
        position=not args.no_position,
        auth_required=bool(getattr(args, "sim_auth_required", False)),
        sim_state=getattr(args, "sim_state", None), speed=args.speed, zone_map=zone_map))


def share_cores(pen: PenProcess) -> set[int] | None:
    """This process (the CLI, the page's server, the terminal view it starts) keeps to
    the cores the pen process leaves to the views (os_grants.ask_os: all but the one it
    is pinned to, three cores or more); affinity is per thread on Linux, and what this
    process starts afterwards inherits it. Returns the cores it had, for set_cores at
    the end (None: nothing changed)."""
    if not hasattr(os, "sched_getaffinity") or not pen.wait_started(30.0):
        return None
    views = pen.grant_data.get("views_cores")
    cpus = os.sched_getaffinity(0)
    keep = cpus & set(views or ())
    if not keep or keep == cpus:
        return None
    set_cores(keep)
    return cpus


def set_cores(cpus: set[int] | None) -> None:
    if cpus is None:
        return
    with contextlib.suppress(OSError):  # never required
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that has just ended
                os.sched_setaffinity(int(tid), cpus)


def session_keys(args: argparse.Namespace, console: Console) -> Any:
    """The keys a pen must prove: the keyring's (checked now), or the simulator's test key."""
    from devicectl.keys import Keyring
    from devicectl.signing import sim_device_key

    if getattr(args, "sim", False):
        if not getattr(args, "sim_auth_required", False):
            return None
        console.print("simulated pen: its test-only key is derived from its serial number")
        return sim_device_key
    return Keyring().policy()
