"""Take everything out of a deque that another thread appends to."""

from __future__ import annotations

from collections import deque
from typing import TypeVar

T = TypeVar("T")


def drain(items: deque[T]) -> list[T]:
    """The items in `items`, oldest first, removed: one `popleft` at a time, each
    atomic, so an item another thread appends meanwhile is taken now or next time,
    never lost (unlike `list(items)` then `clear()`)."""
    out: list[T] = []
    while items:
        out.append(items.popleft())
    return out
