"""Fault injection: named scenarios (data in data/scenarios.yaml) switched on by a condition.

A scenario changes the pen at power-on (`pen`), then at its trigger (a state,
a host frame, a number of strokes: firmware_sim/triggers.py) applies one
effect: to the bytes on the wire (noise, drops, duplicates, a disconnect), to
the pen's body (overshoot, a stuck sensor, a stall, a brown-out, heat, a pulled
cartridge), to its firmware (its own depth limit broken) or to the hand.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from devicectl.errors import ProfileError
from devicectl.protocol import Decoder, PenEvent, Unknown
from firmware_sim.physics import PenParams, pen_with
from firmware_sim.triggers import Trigger, TriggerWatch, trigger_from

if TYPE_CHECKING:
    from firmware_sim.firmware import Firmware
    from firmware_sim.handpiece import Hand

TRIGGER_KEYS: Final = ("on", "message", "count", "strokes")
SCENARIOS_PATH: Final = Path(__file__).parent / "data" / "scenarios.yaml"
EFFECTS: Final = (
    "none",
    "impair",
    "disconnect",
    "overshoot",
    "stuck-sensor",
    "stall",
    "brown-out",
    "overheat",
    "pull-cartridge",
    "lift",
    "buttons",
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    effect: str = "none"
    trigger: Trigger = field(default_factory=Trigger)
    params: dict[str, Any] = field(default_factory=dict)
    pen: dict[str, Any] = field(default_factory=dict)


def load_scenarios(path: Path = SCENARIOS_PATH) -> dict[str, Scenario]:
    """Every scenario in the file, by name; a malformed entry is named in the error."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, Scenario] = {}
    for name, raw in doc.items():
        where = f"{path.name}: scenario {name!r}"
        if not isinstance(raw, dict) or not isinstance(raw.get("description"), str):
            raise ProfileError(f"{where} needs a mapping with a description.")
        # YAML 1.1 reads a bare `on:` key as the boolean true: it means "on".
        raw = {("on" if k is True else k): v for k, v in raw.items()}
        unknown = set(raw) - {"description", "effect", "params", "pen", *TRIGGER_KEYS}
        if unknown:
            raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}.")
        sc = Scenario(
            name=str(name),
            description=raw["description"],
            effect=raw.get("effect", "none"),
            trigger=trigger_from(raw, where),
            params=dict(raw.get("params") or {}),
            pen=dict(raw.get("pen") or {}),
        )
        if sc.effect not in EFFECTS:
            known = ", ".join(EFFECTS)
            raise ProfileError(f"{where}: unknown effect {sc.effect!r}; known: {known}.")
        pen_with(PenParams(), sc.pen, source=where)  # names a bad pen field now, not later
        out[sc.name] = sc
    return out


def get_scenario(name: str) -> Scenario:
    scenarios = load_scenarios()
    if name not in scenarios:
        raise ProfileError(
            f"unknown scenario {name!r}; `python -m firmware_sim scenarios` lists them: "
            f"{', '.join(scenarios)}."
        )
    return scenarios[name]


