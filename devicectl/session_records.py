"""What a session puts in its record, on the inner loop's thread.

`SessionRecords` turns the controller's events, its once-a-second depth samples,
the zones' coverage, the pen and its cartridge, and the flight recorder's last
10 s into the records writer's calls (store.RecordWriter). The loop only queues:
the writer's thread writes, and packs the flight recorder's frames. Without a
writer (no records) every call does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from devicectl.claim import CartridgeClaim
from devicectl.controller import ControlEvent, Controller, State
from devicectl.flight import FlightRecorder, pack
from devicectl.store import EventRecord, RecordWriter, ZoneCoverage

#: A SAMPLE record (depths and rate, for reports' curves) this often (µs of session time).
SAMPLE_PERIOD_US: Final = 1_000_000
#: Flight recordings at most this often (µs of session time): each holds 10 s, and a
#: pen that faults again and again must not fill the disk the records need.
FLIGHT_GAP_US: Final = 1_000_000

__all__ = ["FLIGHT_GAP_US", "SAMPLE_PERIOD_US", "SessionRecords"]


class SessionRecords:
    """One session's side of the records: its writer (or none), its claim, its times.

    `t0_us` is session time zero (the loop's first `now`), set by the session when
    its loop starts; record times count from it, and `wall_of` maps them to the
    wall clock the session started at (simulated time in virtual sessions).
    """

    def __init__(self, controller: Controller, writer: RecordWriter | None,
                 flight: FlightRecorder, claim: CartridgeClaim | None,
                 started_wall: datetime) -> None:
        self.writer = writer
        self.claim = claim
        self.t0_us = 0
        self._controller = controller
        self._flight = flight
        self._wall0 = started_wall
        self._sample_us = -(10**18)
        self._sample_peak_um = 0
        self._flight_us: int | None = None

    def wall_of(self, t_us: int) -> datetime:
        """The wall-clock time of a session time (simulated time in virtual sessions)."""
        return self._wall0 + timedelta(microseconds=t_us - self.t0_us)

    def _wall_text(self, t_us: int) -> str:
        return self.wall_of(t_us).isoformat(timespec="milliseconds")

    @property
    def failed(self) -> bool:
        """Whether the writer has failed (no treatment without a record)."""
        return self.writer is not None and self.writer.failure is not None

    def status_line(self) -> str | None:
        """Why the records fail, for the views (None while they work, or without any)."""
        return self.writer.status_line() if self.writer is not None else None

    def events(self, events: Iterable[ControlEvent]) -> None:
        """The controller's events, in order, as records."""
        if self.writer is None:
            return
        self.writer.events([self._record(e) for e in events])

    def _record(self, event: ControlEvent) -> EventRecord:
        return EventRecord(
            t_us=event.t_us - self.t0_us,
            wall=self._wall_text(event.t_us),
            kind=event.kind.name,
            text=event.text,
            zone_id=event.zone_id,
            data=dict(event.data),
            safety=event.safety,
        )

    def sample(self, now: int, *, last: bool = False) -> None:
        """Once a second, the set and peak measured depth and the rate, for reports;
        `last`: at the end, what came after the last one (an over-depth that ended the
        session in an ESTOP must be on the report's curve)."""
        t = self._controller.telemetry
        if t is None or self.writer is None:
            return
        if t.depth_meas_um > self._sample_peak_um:
            self._sample_peak_um = t.depth_meas_um
        if now - self._sample_us < SAMPLE_PERIOD_US and not (last and now > self._sample_us):
            return
        self._sample_us = now
        peak, self._sample_peak_um = self._sample_peak_um, 0
        zone = self._controller.zone
        self.writer.events([EventRecord(
            t_us=now - self.t0_us,
            wall=self._wall_text(now),
            kind="SAMPLE",
            text=f"depth set {t.depth_cmd_um} µm, peak measured {peak} µm, "
            f"rate {t.rate_meas_dhz / 10:.1f} Hz",
            zone_id=zone.zone_id if zone is not None else None,
            data={"depth_cmd_um": t.depth_cmd_um, "depth_meas_um": peak,
                  "rate_meas_dhz": t.rate_meas_dhz},
        )])

    def flight(self, now: int, trigger: str, *, always: bool = False) -> None:
        """The flight recorder's last 10 s into the record (at most once a second but
        `always`): the loop copies the ring, the writer's thread packs the frames."""
        last = self._flight_us
        if self.writer is None or (not always and last is not None
                                   and now - last < FLIGHT_GAP_US):
            return
        self._flight_us = now
        snap = self._flight.snapshot(now)
        t0 = self.t0_us
        wall = self._wall_text(now)

        def make() -> EventRecord:
            frames = snap.frames()
            return EventRecord(
                t_us=now - t0, wall=wall, kind="FLIGHT",
                text=f"flight recorder: the last {len(frames)} frames on the wire, "
                f"kept at {trigger}",
                zone_id=None, data={"trigger": trigger, "frames": pack(frames, t0)}, safety=True,
            )

        self.writer.deferred_event(make)

    def device(self) -> None:
        """The pen and its cartridge, in the record at once: a cartridge is single use
        (with a claim, the first time through it: claimed before the first START)."""
        ctl = self._controller
        info = ctl.device
        if info is None:
            return
        claim = self.claim
        if claim is not None and not claim.granted:
            if ctl.state is not State.READY or ctl.go_no_go or claim.requested:
                return  # no GO yet (or none at all): the claim records the pen then
            claim.request(serial=info.serial_number, fw_version=info.fw_version,
                          cartridge_id=info.cartridge_id, position_mode=ctl.position_mode)
            return
        if self.writer is None:
            return
        self.writer.device(
            serial=info.serial_number,
            fw_version=info.fw_version,
            cartridge_id=info.cartridge_id,
            position_mode=ctl.position_mode,
        )

    def coverage(self, now: int) -> None:
        """Each zone's coverage so far and the grid (crash recovery, the report)."""
        ctl = self._controller
        if self.writer is None or ctl.plan is None:
            return
        zones = [
            ZoneCoverage(
                zone_id=z["zone_id"],
                name=z["name"],
                depth_um=z["depth_um"],
                rate_dhz=z["rate_dhz"],
                fraction=z["fraction"],
                target_fraction=z["target_fraction"],
                strokes=z["strokes"],
                cells_at_max=z["cells_at_max"],
                done=z["done"],
                seconds=z.get("seconds", 0.0),
            )
            for z in ctl.status(now)["zones"]
        ]
        self.writer.coverage(zones, ctl.coverage_snapshot())
