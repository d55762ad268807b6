"""The live page's web server: starlette on uvicorn, in a daemon thread of its own.

GET / and /static/* serve the page; /api/state the full state; /api/stream
Server-Sent Events (full state first, then only what changed, at up to 10 Hz: every
state encoded once for all the streams, devicectl/web/broadcast.py);
POST /api/control/{action} the technician's controls, only with the token.

Every request passes `_Guard` first: a Host header the server was not started
for gets 400 (DNS rebinding), and every answer carries the security headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devicectl.errors import DevicectlError
from devicectl.web.broadcast import KEEPALIVE, Broadcast, sse
from devicectl.web.hub import Hub

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from devicectl.transitions import Command

STATIC_DIR = Path(__file__).parent / "static"
#: The controls; abort and clear_fault need {"confirm": true} as well.
ACTIONS = ("pause", "resume", "next_zone", "abort", "clear_fault")
CONFIRM_ACTIONS = frozenset({"abort", "clear_fault"})
#: What a session token looks like (secrets.token_urlsafe); anything else is refused
#: before it is compared, so a malformed or non-ASCII header is a 403, never a 500.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{8,128}")
#: A control's body is a small JSON object; more is refused unread.
MAX_BODY_BYTES = 4096
#: Sent with every answer: nothing from elsewhere, no framing, no sniffing, no referrer.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy",
     b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
#: The kernel's send buffer asked for each connection (bytes; Linux keeps twice this).
#: A client that stops reading (a tab in the background, a stalled network) holds at
#: most this much of the server's memory in the kernel, with the stream's own bounded
#: ring in the page (broadcast.py) above it: on loopback Linux would otherwise grow
#: a stalled stream's buffer to megabytes (4 MB each, 200 clients 800 MB). A stream's
#: events are a few kB a second, which this holds many seconds of.
STREAM_SNDBUF: Final = 64 * 1024
#: A request's line and headers, at most (bytes): more is answered 431 and the connection
#: closed. The page's own heads are under 1 kB; without a bound uvicorn with httptools
#: keeps every header byte a client sends (llhttp sets no limit), in the treatment's
#: process.
MAX_HEAD_BYTES: Final = 16 * 1024
#: A request's head must be complete this long after its first byte, and a new
#: connection must send one (s); else the connection is closed (slowloris). uvicorn's
#: keep-alive timeout covers only the silence after an answer.
HEAD_TIMEOUT_S = 10.0
#: Open connections at most; one more is closed as it arrives. The session's process
#: (run --web) needs its file descriptors for the pen's port, the records and the
#: crash file; the page's own use is a few streams (docs/performance.md measures 200).
MAX_CONNECTIONS = 512
#: Addresses that mean "every interface": the page then also answers to this
#: machine's own names and addresses.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

Submit = Callable[["Command"], None]


def _command(action: str) -> Command:
    from devicectl.transitions import Command

    return Command[action.upper()]


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host headers a page served on host:port answers to (lower case, with the port).

    127.0.0.1 and localhost always, and the host it was started for; for a
    wildcard address, this machine's name and addresses too. Anything else is
    another site's name pointed at this machine (DNS rebinding): refused.
    """
    names = {"127.0.0.1", "localhost", "[::1]", host}
    if host in _WILDCARD_HOSTS:
        for name in (socket.gethostname(), socket.getfqdn()):
            names.add(name)
            with contextlib.suppress(OSError):
                names.update(socket.gethostbyname_ex(name)[2])
    out = set()
    for name in names:
        if not name or name in _WILDCARD_HOSTS:
            continue
        name = name.lower()
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"
        out.add(f"{name}:{port}")
        if port == 80:
            out.add(name)
    return frozenset(out)


class _Guard:
    """ASGI middleware: only the allowed Host headers pass, and every answer
    carries SECURITY_HEADERS. `allowed` is filled once the port is known."""

    def __init__(self, app: ASGIApp, allowed: set[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        async def plain(status: int, body: bytes) -> None:
            """A whole text answer, with the security headers."""
            await guarded_send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]})
            await send({"type": "http.response.body", "body": body})

        hosts = [v for k, v in scope.get("headers", ()) if k == b"host"]
        host = hosts[0].decode("latin-1").lower() if len(hosts) == 1 else ""
        if host not in self.allowed:
            await plain(400, b"unknown Host header: open the page at the address devicectl "
                        b"printed\n")
            return
        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            # A bug in a handler: the 500 goes out here, with the headers (starlette's
            # own error middleware sits outside this guard); the error goes on to the log.
            if not started:
                await plain(500, b"Internal Server Error")
            raise


