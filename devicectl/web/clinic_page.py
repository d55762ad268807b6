"""The clinic view's web page (`devicectl monitor --db postgresql://…`): every live
session in the clinic on one page (room, operator, patient, state, zone, %), each
linking to that session's page. Read-only: GET only, the records only read
(devicectl/clinic.py). Pages are rendered on the server and refresh themselves
every REFRESH_S; no script runs. The Host check, the security headers and the bounds
on connections and request heads are the live page's (devicectl/web/server.py).
"""

from __future__ import annotations

import html
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from devicectl.clinic import Labels
from devicectl.errors import DevicectlError, StoreError
from devicectl.web.server import _Guard, allowed_hosts, http_protocol

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

#: The pages reload themselves this often (s).
REFRESH_S: Final = 2
_CSS: Final = """body{font-family:system-ui,sans-serif;margin:24px;color:#111}
table{border-collapse:collapse}td,th{padding:.35rem .8rem;border-bottom:1px solid #ccc;
text-align:left}th{background:#f3f3f3}.bad{color:#b00;font-weight:bold}
.muted{color:#666}a{color:#0645ad}"""
_BAD_STATES: Final = frozenset({"FAULT", "LINK_LOST", "INTERRUPTED"})


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta http-equiv=refresh content={REFRESH_S}>"
            f"<title>{html.escape(title)}</title><link rel=stylesheet href=/clinic.css>"
            f"</head><body>{body}</body></html>")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def render_clinic(sessions: list[Any], where: str) -> str:
    rows = "".join(
        f"<tr><td>{_e(s.room or '—')}</td><td>{_e(s.operator)}</td><td>{_e(s.patient_ref)}</td>"
        f"<td class={'bad' if s.state in _BAD_STATES else 'ok'}>{_e(s.state)}</td>"
        f"<td>{_e(s.zone or '—')}</td><td>{s.percent} %</td>"
        f"<td><a href=/session/{s.session_id}>session {s.session_id}</a></td></tr>"
        for s in sessions)
    table = (f"<table><thead><tr><th>room</th><th>operator</th><th>patient</th><th>state</th>"
             f"<th>zone</th><th>%</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
             if sessions else "<p class=muted>no session is running in the clinic now</p>")
    return _page("devicectl · clinic", f"<h1>Live sessions in the clinic</h1>"
                 f"<p class=muted>{_e(where)} · read-only · {len(sessions)} running</p>{table}")


def render_session(view: Any) -> str:
    s = view.live
    zones = "".join(
        f"<tr><td>{_e(z['name'])}</td><td>{z['percent']} %</td><td>{z['target']} %</td>"
        f"<td>{z['strokes']}</td><td>{'done' if z['done'] else ''}</td></tr>"
        for z in view.zones)
    events = "".join(
        f"<tr><td>{_e(e.wall[11:19])}</td><td>{_e(e.kind)}</td><td>{_e(e.text)}</td></tr>"
        for e in view.events)
    body = (
        f"<p><a href=/>all live sessions</a></p><h1>Session {s.session_id}</h1>"
        f"<p>room {_e(s.room or '—')} · operator {_e(s.operator)} · patient {_e(s.patient_ref)}"
        f" · {_e(s.profile)} · started {_e(s.started_at)}</p>"
        f"<p>state <b class={'bad' if s.state in _BAD_STATES else 'ok'}>{_e(s.state)}</b>"
        f" · zone {_e(s.zone or '—')} · {s.percent} %"
        f"{'' if view.running else ' · not running'}</p>"
        f"<table><thead><tr><th>zone</th><th>coverage</th><th>target</th><th>strokes</th>"
        f"<th></th></tr></thead><tbody>{zones}</tbody></table>"
        f"<h2>Latest events</h2><table><tbody>{events}</tbody></table>")
    return _page(f"devicectl · session {s.session_id}", body)


class ClinicPage:
    """The clinic view's server: uvicorn on a daemon thread; `url`, `stop()`."""

    def __init__(self, db: str, host: str, port: int, labels: Labels) -> None:
        from devicectl.store_pg import redact

        self.db = db
        self.where = redact(db)
        self.labels = labels
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _with_store(self, read: Any) -> Any:
        from devicectl.store import Store

        with Store(self.db) as store:
            return read(store)

    def app(self, allowed: set[str]) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route

        from devicectl.clinic import live_sessions, session_view

        def unavailable(exc: DevicectlError) -> Response:
            return PlainTextResponse(f"{exc}\n", status_code=503)

        def index(request: Request) -> Response:
            try:
                sessions = self._with_store(lambda st: live_sessions(st, self.labels))
            except DevicectlError as exc:
                return unavailable(exc)
            return HTMLResponse(render_clinic(sessions, self.where))

        def api(request: Request) -> Response:
            try:
                sessions = self._with_store(lambda st: live_sessions(st, self.labels))
            except DevicectlError as exc:
                return unavailable(exc)
            return JSONResponse({"sessions": [asdict(s) for s in sessions]})

        def one(request: Request) -> Response:
            sid = int(request.path_params["sid"])
            try:
                view = self._with_store(lambda st: session_view(st, sid, self.labels))
            except StoreError as exc:
                if f"no session {sid}" in str(exc):
                    return PlainTextResponse(f"{exc}\n", status_code=404)
                return unavailable(exc)
            return HTMLResponse(render_session(view))

        def css(request: Request) -> Response:
            return PlainTextResponse(_CSS, media_type="text/css")

        def favicon(request: Request) -> Response:
            return Response(status_code=204)

        app = Starlette(routes=[
            Route("/", index), Route("/api/sessions", api), Route("/session/{sid:int}", one),
            # GET (and HEAD) only: anything else is a 405
            Route("/clinic.css", css), Route("/favicon.ico", favicon)])
        return _Guard(app, allowed)

    def start(self, start_timeout_s: float = 10.0) -> ClinicPage:
        import uvicorn

        allowed: set[str] = set()
        config = uvicorn.Config(self.app(allowed), host=self.host, port=self.port,
                                log_level="warning", access_log=False, http=http_protocol(),
                                timeout_graceful_shutdown=1, lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="clinic-page", daemon=True)
        thread.start()
        waited = 0.0
        while not server.started:
            if not thread.is_alive() or waited > start_timeout_s:
                server.should_exit = True
                raise DevicectlError(f"the clinic page could not listen on {self.host}:"
                                     f"{self.port} (is the port in use? try --web-port)")
            thread.join(0.02)
            waited += 0.02
        self.port = int(server.servers[0].sockets[0].getsockname()[1])
        allowed.update(allowed_hosts(self.host, self.port))
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5.0)
