"""The live page's streams under load: one encoding per version, slow clients, closed ones.

A real server (uvicorn on a free port) and real client sockets; the hub reads
Ticking, a source whose state changes on every refresh (as a stamping session's
does), with a bulky zone note so that a client that stops reading backs the
server's sends up within a fraction of a second.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_virtual_session import MAP

from devicectl.web.broadcast import Broadcast
from devicectl.web.hub import Hub
from devicectl.web.server import STREAM_SNDBUF, WebServer, serve
from devicectl.web.state import TRACE_WINDOW_S, apply, diff

#: The hub's refresh in these tests (s): 50 Hz, five times the page's, to be quick.
PERIOD_S = 0.02
HEADER = {"session_id": 1, "patient_ref": "P-STREAM", "profile": "t", "controls": False,
          "mode": "live"}


class Ticking:
    """A Source whose status moves on every read until `frozen`: the pen, the zone's
    numbers and an 8 kB note (a delta a refresh is about 8 kB)."""

    def __init__(self) -> None:
        self.n = 0
        self.frozen = False

    def status(self) -> dict[str, Any]:
        if not self.frozen:
            self.n += 1
        n = self.n
        note = hashlib.sha256(str(n).encode()).hexdigest() * 128
        return {
            "state": "STAMPING",
            "zones": [{"zone_id": 1, "name": "frontal", "fraction": n / 1e5, "note": note}],
            "pen": {"depth_cmd_um": 1000, "depth_meas_um": 1000 + n % 7, "x_mm": n % 40,
                    "y_mm": 2.0},
            "elapsed_s": n * PERIOD_S,
        }

    def now_s(self) -> float:
        return self.n * PERIOD_S

    def tracked(self) -> bool:
        return True

    def heat(self) -> dict[str, Any] | None:
        return None

    def finished(self) -> bool:
        return False


@pytest.fixture
def ticking() -> Iterator[tuple[Ticking, WebServer]]:
    source = Ticking()
    web = serve(Hub(source, MAP, HEADER, period_s=PERIOD_S), "127.0.0.1", 0, token=None,
                submit=None)
    try:
        yield source, web
    finally:
        web.stop()


def _wait(cond: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Client:
    """/api/stream over a raw socket with a tiny receive window: reads only when told,
    takes the chunked body apart and applies the events as app.js does."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        self.sock.settimeout(0.05)
        self.raw = b""
        self.head: bytes | None = None
        self.body = b""
        self.names: list[str] = []
        self.keepalives = 0
        self.retry: int | None = None
        self.state: dict[str, Any] | None = None

    def read(self, max_bytes: int = 1 << 20) -> int:
        """Up to `max_bytes` of what has arrived (0 if nothing within 50 ms)."""
        got = 0
        while got < max_bytes:
            try:
                data = self.sock.recv(min(65536, max_bytes - got))
            except TimeoutError:
                break
            if not data:
                break
            got += len(data)
            self._feed(data)
        return got

    def _feed(self, data: bytes) -> None:
        self.raw += data
        if self.head is None:
            if b"\r\n\r\n" not in self.raw:
                return
            self.head, self.raw = self.raw.split(b"\r\n\r\n", 1)
            assert self.head.startswith(b"HTTP/1.1 200"), self.head
            assert b"content-type: text/event-stream" in self.head.lower()
            assert b"chunked" in self.head.lower()
        at = 0  # the chunked body: "<hex size>\r\n<data>\r\n"
        parts = [self.body]
        while (eol := self.raw.find(b"\r\n", at)) >= 0:
            size = int(self.raw[at:eol], 16)
            if len(self.raw) < eol + 2 + size + 2:
                break
            parts.append(self.raw[eol + 2:eol + 2 + size])
            at = eol + 2 + size + 2
        self.raw = self.raw[at:]
        *messages, self.body = b"".join(parts).split(b"\n\n")
        for message in messages:
            self._event(message.decode())

    def _event(self, message: str) -> None:
        name, data = "message", None
        for line in message.split("\n"):
            if line.startswith(":"):
                self.keepalives += 1
            elif line.startswith("retry: "):
                self.retry = int(line[7:])
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is None:
            return
        self.names.append(name)
        if name in ("full", "end"):
            self.state = data["state"]
        else:
            assert self.state is not None, "a delta before the full state"
            self.state = apply(self.state, data)
        # Ticking adds a trace point every version: a delta lost or sent twice shows here.
        steps = {round((b[0] - a[0]) / PERIOD_S)
                 for a, b in zip(self.state["trace"], self.state["trace"][1:], strict=False)}
        assert steps <= {1}, f"the trace has gaps or repeats after a {name} event: {steps}"

    def close(self) -> None:
        self.sock.close()


