"""The controller's snapshot for monitors: one JSON-able dict, built on demand.

Monitors call `Controller.status(now_us)` at their own rate, off the hot path;
this reads the controller's fields and coverage counters (O(zones)).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devicectl import protocol as p

if TYPE_CHECKING:
    from devicectl.controller import Controller


def _pen(ctl: Controller) -> dict[str, Any] | None:
    t = ctl.telemetry
    if t is None:
        return None
    try:
        state = p.PenState(t.state).name
    except ValueError:
        state = f"UNKNOWN({t.state})"
    known = t.x_dmm != p.POSITION_UNKNOWN and t.y_dmm != p.POSITION_UNKNOWN
    return {
        "state": state,
        "depth_cmd_um": t.depth_cmd_um,
        "depth_meas_um": t.depth_meas_um,
        "rate_meas_dhz": t.rate_meas_dhz,
        "stamp_count": t.stamp_count,
        "contact": bool(t.contact),
        "battery_mv": t.battery_mv,
        "x_mm": t.x_dmm / 10.0 if known else None,
        "y_mm": t.y_dmm / 10.0 if known else None,
        "fault_flags": t.fault_flags,
        "faults": p.fault_names(t.fault_flags),
    }


def status_snapshot(ctl: Controller, now_us: int) -> dict[str, Any]:
    """The keys the terminal and web views read (see the controller's contract)."""
    plan = ctl.plan
    cov = ctl.coverage
    zones: list[dict[str, Any]] = []
    remaining_s = 0.0
    if plan is not None:
        for i, z in enumerate(plan.zones):
            fraction = cov.fraction(z.zone_id) if cov is not None else 0.0
            done = cov.done(z.zone_id) if cov is not None else False
            zones.append(
                {
                    "zone_id": z.zone_id,
                    "name": z.name,
                    "depth_um": z.depth_um,
                    "rate_dhz": z.rate_dhz,
                    "target_fraction": z.target_fraction,
                    "fraction": fraction,
                    "cells_at_max": cov.cells_at_max(z.zone_id) if cov is not None else 0,
                    "target_passes": z.target_passes,
                    "mean_passes": cov.mean_passes(z.zone_id) if cov is not None else 0.0,
                    "at_max_fraction": cov.fraction_at_max(z.zone_id) if cov is not None else 0.0,
                    "at_max_cm2": (
                        cov.cells_at_max(z.zone_id) * cov.cell_cm2() if cov is not None else 0.0
                    ),
                    # skin no allowed stroke can bring to target (reach.py): left out of done
                    "unreachable_cm2": (
                        cov.unreachable_cm2(z.zone_id) if cov is not None and cov.tracked else 0.0
                    ),
                    "seconds": ctl.zone_seconds(z.zone_id, now_us),
                    "strokes": cov.strokes(z.zone_id) if cov is not None else 0,
                    "done": done,
                    "active": i == ctl.zone_index,
                }
            )
            if i >= ctl.zone_index and not done:
                # by the dose, which moves with every stroke (the share at target
                # stays near 0 until the last pass)
                dose = cov.mean_passes(z.zone_id) if cov is not None else 0.0
                by_dose = dose / z.target_passes if z.target_passes else 1.0
                by_area = fraction / z.target_fraction if z.target_fraction else 1.0
                left = 1.0 - min(1.0, max(by_dose * 0.9, by_area))
                remaining_s += z.est_seconds * left
    zone = ctl.zone
    started = ctl.first_start_us
    return {
        "state": ctl.state.name,
        "zone_index": ctl.zone_index,
        "zone_count": len(plan.zones) if plan is not None else 0,
        "zone": {"zone_id": zone.zone_id, "name": zone.name} if zone is not None else None,
        "zones": zones,
        "pen": _pen(ctl),
        "position_mode": ctl.position_mode,
        "stop_reason": ctl.stop_reason,
        "fault": ctl.fault,
        # a faulty pen (spec H1-H5) ends the session in FAULT: no CLEAR_FAULT is offered
        "fault_final": ctl.fault_final is not None,
        "clear_fault_offered": ctl.state.name == "FAULT" and ctl.fault_final is None,
        # strokes measured above the cap but within the tolerance (1501-1550 µm)
        "tolerance_strokes": ctl.tolerance_strokes,
        "go_no_go": list(ctl.go_no_go),
        "elapsed_s": (now_us - started) / 1e6 if started is not None else 0.0,
        "remaining_s_est": remaining_s,
        "link": ctl.link_counters,
    }
