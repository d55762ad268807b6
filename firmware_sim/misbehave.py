"""Misbehaving pens: a layer around a VirtualPen that lies, ignores, floods or forgets.

The firmware itself stays a correct pen; this layer stands between it and the
wire, like a faulty board around good code. From its trigger on (a condition:
firmware_sim/triggers.py) each effect of a misbehaviour (data in
data/misbehaviours.yaml) rewrites host frames before the firmware sees them,
rewrites or adds pen frames before the host sees them, or changes the pen
(its target, its rate, a reboot). `first_bad_us` is the moment the host could
first see the misbehaviour: the spec's bounds on the host count from there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from devicectl.errors import ProfileError
from devicectl.protocol import (
    ACK_REQ_TYPES,
    Ack,
    Decoder,
    DeviceInfo,
    Estop,
    Frame,
    Heartbeat,
    Hello,
    Message,
    MsgType,
    Nack,
    PenState,
    SetTarget,
    Stop,
    Telemetry,
    Unknown,
    encode,
    encode_raw,
)
from firmware_sim.firmware import Firmware
from firmware_sim.physics import Physics
from firmware_sim.triggers import Trigger, TriggerWatch, trigger_from

if TYPE_CHECKING:
    from firmware_sim.virtual import VirtualPen

MISBEHAVIOURS_PATH: Final = Path(__file__).parent / "data" / "misbehaviours.yaml"
EFFECTS: Final = (
    "lie-target",  # applies another depth than commanded, and says so
    "overspeed",  # runs the motor faster than commanded
    "commands",  # does not apply some commands, and ACKs or NACKs them anyway
    "proto",  # DEVICE_INFO says another protocol version
    "identity",  # DEVICE_INFO names another serial number or cartridge
    "garbage",  # a flood of random bytes between its frames
    "silent",  # says nothing more
    "reboot",  # restarts: BOOT, stamp counter 0, and talks again at once
    "markup",  # frames of an unknown type whose bodies look like markup
    "cut",  # the cable drops out both ways for a while
)
#: H1: TELEMETRY must report the target from 2 telemetry periods (500 Hz) after its ACK.
H1_GRACE_US: Final = 2 * 2_000
_ALL_COMMANDS: Final = frozenset(MsgType(t).name for t in ACK_REQ_TYPES)
#: A pen restarted by a brown-out comes back talking: greeted with this nonce by itself.
_SELF_NONCE: Final = 0


@dataclass(frozen=True, slots=True)
class Effect:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    name: str
    description: str
    effects: tuple[Effect, ...]
    trigger: Trigger = field(default_factory=Trigger)
    #: what the spec wants of the host: "ESTOP <reason>", "refuse", or "carry on"
    expect: str = "carry on"
    #: extra time the pen may go on stamping past the spec's bound (its watchdog)
    grace_ms: int = 0


def load_misbehaviours(path: Path = MISBEHAVIOURS_PATH) -> dict[str, Misbehaviour]:
    """Every misbehaviour in the file, by name; a malformed entry is named in the error."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, Misbehaviour] = {}
    for name, raw in doc.items():
        where = f"{path.name}: misbehaviour {name!r}"
        if not isinstance(raw, dict) or not isinstance(raw.get("description"), str):
            raise ProfileError(f"{where} needs a mapping with a description.")
        raw = {("on" if k is True else k): v for k, v in raw.items()}  # YAML 1.1: on = true
        effects = []
        for i, e in enumerate(raw.get("effects") or ()):
            if not isinstance(e, dict) or e.get("kind") not in EFFECTS:
                raise ProfileError(
                    f"{where}: effect {i + 1} needs a kind, one of {', '.join(EFFECTS)}."
                )
            effects.append(Effect(e["kind"], {k: v for k, v in e.items() if k != "kind"}))
        if not effects:
            raise ProfileError(f"{where} needs at least one effect.")
        for e in effects:
            _check_params(e, where)
        out[str(name)] = Misbehaviour(
            str(name),
            raw["description"],
            tuple(effects),
            trigger_from(raw, where),
            str(raw.get("expect", "carry on")),
            int(raw.get("grace_ms", 0)),
        )
    return out


def get_misbehaviour(name: str) -> Misbehaviour:
    found = load_misbehaviours()
    if name not in found:
        raise ProfileError(
            f"unknown misbehaving pen {name!r}; `python -m firmware_sim scenarios` lists them: "
            f"{', '.join(found)}."
        )
    return found[name]


def _check_params(e: Effect, where: str) -> None:
    if e.kind == "commands":
        types = e.params.get("types", "all")
        names = _ALL_COMMANDS if types == "all" else set(types)
        if not names <= _ALL_COMMANDS:
            raise ProfileError(f"{where}: commands: types are 'all' or of {sorted(_ALL_COMMANDS)}.")
        status = e.params.get("status", "OK")
        if status not in Nack.__members__:
            raise ProfileError(f"{where}: commands: status {status!r} is not a NACK code name.")