def _plain_answer(status: bytes, text: bytes) -> bytes:
    """A whole answer that closes the connection, with the security headers (written by
    the protocol itself, below the app and its guard)."""
    head = [b"HTTP/1.1 " + status, b"content-type: text/plain; charset=utf-8",
            b"content-length: " + str(len(text)).encode(), b"connection: close",
            *(name + b": " + value for name, value in SECURITY_HEADERS)]
    return b"\r\n".join(head) + b"\r\n\r\n" + text


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's protocol class for http_impl(): at most MAX_CONNECTIONS, each request's
    head bounded in size (MAX_HEAD_BYTES; h11 bounds it itself) and in time
    (HEAD_TIMEOUT_S), and its own 400 with the security headers. Only a head counts:
    a body, or the rest of one after its answer, is the app's and uvicorn's."""
    base: Any
    if http_impl() == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base

        class Parser(base):  # type: ignore[misc]
            _in_head = False  # from a message's first byte to its last header

            def on_message_begin(self) -> None:
                self._in_head = True
                super().on_message_begin()

            def on_headers_complete(self) -> None:
                self._in_head = False
                super().on_headers_complete()

            def _head_begun(self) -> bool:
                return self._in_head
    else:
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

        class Parser(base):  # type: ignore[no-redef,misc]
            def _head_begun(self) -> bool:
                conn = self.conn
                return conn.their_state is h11.IDLE and bool(conn.trailing_data[0])

    class BoundedHead(Parser):
        _head_bytes = 0
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > MAX_CONNECTIONS:
                transport.close()  # connection_lost takes it out of `connections`
                return
            # a new connection must send a head in time too
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_done()
            super().connection_lost(exc)

        def _head_done(self) -> None:
            self._head_bytes = 0
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _close_with(self, status: bytes, text: bytes) -> None:
            self._head_done()
            if not self.transport.is_closing():
                self.transport.write(_plain_answer(status, text))
                self.transport.close()

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._head_begun():
                self._close_with(b"408 Request Timeout", b"the request's head came too slowly\n")
            elif self.cycle is None:
                self.transport.close()  # never sent a byte (a browser's spare): no answer

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self._head_begun():
                self._head_done()
                return
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._close_with(b"431 Request Header Fields Too Large",
                                 b"the request's head is too large\n")
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

        def send_400_response(self, msg: str) -> None:
            self._close_with(b"400 Bad Request", msg.encode("ascii", "replace"))

    return BoundedHead


def token_matches(given: str, token: str | None) -> bool:
    """The header's token is the session's: well formed, then compared in constant time."""
    if token is None or TOKEN_RE.fullmatch(given) is None:
        return False
    return secrets.compare_digest(given.encode("ascii"), token.encode("ascii"))


def _confirmed(raw: bytes) -> bool:
    """The body is exactly a JSON object whose "confirm" is the JSON literal true."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
        return False
    return isinstance(body, dict) and body.get("confirm") is True