class ByteImpairment:
    """Bit errors, lost and doubled bytes on one direction of a link, deterministic by seed.

    Rather than a draw per byte, it draws the gap to the next event
    (geometric), so clean stretches cost nothing.
    """

    def __init__(
        self, rng: random.Random, *, ber: float = 0.0, drop_p: float = 0.0, dup_p: float = 0.0
    ) -> None:
        # one stream per process, so the outcome does not depend on chunking
        self._flip_rng, self._drop_rng, self._dup_rng = (random.Random(rng.random()) for _ in "fdu")
        self.ber, self.drop_p, self.dup_p = ber, drop_p, dup_p
        self._to_flip = self._gap(self._flip_rng, ber)  # bits until the next bit error
        self._to_drop = self._gap(self._drop_rng, drop_p)  # bytes until the next lost byte
        self._to_dup = self._gap(self._dup_rng, dup_p)
        self.flipped = self.dropped = self.duplicated = 0

    @staticmethod
    def _gap(rng: random.Random, p: float) -> float:
        if p <= 0:
            return math.inf
        return int(math.log(1.0 - rng.random()) / math.log(1.0 - p))

    def apply(self, data: bytes) -> bytes:
        n = len(data)
        if not n or (self._to_flip >= 8 * n and self._to_drop >= n and self._to_dup >= n):
            self._to_flip -= 8 * n
            self._to_drop -= n
            self._to_dup -= n
            return data
        buf = bytearray(data)
        while self._to_flip < 8 * n:
            bit = int(self._to_flip)
            buf[bit // 8] ^= 1 << (bit % 8)
            self.flipped += 1
            self._to_flip += 1 + self._gap(self._flip_rng, self.ber)
        self._to_flip -= 8 * n
        marks: dict[int, int] = {}  # byte index -> copies (0 dropped, 2 doubled)
        while self._to_drop < n:
            marks[int(self._to_drop)] = 0
            self.dropped += 1
            self._to_drop += 1 + self._gap(self._drop_rng, self.drop_p)
        self._to_drop -= n
        while self._to_dup < n:
            i = int(self._to_dup)
            marks[i] = 0 if marks.get(i) == 0 else 2
            self.duplicated += 1
            self._to_dup += 1 + self._gap(self._dup_rng, self.dup_p)
        self._to_dup -= n
        if not marks:
            return bytes(buf)
        out = bytearray()
        last = 0
        for i in sorted(marks):
            out += buf[last:i]
            out += buf[i : i + 1] * marks[i]
            last = i + 1
        out += buf[last:]
        return bytes(out)


class FaultInjector:
    """One scenario (or none) at work on a pen: triggers, effects, impaired bytes."""

    def __init__(self, scenario: Scenario | None, *, seed: int = 0) -> None:
        self.scenario = scenario
        self._rng = random.Random(seed ^ 0xFA17)
        self.fired_at_us: int | None = None
        self.watch = TriggerWatch(scenario.trigger if scenario else Trigger("manual"))
        self._decoder: Decoder | None = None
        self.to_pen_impairment: ByteImpairment | None = None
        self.to_host_impairment: ByteImpairment | None = None
        self._cut_to_pen_until_us = 0
        self._cut_to_host_until_us = 0

    def pen_params(self, pen: PenParams) -> PenParams:
        sc = self.scenario
        return pen_with(pen, sc.pen, source=f"scenario {sc.name}") if sc and sc.pen else pen

    def advance(self, now_us: int, firmware: Firmware, hand: Hand) -> None:
        sc = self.scenario
        if sc is None or self.fired_at_us is not None:
            return
        if self.watch.check(firmware):
            self.fired_at_us = now_us
            self._fire(sc, now_us, firmware, hand)

    def _fire(self, sc: Scenario, now_us: int, fw: Firmware, hand: Hand) -> None:
        p = sc.params
        phys = fw.physics
        if sc.effect == "impair":
            direction = p.get("direction", "both")
            kw = {k: float(p.get(k, 0.0)) for k in ("ber", "drop_p", "dup_p")}
            if direction in ("both", "to_pen"):
                self.to_pen_impairment = ByteImpairment(random.Random(self._rng.random()), **kw)
            if direction in ("both", "to_host"):
                self.to_host_impairment = ByteImpairment(random.Random(self._rng.random()), **kw)
        elif sc.effect == "disconnect":
            until = now_us + int(p.get("duration_ms", 500)) * 1000
            direction = p.get("direction", "both")
            if direction in ("both", "to_pen"):
                self._cut_to_pen_until_us = until
            if direction in ("both", "to_host"):
                self._cut_to_host_until_us = until
        elif sc.effect == "overshoot":
            phys.extra_target_um = float(p.get("extra_um", 180))
            phys.extra_ramp_um = float(p.get("ramp_um_per_stroke", 15))
            fw.depth_limit_enabled = bool(p.get("firmware_limit", True))
        elif sc.effect == "stuck-sensor":
            phys.sensor_stuck = True
        elif sc.effect == "stall":
            phys.load_factor = float(p.get("load_factor", 0.2))
        elif sc.effect == "brown-out":
            phys.battery_uv = float(p.get("battery_mv", 3200)) * 1000
        elif sc.effect == "overheat":
            phys.temp_c = float(p.get("temp_c", 75.0))
        elif sc.effect == "pull-cartridge":
            fw.remove_cartridge(now_us)
        elif sc.effect == "lift":
            hand.lift_until(now_us + int(p.get("duration_ms", 2000)) * 1000)
        elif sc.effect == "buttons":
            for delay_ms, name in p.get("presses", []):
                hand.schedule_press(now_us + int(delay_ms) * 1000, PenEvent[name])

    def to_pen(self, data: bytes, now_us: int) -> bytes:
        if self.watch.needs_frames and data:
            if self._decoder is None:
                self._decoder = Decoder()
            for frame in self._decoder.feed(data):
                if not isinstance(frame.message, Unknown):
                    self.watch.host_frame(frame.message)
        if now_us < self._cut_to_pen_until_us:
            return b""
        imp = self.to_pen_impairment
        return imp.apply(data) if imp is not None and data else data

    def to_host(self, data: bytes, now_us: int) -> bytes:
        if now_us < self._cut_to_host_until_us:
            return b""
        imp = self.to_host_impairment
        return imp.apply(data) if imp is not None and data else data