class MisbehavingPen:
    """A VirtualPen with a misbehaviour; the same two entry points, the same attributes."""

    def __init__(self, inner: VirtualPen, misbehaviour: Misbehaviour, *, seed: int = 0) -> None:
        self.inner = inner
        self.misbehaviour = misbehaviour
        self.watch = TriggerWatch(misbehaviour.trigger)
        self.fired_at_us: int | None = None
        self.first_bad_us: int | None = None
        #: when the first DEVICE_INFO that lies about the pen went out
        self.first_bad_info_us: int | None = None
        self._seed = seed
        self._rng = random.Random(seed ^ 0xBAD)
        self._host = Decoder()
        self._pen = Decoder()
        self._by_kind = {e.kind: e.params for e in misbehaviour.effects}
        self._commands = [e.params for e in misbehaviour.effects if e.kind == "commands"]
        #: host seq -> (type the host sent, status the ACK must say) for substituted commands
        self._acks: dict[int, tuple[int, int]] = {}
        self._commanded: SetTarget | None = None  # the host's last SET_TARGET
        self._cut_until_us = -1
        self._last_us = 0
        self._markup_seq = 0
        self._pending_markup: list[bytes] = []
        #: SET_TARGETs sent since the trigger and not yet ACKed, and the last ACK's time:
        #: H1 holds TELEMETRY to the target only 2 periods after its ACK
        self._target_pending: set[int] = set()
        self._target_acked_us = -(10**12)

    # --- what the rest of the simulation reads ---------------------------------

    @property
    def firmware(self) -> Firmware:
        return self.inner.firmware

    @property
    def physics(self) -> Physics:
        return self.inner.physics

    def __getattr__(self, name: str) -> Any:  # hand, pen, faults: the inner pen's
        return getattr(self.inner, name)

    @property
    def active(self) -> bool:
        return self.fired_at_us is not None

    def fire(self) -> None:
        """Start the misbehaviour at the next step, whatever its trigger."""
        self.watch.fire()

    # --- the two entry points --------------------------------------------------

    def receive_data(self, data: bytes, now_us: int) -> None:
        out = bytearray()
        for frame in self._host.feed(data):
            msg = frame.message
            if isinstance(msg, Unknown):
                out += encode_raw(msg.type_code, msg.body, frame.seq, frame.flags)
                continue
            self.watch.host_frame(msg)
            self._check_trigger(now_us)
            if isinstance(msg, SetTarget):
                self._commanded = msg
                if self.active:
                    self._target_pending.add(frame.seq)
            out += self._host_frame(frame, now_us)
        if now_us < self._cut_until_us or not out:
            return
        self.inner.receive_data(bytes(out), now_us)

    def next_event_us(self, now_us: int) -> int:
        return self.inner.next_event_us(now_us)

    def advance(self, now_us: int) -> bytes:
        out = self.inner.advance(now_us)
        self._check_trigger(now_us)
        dt_us, self._last_us = now_us - self._last_us, now_us
        if not self.active:
            return out
        if now_us < self._cut_until_us or "silent" in self._by_kind:
            return b""
        if out:
            out = self._pen_frames(out, now_us)
        garbage = self._by_kind.get("garbage")
        if garbage is not None:
            n = int(float(garbage.get("bytes_per_ms", 40)) * dt_us / 1000)
            if n:
                self._bad(now_us)
                out = self._rng.randbytes(n) + b"\x00" + out
        return out

    # --- the trigger and the effects that act at once --------------------------

    def _check_trigger(self, now_us: int) -> None:
        if self.active or not self.watch.check(self.inner.firmware):
            return
        self.fired_at_us = now_us
        fw = self.inner.firmware
        by = self._by_kind
        if "cut" in by:
            self._cut_until_us = now_us + int(by["cut"].get("duration_ms", 400)) * 1000
            self._bad(now_us)
        if "silent" in by:
            self._bad(now_us)
        if fw.target is not None and ("lie-target" in by or "overspeed" in by):
            fw.target = self._twisted(fw.target)
        if "reboot" in by:
            self._reboot(now_us)
        markup = by.get("markup")
        if markup is not None:
            self._pending_markup = [str(b).encode() for b in markup.get("bodies", ["[/]"])]

    def _reboot(self, now_us: int) -> None:
        """A restart: a new firmware and motor, the cartridge kept; it greets itself."""
        inner = self.inner
        old = inner.physics
        physics = Physics(inner.pen, seed=self._seed + 1)
        physics.insert_cartridge(old.cartridge_id, old.cartridge_stamps)
        inner.physics = physics
        inner.firmware = Firmware(inner.pen, physics, seed=self._seed + 1)
        inner.firmware.receive_data(encode(Hello(1, _SELF_NONCE), 0), now_us)  # answer dropped
        # Not bad by itself: only once its TELEMETRY disagrees with what the host holds.

    def _twisted(self, target: SetTarget) -> SetTarget:
        """The target the pen applies instead of the one commanded."""
        lie = self._by_kind.get("lie-target")
        if lie is not None:
            depth = int(lie.get("depth_um", 0)) or target.depth_um + int(lie.get("offset_um", 300))
            target = replace(target, depth_um=max(0, min(depth, 1500)))
        fast = self._by_kind.get("overspeed")
        if fast is not None:
            rate = round(target.rate_dhz * float(fast.get("factor", 1.4)))
            target = replace(target, rate_dhz=min(rate, self.inner.pen.max_rate_dhz))
        return target

    def _bad(self, now_us: int) -> None:
        if self.first_bad_us is None:
            self.first_bad_us = now_us

    # --- host -> pen -----------------------------------------------------------

    def _host_frame(self, frame: Frame, now_us: int) -> bytes:
        msg = frame.message
        assert not isinstance(msg, Unknown)
        if not self.active:
            return encode(msg, frame.seq, frame.flags)
        twists = "lie-target" in self._by_kind or "overspeed" in self._by_kind
        if isinstance(msg, SetTarget) and twists:
            msg = self._twisted(msg)
        rule = self._command_rule(msg.TYPE.name)
        if rule is not None:
            status = int(Nack[rule.get("status", "OK")])
            if frame.flags & 1:
                self._acks[frame.seq] = (int(msg.TYPE), status)
            if not rule.get("apply", False):
                if self._would_change(msg):
                    self._bad(now_us)  # the pen does not do what it was told
                return encode(Heartbeat(0), frame.seq, frame.flags)
            if status != Nack.OK:
                self._bad(now_us)
        return encode(msg, frame.seq, frame.flags)

    def _would_change(self, msg: Message) -> bool:
        """Whether obeying `msg` would change the pen: ignoring a repeat hides nothing."""
        fw = self.inner.firmware
        if isinstance(msg, SetTarget):
            return fw.target != msg
        if isinstance(msg, Stop):
            return fw.state is PenState.STAMPING
        if isinstance(msg, Estop):
            return fw.state is not PenState.FAULT
        return True

    def _command_rule(self, type_name: str) -> dict[str, Any] | None:
        for rule in self._commands:
            types = rule.get("types", "all")
            if (types == "all" and type_name in _ALL_COMMANDS) or type_name in types:
                return rule
        return None

    # --- pen -> host -----------------------------------------------------------

    def _pen_frames(self, data: bytes, now_us: int) -> bytes:
        by = self._by_kind
        out = bytearray()
        if self._pending_markup:
            for body in self._pending_markup:
                out += encode_raw(int(by["markup"].get("type", 0x7E)), body, self._markup_seq, 0)
                self._markup_seq = (self._markup_seq + 1) & 0xFF
            self._pending_markup = []
            self._bad(now_us)
        for frame in self._pen.feed(data):
            msg = frame.message
            if isinstance(msg, Unknown):
                out += encode_raw(msg.type_code, msg.body, frame.seq, frame.flags)
                continue
            if isinstance(msg, Ack) and msg.acked_seq in self._acks:
                acked_type, status = self._acks.pop(msg.acked_seq)
                msg = Ack(msg.acked_seq, acked_type, status)
            if isinstance(msg, Ack) and msg.acked_type == SetTarget.TYPE:
                self._target_pending.discard(msg.acked_seq)
                self._target_acked_us = now_us
            elif isinstance(msg, DeviceInfo):
                msg = self._device_info(msg, now_us)
            elif isinstance(msg, Telemetry) and self.first_bad_us is None:
                self._watch_telemetry(msg, now_us)
            out += encode(msg, frame.seq, frame.flags)
        return bytes(out)

    def _device_info(self, info: DeviceInfo, now_us: int) -> DeviceInfo:
        by = self._by_kind
        if ("proto" in by or "identity" in by) and self.first_bad_info_us is None:
            self.first_bad_info_us = now_us
        if "proto" in by:
            info = replace(info, proto=int(by["proto"].get("proto", 2)))
            self._bad(now_us)
        ident = by.get("identity")
        if ident is not None:
            info = replace(
                info,
                serial_number=info.serial_number + int(ident.get("serial_offset", 0)),
                cartridge_id=int(ident.get("cartridge_id", info.cartridge_id)),
            )
            self._bad(now_us)
        return info

    def _watch_telemetry(self, t: Telemetry, now_us: int) -> None:
        """A lie shows on the first TELEMETRY that the host can hold against its command."""
        cmd = self._commanded
        if cmd is None:
            return
        settled = not self._target_pending and now_us - self._target_acked_us >= H1_GRACE_US
        forgets = "lie-target" in self._by_kind or "reboot" in self._by_kind
        if forgets and settled and t.depth_cmd_um != cmd.depth_um:
            self._bad(now_us)
        if (
            "overspeed" in self._by_kind
            and t.state == PenState.STAMPING
            and t.rate_meas_dhz * 4 > cmd.rate_dhz * 5
        ):
            self._bad(now_us)