def create_app(hub: Hub, *, token: str | None, submit: Submit | None,
               allowed: set[str]) -> Starlette:
    """The app; controls need `token` and a `submit`, else every control answers 403.
    Only requests whose Host header is in `allowed` reach it; its streams' Broadcast is
    `app.state.broadcast`."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def favicon(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    async def state(request: Request) -> Response:
        return JSONResponse({"map": hub.map, "state": hub.current})

    broadcast = Broadcast(hub)

    async def stream(request: Request) -> Response:
        # A closed connection ends the stream: StreamingResponse listens for
        # http.disconnect (ASGI < 2.4, as uvicorn's HTTP is) and cancels `events`.
        async def events() -> AsyncIterator[bytes]:
            broadcast.streams += 1
            try:
                pub = broadcast.latest
                version, beat = pub.version, broadcast.beat
                # retry: the browser reconnects 1 s after a dropped connection.
                yield b"retry: 1000\n\n" + broadcast.full(pub)
                while True:
                    pub = await broadcast.changed(version, beat)
                    if broadcast.closed:
                        break
                    chunk = broadcast.since(version, pub)
                    version = pub.version
                    if chunk:
                        yield chunk
                    elif broadcast.beat != beat:
                        yield KEEPALIVE
                    beat = broadcast.beat
                if hub.session_over:
                    # The server stops because the session ended: the page stops retrying.
                    yield sse({"state": hub.current}, "end")
            finally:
                broadcast.streams -= 1

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def control(request: Request) -> Response:
        action = request.path_params["action"]
        given = request.headers.get("x-session-token", "")
        if submit is None or not token_matches(given, token):
            return JSONResponse(
                {"error": "read-only: the controls need the session's token"}, status_code=403
            )
        if action not in ACTIONS:
            return JSONResponse({"error": f"unknown control {action!r}"}, status_code=404)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return JSONResponse({"error": "the body is too large"}, status_code=413)
        if action in CONFIRM_ACTIONS and not _confirmed(raw):
            return JSONResponse(
                {"error": f'{action} needs the body {{"confirm": true}}'}, status_code=409)
        submit(_command(action))
        return JSONResponse({"ok": True, "action": action})

    app = Starlette(
        middleware=[Middleware(_Guard, allowed=allowed)],
        routes=[
            Route("/", index),
            Route("/favicon.ico", favicon),
            Route("/api/state", state),
            Route("/api/stream", stream),
            Route("/api/control/{action}", control, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
    )
    app.state.broadcast = broadcast
    return app


@dataclass
class WebServer:
    """A running page: `url`, and `stop()` to end it (the hub too)."""

    hub: Hub
    host: str
    port: int
    _server: Any
    _thread: threading.Thread
    #: The session's token, when the page has controls (`run --web`).
    token: str | None = None
    #: The streams' shared state (devicectl/web/broadcast.py).
    broadcast: Broadcast | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        self.hub.stop()
        self._server.should_exit = True
        self._thread.join(5.0)


def http_impl() -> str:
    """uvicorn's HTTP parser: httptools (C, a dependency) when it imports, else h11 (pure
    Python, uvicorn's own fallback, as when devicectl was installed without its
    dependencies): serving 200 streams, httptools uses ~0.85x h11's CPU
    (docs/performance.md, round 9); both send the same events."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def serve(hub: Hub, host: str, port: int, *, token: str | None, submit: Submit | None,
          start_timeout_s: float = 10.0) -> WebServer:
    """Start the hub and uvicorn on a daemon thread; return once it listens (port 0: any)."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the package depends on it
        raise DevicectlError("the web page needs uvicorn and starlette: pip install "
                             "devicectl with its dependencies") from exc
    allowed: set[str] = set()  # filled once the port is known: nothing passes before
    app = create_app(hub, token=token, submit=submit, allowed=allowed)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", http=http_protocol(),
                            access_log=False, timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="web-server", daemon=True)
    hub.start()
    thread.start()
    waited = 0.0
    while not server.started:
        if not thread.is_alive() or waited > start_timeout_s:
            hub.stop()
            server.should_exit = True
            raise DevicectlError(f"the web page could not listen on {host}:{port} "
                                 "(is the port in use? try --web-port)")
        thread.join(0.02)
        waited += 0.02
    for listening in (sock for srv in server.servers for sock in srv.sockets):
        # a connection takes its listening socket's buffer sizes when accepted (Linux)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    allowed.update(allowed_hosts(host, int(bound)))
    return WebServer(hub, host, int(bound), server, thread, broadcast=app.state.broadcast)


def start_web(
    session: Any,
    host: str,
    port: int,
    token: str | None,
    *,
    zone_map: Any,
    header: dict[str, Any],
    db_path: Path | str | None = None,
    session_id: int | None = None,
) -> WebServer:
    """The live page of a session running in this process (`devicectl run --web`)."""
    from devicectl.web.hub import EventFeed, LiveSource

    source = LiveSource(session)
    events = EventFeed(db_path, session_id) if db_path is not None and session_id else None
    hub = Hub(source, zone_map, header | {"controls": token is not None, "mode": "live"},
              events=events)
    web = serve(hub, host, port, token=token, submit=source.submit)
    web.token = token
    return web
