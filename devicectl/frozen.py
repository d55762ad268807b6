"""Pickling of the frozen dataclasses that mypyc compiles (make compiled).

Compiled, a frozen dataclass unpickles by setting each field on a bare new
object, which the class refuses (FrozenInstanceError), so a compiled Plan,
StartFacts or ControlEvent could not cross to or from the pen process. Such a
class pickles by `__reduce__` returning `by_fields(self)`: the class called
with its fields again, which is what pure Python's pickling yields too.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def by_fields(obj: Any) -> tuple[type[Any], tuple[Any, ...]]:
    """`__reduce__` of a frozen dataclass whose fields all go to `__init__`."""
    return type(obj), tuple(getattr(obj, f.name) for f in fields(obj))