def _small_send_buffers(web: WebServer) -> None:
    """The server's sockets send from a small kernel buffer, as over a slow network:
    on loopback Linux grows it to megabytes, which a test would take seconds to fill."""
    for conn in web._server.server_state.connections:
        conn.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


def test_a_stalled_client_catches_up_to_exactly_the_hubs_state(
    ticking: tuple[Ticking, WebServer],
) -> None:
    source, web = ticking
    hub, bc = web.hub, web.broadcast
    assert bc is not None
    client = Client(web.port)
    _wait(lambda: client.read(4096) > 0 and client.state is not None, what="the full state")
    assert client.names[0] == "full"
    _small_send_buffers(web)
    bc.ring = 8  # read by the hub's thread at each version: three rings are 0.5 s
    # Read less than comes: the stream's sends block, and it catches up from the ring.

    def read_slowly() -> bool:
        version = hub.version
        client.read(6000)
        _wait(lambda: hub.version > version, what="a new version")
        return bc.caught_up > 0

    _wait(read_slowly, what="a catch-up from the ring")
    # Then not at all while the hub moves on three rings: the stream falls out of the ring.
    start = hub.version
    _wait(lambda: hub.version > start + 3 * bc.ring, what="the hub to move on")
    _wait(lambda: client.read() >= 0 and bc.resent_full > 0, what="a full state resent")
    assert "full" in client.names[1:]  # mid-stream, the page replaces its state
    source.frozen = True  # the hub stops changing: the client must reach its state
    quiet_at = hub.version

    def caught_up() -> bool:
        client.read()
        return hub.version == quiet_at and client.state == hub.current

    _wait(caught_up, what="the client to reach the hub's state")
    assert client.state is not None and client.state["zones"][0]["fraction"] == source.n / 1e5
    client.close()


def test_behind_by_less_than_the_ring_gets_the_deltas_else_one_full() -> None:
    source = Ticking()
    hub = Hub(source, MAP, HEADER, period_s=PERIOD_S)
    bc = Broadcast(hub, ring=8)
    hub.start()
    try:
        _wait(lambda: bc.latest.version >= 1, what="a first version")
        old = bc.latest
        _wait(lambda: bc.latest.version >= old.version + 4, what="four more versions")
        new = bc.latest
        behind = new.version - old.version
        assert 4 <= behind <= 8, behind  # the hub is quick but not that quick
        events = bc.since(old.version, new).decode().split("\n\n")[:-1]
        assert len(events) == behind and all(e.startswith("data: ") for e in events)
        state = old.state
        for e in events:
            state = apply(state, json.loads(e[6:]))
        assert state == new.state
        assert bc.caught_up == 1 and bc.resent_full == 0
        _wait(lambda: bc.latest.version > new.version + 8, what="the ring to move past")
        newest = bc.latest
        full = bc.since(new.version, newest)
        assert full.startswith(b"event: full\ndata: ")
        assert json.loads(full.split(b"data: ", 1)[1]) == {"map": hub.map, "state": newest.state}
        assert bc.full(newest) is full  # encoded once per version
        assert bc.resent_full == 1
    finally:
        hub.stop()


def test_a_closed_client_ends_its_stream_even_when_nothing_changes(
    ticking: tuple[Ticking, WebServer],
) -> None:
    source, web = ticking
    bc = web.broadcast
    assert bc is not None
    source.frozen = True  # no new versions: nothing wakes the streams but the close
    clients = [Client(web.port) for _ in range(3)]
    for c in clients:
        _wait(lambda c=c: c.read() >= 0 and c.state is not None, what="the full state")
    assert bc.streams == 3
    clients[0].close()
    clients[1].close()
    _wait(lambda: bc.streams == 1, what="two streams to end")
    source.frozen = False  # the last one, stalled while the hub moves on, then closed
    _small_send_buffers(web)
    start = web.hub.version
    _wait(lambda: web.hub.version > start + 20, what="the hub to move on")
    clients[2].close()
    _wait(lambda: bc.streams == 0, what="the stalled stream to end")


