"""The live page's streams, cheap however many: each state encoded once, one wake-up for all.

The hub (devicectl/web/hub.py) tells the Broadcast of every new state on its
own thread; the delta from the state before is diffed and encoded as an SSE
event there, once, and kept in a short ring of recent versions. The server's
event loop is woken once per change (`call_soon_threadsafe`), and that one
wake-up releases every stream waiting in `changed`. A stream that fell behind
(a slow client: its sends blocked) catches up with the ring's deltas from its
version to now, or, when those are gone, one "full" event (the page replaces its
state). Quiet streams share one keep-alive timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from devicectl.web.hub import Hub
from devicectl.web.state import diff

#: Deltas kept for streams that fell behind: 3.2 s of the hub's 10 Hz.
RING = 32
#: A comment line this often keeps proxies and the browser from timing out (s).
KEEPALIVE_S = 5.0
KEEPALIVE = b": keepalive\n\n"


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One Server-Sent Event: an unnamed one (a delta) unless `event` names it."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {_json(payload)}\n\n".encode()


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Published:
    """One hub version as the streams read it, replaced whole (one assignment) by the
    hub's thread: `ring` holds (version, the event taking version - 1 to version),
    oldest first; an event is b"" when the states differ only where the page trims."""

    version: int
    state: dict[str, Any]
    ring: tuple[tuple[int, bytes], ...]


class Broadcast:
    """Every stream of one hub: what to send, and when (see the module's docstring)."""

    def __init__(self, hub: Hub, *, ring: int = RING, keepalive_s: float = KEEPALIVE_S) -> None:
        self.hub = hub
        self.ring = ring
        self.keepalive_s = keepalive_s
        self._map_json = _json(hub.map)
        self._full: tuple[int, bytes] = (-1, b"")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._changed_at = 0.0
        self._attach = threading.Lock()
        #: Streams being served now; streams that caught up from the ring, from a "full".
        self.streams = 0
        self.caught_up = 0
        self.resent_full = 0
        #: The keep-alive timer's count: a stream that sees it move while quiet sends one.
        self.beat = 0
        self.closed = False
        version, state = hub.watch(self._published)
        self.latest = Published(version, state, ())

    # --- the hub's thread -----------------------------------------------------------

    def _published(self, version: int, state: dict[str, Any], stopped: bool) -> None:
        prev = self.latest
        if version != prev.version:
            event = sse(delta) if (delta := diff(prev.state, state)) else b""
            ring = (*prev.ring[max(0, len(prev.ring) - self.ring + 1):], (version, event))
            self.latest = Published(version, state, ring)
        self.closed = stopped
        with self._attach:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the server's loop ended: nobody to wake
                loop.call_soon_threadsafe(self._wake)

    # --- the server's event loop ----------------------------------------------------

    def _start(self) -> None:
        """On the first stream: the loop's event and the keep-alive timer."""
        if self._changed is not None:
            return
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._changed_at = loop.time()
        loop.call_later(self.keepalive_s, self._keepalive)
        with self._attach:
            self._loop = loop

    def _wake(self) -> None:
        """Release every waiting stream; later waits wait on a new event."""
        assert self._changed is not None and self._loop is not None
        self._changed_at = self._loop.time()
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()

    def _keepalive(self) -> None:
        assert self._loop is not None
        if self.closed:
            return
        wait = self._changed_at + self.keepalive_s - self._loop.time()
        if wait <= 0:  # quiet for keepalive_s: every stream waiting sends a comment
            self.beat += 1
            self._wake()
            wait = self.keepalive_s
        self._loop.call_later(wait, self._keepalive)

    async def changed(self, version: int, beat: int) -> Published:
        """The latest version once it is not `version`, the hub closed or the keep-alive
        timer moved past `beat`."""
        self._start()
        while True:
            latest = self.latest
            if latest.version != version or self.closed or self.beat != beat:
                return latest
            assert self._changed is not None
            await self._changed.wait()

    def full(self, pub: Published) -> bytes:
        """The "full" event of `pub` (map and state), encoded once per version."""
        version, data = self._full
        if version != pub.version:
            data = (f'event: full\ndata: {{"map":{self._map_json},"state":'
                    f"{_json(pub.state)}}}\n\n").encode()
            self._full = (pub.version, data)
        return data

    def since(self, version: int, pub: Published) -> bytes:
        """What takes a client at `version` to `pub`: the ring's deltas, or a "full"."""
        if pub.version == version:
            return b""
        ring = pub.ring
        if ring and ring[-1][0] == version + 1:  # the usual case: one version behind
            return ring[-1][1]
        if ring and ring[0][0] <= version + 1:
            self.caught_up += 1
            return b"".join(event for v, event in ring if v > version)
        self.resent_full += 1
        return self.full(pub)
