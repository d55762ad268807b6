"""The pen's body: needle actuator, stamp motor, battery, motor temperature, cartridge.

`PenParams` names every figure of one pen (defaults: one plausible pen; a YAML
file can describe another). `Physics` advances in time, stroke by stroke; it
knows nothing of the protocol and never reads a clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

import yaml

from devicectl.errors import ProfileError
from devicectl.protocol import Capability

_US_PER_S: Final = 1_000_000


def randint(rng: random.Random, lo: int, hi: int) -> int:
    """`rng.randint(lo, hi)`, the same draw from the same bits (CPython's randrange:
    lo + _randbelow(hi - lo + 1), by getrandbits until below): compiled, randint runs
    three Python-level calls deep, once a stroke; getrandbits is one C call."""
    n = hi - lo + 1
    if n <= 0:
        raise ValueError(f"empty range for randint({lo}, {hi})")
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return lo + r


@dataclass(frozen=True, slots=True)
class PenParams:
    """Every figure of one simulated pen. Units in the names; defaults: a plausible pen."""

    # identity, as DEVICE_INFO reports it
    fw_version: int = 0x0101  # the factory firmware; images in firmware_sim/images update it
    serial_number: int = 100042
    max_depth_um: int = 2500  # mechanical travel, not a clinical limit
    min_rate_dhz: int = 500
    max_rate_dhz: int = 1500
    needle_count: int = 12
    capabilities: int = int(Capability.POSITION | Capability.CONTACT | Capability.UPDATE)
    footprint_dmm: int = 50
    # cartridge at power-on; id 0 means none inserted
    cartridge_id: int = 0xC0FFEE
    cartridge_stamps: int = 0
    # link defaults (spec)
    telemetry_hz: int = 500
    watchdog_ms: int = 100
    # needle actuator: the depth stop settles on the command over a few strokes
    settle_strokes: float = 4.0
    overshoot_pct: float = 2.0
    sensor_noise_um: int = 10
    depth_bias_um: int = 0
    # stamp motor
    motor_tau_ms: float = 20.0
    # battery
    battery_full_mv: int = 4100
    battery_low_mv: int = 3300
    battery_drain_uv_per_stroke: float = 1.5
    battery_idle_drain_uv_per_s: float = 20.0
    # motor temperature
    ambient_c: float = 25.0
    heat_c_per_stroke: float = 0.002
    cooling_tau_s: float = 120.0
    overtemp_c: float = 70.0
    overtemp_clear_c: float = 60.0

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_pen(path: str | Path) -> PenParams:
    """A pen described in YAML: any PenParams field, the rest default. Names each mistake."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read the pen file ({exc.strerror}).") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{p}: not valid YAML ({exc}).") from None
    if data is None:
        return PenParams()
    if not isinstance(data, dict):
        raise ProfileError(f"{p}: a pen file is a mapping of parameter: value.")
    return pen_with(PenParams(), data, source=str(p))


def pen_with(pen: PenParams, changes: dict[str, Any], *, source: str = "pen") -> PenParams:
    """`pen` with some fields changed, each checked for name and type."""
    known = {f.name: f for f in fields(PenParams)}
    problems: list[str] = []
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in known:
            problems.append(f"{source}: unknown pen parameter {name!r}")
            continue
        default = getattr(pen, name)
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(default, int) and not is_int:
            problems.append(f"{source}: {name} must be an integer, not {value!r}")
        elif isinstance(default, float) and not isinstance(value, int | float):
            problems.append(f"{source}: {name} must be a number, not {value!r}")
        else:
            clean[name] = float(value) if isinstance(default, float) else value
    if problems:
        raise ProfileError(problems[0], problems)
    return replace(pen, **clean)


