"""A whole session on the authenticated link, host and simulated pen through real bytes
in virtual time (spec 1.1): AUTH_REQUIRED end to end, a pen that cannot prove its key,
no downgrade, firmware at the handshake, and frames injected on the wire."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from test_virtual_session import END_STATES, MAP, plan_for

from devicectl import protocol as p
from devicectl.commands.firmware_cmd import drive_virtual
from devicectl.controller import Command, Controller, StartFacts, State
from devicectl.firmware import load_image
from devicectl.fw_update import Updater
from devicectl.signing import Drop, sim_device_key
from firmware_sim.bootloader import IMAGES_DIR
from firmware_sim.physics import PenParams
from firmware_sim.virtual import VirtualPen

STEP_US = 500
REQUIRED = int(p.Capability.AUTH | p.Capability.AUTH_REQUIRED)
Keys = Callable[[int], bytes | None]


def no_keys(_serial: int) -> bytes | None:
    return None


def make_pen(capabilities: int = 0, **changes: int) -> VirtualPen:
    base = replace(PenParams(), **changes)
    return VirtualPen(seed=3, zone_map=MAP,
                      pen=replace(base, capabilities=base.capabilities | capabilities))


class DropFirst:
    """A `to_pen`/`to_host` filter for `session`: the first whole frame `match` takes is
    lost on the wire (`lost` holds when); the rest pass as they came. The bytes after
    the last delimiter of a call are dropped too (every call here carries whole frames)."""

    def __init__(self, match: Callable[[p.Message | p.Unknown], bool]) -> None:
        self.match = match
        self.lost: list[int] = []

    def __call__(self, data: bytes, now: int) -> bytes:
        out = b""
        for piece in data.split(b"\x00")[:-1]:
            frames = p.Decoder().feed(piece + b"\x00")
            if not self.lost and frames and self.match(frames[0].message):
                self.lost.append(now)
                continue
            out += piece + b"\x00"
        return out


def session(
    pen: VirtualPen,
    keys: Keys = no_keys,
    *,
    limit_us: int = 300_000_000,
    to_pen: Callable[[bytes, int], bytes] | None = None,
    to_host: Callable[[bytes, int], bytes] | None = None,
) -> Controller:
    ctl = Controller(plan_for, MAP, StartFacts("p-auth", frozenset()), nonce=0x5EC,
                     now_us=0, keys=keys)
    # the simulated technician watches the dose map, as Session arranges for virtual pens
    pen.watch_map(lambda zid: ctl.coverage.hand_view(zid) if ctl.coverage else None)
    pen.receive_data(ctl.connect(0).data, 0)
    now = 0
    while now < limit_us and ctl.state not in END_STATES:
        now += STEP_US
        from_pen = pen.advance(now)
        if to_host is not None:
            from_pen = to_host(from_pen, now)
        data = ctl.receive_data(from_pen, now).data + ctl.tick(now).data
        if ctl.state is State.READY:
            data += ctl.command(Command.START, now).data
        elif ctl.state is State.ZONE_DONE:
            data += ctl.command(Command.NEXT_ZONE, now).data
        if to_pen is not None:
            data = to_pen(data, now)
        pen.receive_data(data, now)
    return ctl


def test_auth_required_session_runs_end_to_end_signed() -> None:
    pen = make_pen(REQUIRED)
    ctl = session(pen, sim_device_key)
    assert ctl.state is State.COMPLETE, ctl.go_no_go
    auth = pen.firmware.auth
    assert auth is not None and auth.session is not None
    assert auth.session.rx_counter > 1000  # the host's frames were signed and accepted
    assert auth.dropped_total == 0 and ctl.link_counters["auth_dropped"] == 0


def test_pen_that_cannot_prove_its_key_is_refused_before_configure() -> None:
    pen = make_pen(REQUIRED)
    ctl = session(pen, lambda _serial: bytes(32))
    assert ctl.state is State.REFUSED
    assert "could not prove its key" in " ".join(ctl.go_no_go)
    assert pen.firmware.target is None and pen.firmware.state is p.PenState.IDLE


def test_pen_offering_auth_without_a_key_in_the_keyring_is_refused() -> None:
    ctl = session(make_pen(int(p.Capability.AUTH)))
    assert ctl.state is State.REFUSED and "devicectl keys add 100042" in ctl.go_no_go[0]


def test_downgrade_pen_without_auth_whose_key_is_known_is_refused() -> None:
    pen = make_pen()
    ctl = session(pen, sim_device_key)
    assert ctl.state is State.REFUSED and "no downgrade" in ctl.go_no_go[0]
    assert pen.firmware.target is None


def test_older_firmware_is_a_no_go_naming_the_update_command() -> None:
    ctl = session(make_pen(fw_version=0x0100))
    assert ctl.state is State.REFUSED
    assert any("update the pen's firmware: devicectl firmware update IMAGE" in r
               for r in ctl.go_no_go)


def test_update_to_1_2_then_the_next_session_sees_1_2() -> None:
    pen = make_pen()
    updater = Updater(load_image(IMAGES_DIR / "pen-1.2.penf"), key_for=no_keys, now_us=0)
    drive_virtual(updater, pen, 0)
    assert updater.error is None
    ctl = session(pen)
    assert ctl.device is not None and ctl.device.fw_version == 0x0102
    assert ctl.state is State.COMPLETE


def test_unsigned_commands_injected_on_a_secure_link_are_refused_by_the_pen() -> None:
    injected = [False]

    def attacker(data: bytes, now: int) -> bytes:
        if not injected[0] and now > 300_000:
            injected[0] = True
            return data + p.encode(p.SetTarget(1500, 1000, 9), 200)
        return data

    pen = make_pen(REQUIRED)
    ctl = session(pen, sim_device_key, to_pen=attacker)
    assert injected[0] and ctl.state is State.COMPLETE
    assert pen.firmware.target is None or pen.firmware.target.zone_id != 9
    assert pen.firmware.auth is not None and pen.firmware.auth.dropped_total == 1


def test_replayed_host_frame_is_dropped_by_the_pen() -> None:
    recorded: list[bytes] = []

    def replayer(data: bytes, now: int) -> bytes:
        if 200_000 < now < 210_000 and data:
            recorded.append(data)
        if recorded and 400_000 < now <= 400_000 + STEP_US:
            return data + recorded[0]
        return data

    pen = make_pen(REQUIRED)
    ctl = session(pen, sim_device_key, to_pen=replayer)
    assert recorded and ctl.state is State.COMPLETE
    auth = pen.firmware.auth
    assert auth is not None and auth.session is not None
    assert auth.session.dropped[Drop.OLD_COUNTER] >= 1


def test_forged_telemetry_injected_towards_the_host_is_dropped_and_counted() -> None:
    forged = p.encode(p.Telemetry(0, 3, 0, 1000, 1900, 1000, 0, 0, 0, 1, 1, 3900), 1)
    sent = [False]

    def attacker(data: bytes, now: int) -> bytes:
        if not sent[0] and now > 300_000:
            sent[0] = True
            return data + forged  # an over-depth reading the pen never made
        return data

    ctl = session(make_pen(REQUIRED), sim_device_key, to_host=attacker)
    assert sent[0] and ctl.state is State.COMPLETE  # no ESTOP from the forged frame
    assert ctl.link_counters["auth_dropped"] == 1


def test_after_a_dropped_cable_the_reconnect_authenticates_anew_and_the_session_completes() -> None:
    base = PenParams()
    pen = VirtualPen(seed=3, zone_map=MAP, scenario="disconnect",
                     pen=replace(base, capabilities=base.capabilities | REQUIRED))
    ctl = Controller(plan_for, MAP, StartFacts("p-auth", frozenset()), nonce=0x5EC,
                     now_us=0, keys=sim_device_key)
    # the simulated technician watches the dose map, as Session arranges for virtual pens
    pen.watch_map(lambda zid: ctl.coverage.hand_view(zid) if ctl.coverage else None)
    pen.receive_data(ctl.connect(0).data, 0)
    now, proofs, lost, signed_again = 0, 0, False, 0
    while now < 300_000_000 and ctl.state not in (State.COMPLETE, State.REFUSED):
        now += STEP_US
        out = [ctl.receive_data(pen.advance(now), now), ctl.tick(now)]
        if ctl.state is State.READY:
            out.append(ctl.command(Command.START, now))
        elif ctl.state is State.ZONE_DONE:
            out.append(ctl.command(Command.NEXT_ZONE, now))
        elif ctl.state is State.LINK_LOST:
            lost = True
            out.append(ctl.command(Command.RECONNECT, now))
        elif ctl.state is State.FAULT and now % 100_000 == 0:
            out.append(ctl.command(Command.CLEAR_FAULT, now))  # the pen's WATCHDOG
        proofs += sum("proved its key" in e.text for o in out for e in o.events)
        signed_again += sum("AUTH_BEGIN again, signed" in e.text for o in out for e in o.events)
        pen.receive_data(b"".join(o.data for o in out), now)
    # the pen kept the first link's session over the dropped cable: it refused the
    # reconnect's unsigned AUTH_BEGIN (NACK AUTH), and took it signed with that session
    assert lost and proofs == 2 and signed_again == 1 and ctl.state is State.COMPLETE


def test_a_new_host_meeting_a_pen_that_still_holds_a_secure_session_is_refused_in_words() -> None:
    """Spec 1.1: once secure, the pen refuses an unsigned AUTH_BEGIN (NACK AUTH). A
    host that never held the pen's session (restarted) cannot sign one: the go/no-go
    names the way out, and the pen keeps its session (not ended by anyone on the wire)."""
    pen = make_pen(int(p.Capability.AUTH))
    first = Controller(plan_for, MAP, StartFacts("p-auth", frozenset()), nonce=0x5EC,
                       now_us=0, keys=sim_device_key)
    pen.receive_data(first.connect(0).data, 0)
    now = 0
    while first.state is not State.READY and now < 5_000_000:
        now += STEP_US
        pen.receive_data(first.receive_data(pen.advance(now), now).data
                         + first.tick(now).data, now)
    assert first.state is State.READY
    held = pen.firmware.auth.session if pen.firmware.auth else None
    assert held is not None
    second = Controller(plan_for, MAP, StartFacts("p-auth", frozenset()), nonce=0x5ED,
                        now_us=now, keys=sim_device_key)
    pen.receive_data(second.connect(now).data, now)
    end = now + 3_000_000
    while second.state is State.CONNECTING and now < end:
        now += STEP_US
        pen.receive_data(second.receive_data(pen.advance(now), now).data
                         + second.tick(now).data, now)
    assert second.state is State.REFUSED
    assert any("switch the pen off and on" in r for r in second.go_no_go), second.go_no_go
    assert pen.firmware.auth is not None and pen.firmware.auth.session is held