def test_a_stream_that_is_not_read_holds_a_bounded_kernel_buffer(
    ticking: tuple[Ticking, WebServer],
) -> None:
    """Each connection sends from a fixed kernel buffer (STREAM_SNDBUF; Linux keeps
    twice what is asked), not one Linux grows to megabytes (seen: 3.9 MB on loopback)
    for a client that stopped reading: a stalled client costs the server a bounded
    amount whatever happens. Checked on the server's own sockets, as the page accepted
    them."""
    _source, web = ticking
    client = Client(web.port)
    _wait(lambda: client.read(4096) >= 0 and client.state is not None, what="the full state")
    (conn,) = web._server.server_state.connections
    size = conn.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET,
                                                              socket.SO_SNDBUF)
    client.close()
    assert STREAM_SNDBUF <= size <= 2 * STREAM_SNDBUF, size


def _without_pen(status: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in status().items() if k != "pen"}


def test_a_page_that_followed_and_a_page_that_came_later_keep_the_same_trace() -> None:
    """The hub, the page that applied every delta (state.apply, as app.js) and a page
    that got one full state later hold the same depth trace: the last TRACE_WINDOW_S
    before its newest point. Also when the points stop (no pen: the link lost) while the
    session's clock goes on, where the hub used to empty its trace and the pages kept
    theirs. The hub is built by hand (no thread): one refresh per step."""
    source = Ticking()
    hub = Hub(source, MAP, HEADER, period_s=PERIOD_S)
    page: dict[str, Any] | None = None
    state: dict[str, Any] = {}
    steps = int(1.25 * TRACE_WINDOW_S / PERIOD_S)  # past the window: the trace is trimmed
    for n in range(2 * steps):
        if n == steps:  # the pen gone; the clock goes on past the window
            source.status = functools.partial(_without_pen, source.status)  # type: ignore[method-assign]
        state = hub.build(n * PERIOD_S, poll_events=False)
        page = dict(state) if page is None else apply(page, diff(page, state))
        assert page["trace"] == state["trace"], f"step {n}"
    assert page is not None
    trace = state["trace"]
    assert trace, "the last window of points is kept once they stop"
    assert trace[-1][0] - trace[0][0] <= TRACE_WINDOW_S
    assert source.now_s() - trace[-1][0] > TRACE_WINDOW_S  # (the clock went past it)


def test_a_quiet_stream_gets_keepalives_from_the_one_timer(
    ticking: tuple[Ticking, WebServer],
) -> None:
    source, web = ticking
    bc = web.broadcast
    assert bc is not None
    source.frozen = True
    bc.keepalive_s = 0.1  # read when the first stream starts the timer
    clients = [Client(web.port) for _ in range(2)]
    for c in clients:
        _wait(lambda c=c: c.read() >= 0 and c.keepalives >= 2, what="two keep-alives")
        assert c.names == ["full"]  # nothing changed: no delta, only comments
        c.close()


@pytest.mark.parametrize("httptools", [True, False], ids=["httptools", "h11-fallback"])
def test_the_stream_is_the_same_with_httptools_or_without(
    httptools: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not httptools:
        monkeypatch.setitem(sys.modules, "httptools", None)  # as if it were not installed
    source = Ticking()
    web = serve(Hub(source, MAP, HEADER, period_s=PERIOD_S), "127.0.0.1", 0, token=None,
                submit=None)
    try:
        impl = {c.__module__.rsplit(".", 1)[-1] for c in web._server.config.http.__mro__}
        assert ("httptools_impl" if httptools else "h11_impl") in impl
        client = Client(web.port)
        _wait(lambda: client.read(16384) >= 0 and len(client.names) >= 3, what="three events")
        assert client.names[:3] == ["full", "message", "message"]
        assert client.retry == 1000
        client.close()
    finally:
        web.stop()