class Physics:
    """The pen's mechanics and power, advanced by `advance(dt_us)`.

    Going deeper, the depth stop follows the command as a damped second-order
    response sampled once per stroke (going shallower, it withdraws at once):
    poles at r·e^(±iθ), r from the settling time, θ from the overshoot
    (θ = 0 is critically damped; the overshoot is approximate). The sensor reports the
    stroke's peak protrusion plus noise, or a stuck value when told to.
    """

    def __init__(self, pen: PenParams, *, seed: int = 0) -> None:
        self.pen = pen
        self._rng = random.Random(seed ^ 0x5EED)
        r = 0.02 ** (1.0 / max(pen.settle_strokes, 0.5))
        theta = 0.0
        if pen.overshoot_pct > 0:
            theta = math.pi * math.log(r) / math.log(pen.overshoot_pct / 100.0)
        self._a1 = 2.0 * r * math.cos(theta)
        self._a2 = -r * r
        # actuator
        self.stop_um = 0.0  # depth stop position now
        self._stop_prev_um = 0.0  # the stop one stroke ago: its velocity, in effect
        self.extra_um = 0.0  # a mechanical fault pushing past the stop (scenarios)
        self.extra_target_um = 0.0
        self.extra_ramp_um = 0.0  # per stroke
        self.sensor_stuck = False
        self.depth_meas_um = 0
        self.step_max_meas_um = 0  # deepest reading among the last advance's strokes
        self.unchanged_strokes = 0  # readings in a row equal to the one before
        # motor
        self.rate_dhz = 0.0
        self.load_factor = 1.0  # < 1: a jammed motor reaches only this part of its target
        self._phase = 0.0
        self.strokes = 0
        self._decay_dt_us = 0  # the step length `_decay` was computed for
        self._decay = 0.0
        # power and heat
        self.battery_uv = pen.battery_full_mv * 1000.0
        self.temp_c = pen.ambient_c
        # cartridge
        self.cartridge_id = pen.cartridge_id
        self.cartridge_stamps = pen.cartridge_stamps

    @property
    def battery_mv(self) -> int:
        return int(self.battery_uv // 1000)

    @property
    def cartridge_present(self) -> bool:
        return self.cartridge_id != 0

    @property
    def rate_meas_dhz(self) -> int:
        return int(self.rate_dhz + 0.5)

    def insert_cartridge(self, cartridge_id: int, stamps: int = 0) -> None:
        self.cartridge_id = cartridge_id
        self.cartridge_stamps = stamps

    def remove_cartridge(self) -> None:
        self.cartridge_id = 0
        self.cartridge_stamps = 0

    def halt(self) -> None:
        """Needle retracted, motor braked: what a fault or STOP does at once."""
        self.rate_dhz = 0.0
        self._phase = 0.0
        self.depth_meas_um = 0
        self.unchanged_strokes = 0

    def advance(self, dt_us: int, depth_cmd_um: int, rate_cmd_dhz: int, stamping: bool) -> int:
        """Move time on by `dt_us`; returns the strokes completed (each measured)."""
        if dt_us <= 0:
            return 0
        # Called once per TELEMETRY frame and per step of the pen: the pen's
        # figures are read once, and the motor's decay factor is kept per step
        # length (the same exp, so the same numbers as computing it each time).
        pen = self.pen
        dt_s = dt_us / _US_PER_S
        self.battery_uv -= pen.battery_idle_drain_uv_per_s * dt_s
        ambient_c = pen.ambient_c
        if self.temp_c != ambient_c:
            self.temp_c += (ambient_c - self.temp_c) * (dt_s / pen.cooling_tau_s)
        if not stamping:
            if self.rate_dhz:
                self.halt()
            return 0
        goal = rate_cmd_dhz * self.load_factor
        gap = goal - self.rate_dhz
        if gap > 0.5 or gap < -0.5:
            if dt_us != self._decay_dt_us:
                self._decay_dt_us = dt_us
                self._decay = 1.0 - math.exp(-dt_us / (pen.motor_tau_ms * 1000.0))
            self.rate_dhz += gap * self._decay
        else:
            self.rate_dhz = goal
        # strokes: the phase advances with the mean rate over the step
        self._phase += self.rate_dhz * dt_s / 10.0
        done = int(self._phase)
        if done:
            self._phase -= done
            self.step_max_meas_um = 0
            for _ in range(done):
                self._stroke(depth_cmd_um)
        return done

    def _stroke(self, depth_cmd_um: int) -> None:
        pen = self.pen
        if depth_cmd_um < self.stop_um:
            # Withdrawing the stop is quick and always safe: it is done before the
            # next stroke, so a shallower target takes effect from that stroke
            # (spec) and never reads as over-depth against the new command.
            self.stop_um = self._stop_prev_um = float(depth_cmd_um)
        err = self.stop_um - depth_cmd_um
        err_next = self._a1 * err + self._a2 * (self._stop_prev_um - depth_cmd_um)
        self._stop_prev_um = self.stop_um
        self.stop_um = depth_cmd_um + err_next
        if self.extra_um < self.extra_target_um:
            self.extra_um = min(self.extra_target_um, self.extra_um + self.extra_ramp_um)
        peak = self.stop_um + self.extra_um + pen.depth_bias_um
        before = self.depth_meas_um
        if not self.sensor_stuck or before == 0:
            noise = randint(self._rng, -pen.sensor_noise_um, pen.sensor_noise_um)
            self.depth_meas_um = max(0, int(peak + 0.5) + noise)
        self.unchanged_strokes = self.unchanged_strokes + 1 if self.depth_meas_um == before else 0
        if self.depth_meas_um > self.step_max_meas_um:
            self.step_max_meas_um = self.depth_meas_um
        self.strokes += 1
        if self.cartridge_id:
            self.cartridge_stamps += 1
        self.battery_uv -= pen.battery_drain_uv_per_stroke
        self.temp_c += pen.heat_c_per_stroke
