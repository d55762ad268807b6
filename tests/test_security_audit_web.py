"""docs/web.md and docs/security.md's page read as an attacker would: the live page's
server (and the clinic page's) on a free port, spoken to over raw sockets: hostile
bodies and heads, slow and endless requests, more connections than it may keep.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_web_stream import HEADER, MAP, Ticking

from devicectl.clinic import zone_labels
from devicectl.web import server
from devicectl.web.clinic_page import ClinicPage
from devicectl.web.hub import Hub
from devicectl.web.server import SECURITY_HEADERS, WebServer, serve
from devicectl.zones import load_zone_map

TOKEN = "audit-token-0123456789"

@dataclass
class Page:
    web: WebServer
    submitted: list[Any] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.web.port}"

    def raw(self, request: bytes, timeout_s: float = 10.0) -> bytes:
        """Send `request` (with Connection: close) as is on a new connection; the
        answer's head and body."""
        with socket.create_connection(("127.0.0.1", self.web.port), timeout=timeout_s) as s:
            s.sendall(request)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out

    def control(self, action: str, body: bytes) -> bytes:
        return self.raw(
            f"POST /api/control/{action} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"X-Session-Token: {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )


@contextlib.contextmanager
def _serving() -> Iterator[Page]:
    """The real server with controls (the token and a submit that records commands)."""
    submitted: list[Any] = []
    web = serve(Hub(Ticking(), MAP, HEADER | {"controls": True}, period_s=0.1),
                "127.0.0.1", 0, token=TOKEN, submit=submitted.append)
    try:
        yield Page(web, submitted)
    finally:
        web.stop()


@pytest.fixture
def page() -> Iterator[Page]:
    with _serving() as served:
        yield served


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _has_security_headers(answer: bytes) -> bool:
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    return all(name + b": " + value.lower() in head for name, value in SECURITY_HEADERS)


# --- the controls' body ---------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[" * 3000, b'{"confirm": ' + b"[" * 3000])
def test_a_deeply_nested_confirm_body_is_409_never_500(page: Page, body: bytes) -> None:
    """docs/web.md: abort and clear_fault need a body that is a JSON object whose
    `confirm` is true, "or they get 409"; every answer carries the security headers.
    A 4 KiB body of nested arrays made server.py:_confirmed's json.loads raise
    RecursionError (not a ValueError): a 500 with a traceback in the log, from
    starlette's error middleware outside the guard, so without the headers."""
    answer = page.control("abort", body)
    assert _status(answer) == 409, answer[:200]
    assert _has_security_headers(answer)
    assert page.submitted == []


# --- guards of true claims ------------------------------------------------------------


@pytest.mark.parametrize("order", ["allowed-first", "foreign-first"])
def test_two_host_headers_get_400_whichever_comes_first(page: Page, order: str) -> None:
    """docs/web.md: "Any other Host, or none, gets 400 and reaches nothing". A request
    with two Host headers (one allowed) is not the allowed one: 400, nothing done
    (server.py:_Guard takes a Host only when there is exactly one)."""
    hosts = [f"Host: {page.host}", f"Host: evil.example:{page.web.port}"]
    if order == "foreign-first":
        hosts.reverse()
    answer = page.raw(
        f"POST /api/control/pause HTTP/1.1\r\n{hosts[0]}\r\n{hosts[1]}\r\n"
        f"X-Session-Token: {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        .encode())
    assert _status(answer) == 400 and _has_security_headers(answer)
    assert page.submitted == []


@pytest.mark.parametrize("where", ["query", "cookie", "authorization"])
def test_the_token_counts_only_in_its_header(page: Page, where: str) -> None:
    """docs/web.md: no request carries the token in its URL; the controls need the
    header X-Session-Token. The server takes it from nowhere else (a query or a cookie
    would be sent by the browser, logged, or set by another page)."""
    path, extra = "/api/control/pause", ""
    if where == "query":
        path += f"?token={TOKEN}"
    elif where == "cookie":
        extra = f"Cookie: token={TOKEN}; X-Session-Token={TOKEN}\r\n"
    else:
        extra = f"Authorization: Bearer {TOKEN}\r\n"
    answer = page.raw(f"POST {path} HTTP/1.1\r\nHost: {page.host}\r\n{extra}"
                      "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    assert _status(answer) == 403
    assert page.submitted == []


def test_a_500_carries_the_security_headers_too(page: Page) -> None:
    """docs/web.md: the security headers are "on every answer, errors included". A
    handler that fails (here /api/state with a value JSON cannot carry, as a bug would
    make it) was answered by starlette's ServerErrorMiddleware, which sits outside
    server.py:_Guard: a 500 without the headers."""
    page.web.hub.map = {"broken": float("nan")}
    answer = page.raw(f"GET /api/state HTTP/1.1\r\nHost: {page.host}\r\n"
                      "Connection: close\r\n\r\n".encode())
    assert _status(answer) == 500
    assert _has_security_headers(answer), answer[:400]


# --- the server under a hostile client -----------------------------------------------


@pytest.fixture(params=["httptools", "h11"])
def any_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    """The real server with each of uvicorn's HTTP parsers (h11: httptools not importable)."""
    if request.param == "h11":
        monkeypatch.setitem(sys.modules, "httptools", None)
    monkeypatch.setattr(server, "HEAD_TIMEOUT_S", 1.0, raising=False)
    with _serving() as served:
        yield served


def _closed_by_server(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before it closed the connection; None if it kept it open."""
    sock.settimeout(within_s)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: a reset, also a close
    return out


def test_a_huge_request_head_is_refused_not_buffered(any_parser: Page) -> None:
    """The page's server shares the treatment's process (`run --web`); docs/web.md: "The
    inner loop never waits for the page", and a stalled client holds a bounded amount
    of the server's memory (server.py:STREAM_SNDBUF). With httptools, uvicorn kept every
    header byte a client sent (on_header appends; llhttp sets no limit): one connection
    sending 200 MB of one header grew the process by 200 MB and never got an answer.
    A request head over server.MAX_HEAD_BYTES is answered 431 (with the security
    headers) and the connection closed, with either parser."""
    page = any_parser
    sock = socket.create_connection(("127.0.0.1", page.web.port), timeout=10)
    sock.sendall(f"GET /api/state HTTP/1.1\r\nHost: {page.host}\r\nX-Pad: ".encode())
    sent = 0
    try:
        while sent < 64 << 20:  # 64 MiB, unless the server stops reading first
            sock.sendall(b"a" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    answer = _closed_by_server(sock, 10.0)
    sock.close()
    assert answer is not None, "the server kept reading the head"
    assert sent < 64 << 20, "the server read 64 MiB of one header"
    if answer:  # the 431 may be lost to the reset of the bytes it did not read
        assert _status(answer) in (400, 431) and _has_security_headers(answer), answer[:300]


@pytest.mark.parametrize("size", [5000, 20_000])  # 20 kB: more than a head may be
def test_a_control_body_over_4_kib_gets_413_however_it_arrives(any_parser: Page,
                                                               size: int) -> None:
    """docs/web.md: "a body over 4 KiB gets 413", also when the body is sent with the
    head in one write: the bound on heads (server.http_protocol) must not take a body
    for a head. (A body of many times the socket buffers sent with Connection: close
    can lose its 413 to the reset of the unread rest, as with plain uvicorn.)"""
    answer = any_parser.control("abort", b'{"confirm": true, "pad": "' + b"a" * size + b'"}')
    assert _status(answer) == 413, answer[:200]
    assert any_parser.submitted == []


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "one-byte-at-a-time"])
def test_a_request_head_that_never_ends_is_closed(any_parser: Page, trickle: bool) -> None:
    """Slowloris: a client that starts a request and never finishes its head held its
    connection (and a file descriptor of the treatment's process) for ever; uvicorn's
    keep-alive timeout covers only the silence between requests. A head not complete
    HEAD_TIMEOUT_S after its first byte is closed, however slowly it trickles in; a
    complete request is still served."""
    page = any_parser
    sock = socket.create_connection(("127.0.0.1", page.web.port), timeout=10)
    sock.sendall(f"GET /api/state HTTP/1.1\r\nHost: {page.host}\r\n".encode())
    deadline = time.monotonic() + 20.0  # the test's generous bound (the server's is 1 s)
    closed = None
    while closed is None and time.monotonic() < deadline:
        if trickle:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = b""
                break
        closed = _closed_by_server(sock, 0.2)
    sock.close()
    assert closed is not None, "the server kept a never-ending request head open"
    answer = page.raw(f"GET /api/state HTTP/1.1\r\nHost: {page.host}\r\n"
                      "Connection: close\r\n\r\n".encode())
    assert _status(answer) == 200


def test_connections_beyond_the_cap_are_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's server runs in the session's process (`run --web`), whose file
    descriptors also serve the pen's port (a reconnect opens it again), the records and
    the crash file; docs/web.md: "The inner loop never waits for the page". Every
    connection was accepted and kept (uvicorn's limit_concurrency unset): a local
    program could hold as many descriptors as the process may open (1024 by default on
    Linux). Connections beyond server.MAX_CONNECTIONS are closed as they arrive, and
    the page answers again once they are gone."""
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 8, raising=False)
    monkeypatch.setattr(server, "HEAD_TIMEOUT_S", 600.0, raising=False)  # not this rule
    web = serve(Hub(Ticking(), MAP, HEADER, period_s=0.1), "127.0.0.1", 0, token=None,
                submit=None)
    page = Page(web)
    socks = [socket.create_connection(("127.0.0.1", web.port), timeout=10) for _ in range(20)]
    try:
        closed: set[socket.socket] = set()
        deadline = time.monotonic() + 10.0
        while len(closed) < 20 - 8 and time.monotonic() < deadline:
            ready, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.2)
            closed.update(s for s in ready if _closed_by_server(s, 1.0) is not None)
        assert len(closed) >= 20 - 8, f"{len(closed)} of 20 closed"
    finally:
        for s in socks:
            s.close()
        deadline = time.monotonic() + 10
        answer = b""
        while time.monotonic() < deadline:
            answer = page.raw(f"GET /api/state HTTP/1.1\r\nHost: {page.host}\r\n"
                              "Connection: close\r\n\r\n".encode())
            if answer:
                break
        web.stop()
    assert _status(answer) == 200


def test_the_clinic_page_bounds_request_heads_like_the_live_page(tmp_path: Path) -> None:
    """devicectl/web/clinic_page.py: "The Host check and the security headers are the
    live page's"; it ran uvicorn's default protocol, so the live page's bounds on a
    request's head (size, time) did not hold there: a 1 MiB header was read whole."""
    labels = zone_labels(load_zone_map())
    page = ClinicPage(str(tmp_path / "none.db"), "127.0.0.1", 0, labels).start()
    try:
        sock = socket.create_connection(("127.0.0.1", page.port), timeout=10)
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{page.port}\r\nX-Pad: ".encode()
                     + b"a" * 65536)
        answer = _closed_by_server(sock, 10.0)
        sock.close()
    finally:
        page.stop()
    assert answer is not None, "the clinic page kept reading the head"
    if answer:
        assert _status(answer) in (400, 431) and _has_security_headers(answer), answer[:300]


def test_a_connection_that_never_sends_a_byte_is_closed(any_parser: Page) -> None:
    """docs/web.md (bounded request heads): a new connection must send its head in
    time too, else it is closed (with no answer: it asked nothing). Guards
    server.http_protocol's timer from connection_made."""
    sock = socket.create_connection(("127.0.0.1", any_parser.web.port), timeout=10)
    closed = _closed_by_server(sock, 20.0)  # the server's bound here is 1 s
    sock.close()
    assert closed == b""
