"""The soak: the controller's hypothesis safety properties for at least 10^6 steps.

`make soak` runs it (it is marked `slow`, so the default run leaves it out). It
takes every property of test_controller_properties that draws a list of `steps`
(each a TELEMETRY, ACK, command, tick, fault, event, DEVICE_INFO or line noise
handed to the controller) and runs it, with the same strategies and the same
checks, until the examples together have made SOAK_STEPS controller steps
(default 10^6). Each round draws fresh examples (no example database).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import test_controller_properties as props
from hypothesis import HealthCheck, Phase, given, settings

SOAK_STEPS = int(os.environ.get("SOAK_STEPS", "1000000"))
EXAMPLES_PER_ROUND = 2_000


def _properties() -> dict[str, Any]:
    return {
        name: fn
        for name, fn in vars(props).items()
        if name.startswith("test_")
        and hasattr(fn, "hypothesis")
        and "steps" in fn.hypothesis._given_kwargs
    }


PROPERTIES = _properties()


def test_there_is_a_property_to_soak() -> None:
    assert PROPERTIES


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_the_safety_property_holds_for_a_million_steps(name: str) -> None:
    handle = PROPERTIES[name].hypothesis
    inner: Callable[..., None] = handle.inner_test
    done = {"steps": 0, "examples": 0}

    def counted(**kw: Any) -> None:
        inner(**kw)
        done["steps"] += len(kw["steps"]) + 2  # the connect and DEVICE_INFO of each example
        done["examples"] += 1

    run = settings(
        max_examples=EXAMPLES_PER_ROUND,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )(given(**handle._given_kwargs)(counted))
    t0 = time.monotonic()
    try:
        while done["steps"] < SOAK_STEPS:
            run()
    finally:
        seconds = max(time.monotonic() - t0, 1e-9)
        print(
            f"\nsoak {name}: {done['steps']} controller steps in {done['examples']} examples, "
            f"{seconds:.0f} s ({done['steps'] / seconds:.0f} steps/s)"
        )
    assert done["steps"] >= SOAK_STEPS
