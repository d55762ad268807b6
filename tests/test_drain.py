"""drain: a deque another thread appends to is emptied in order, nothing lost."""

from __future__ import annotations

import collections
import threading

from devicectl.drain import drain


def test_drain_takes_everything_in_order_and_leaves_the_deque_empty() -> None:
    items = collections.deque([3, 1, 2])
    assert drain(items) == [3, 1, 2]
    assert not items
    assert drain(items) == []


def test_nothing_appended_while_draining_is_lost() -> None:
    items: collections.deque[int] = collections.deque()
    n = 200_000
    done = threading.Event()

    def produce() -> None:
        for i in range(n):
            items.append(i)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    got: list[int] = []
    while not done.is_set():
        got.extend(drain(items))
    producer.join()
    got.extend(drain(items))
    assert got == list(range(n))
