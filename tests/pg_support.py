"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package,
`initdb` and `pg_ctl` in a temporary directory on a free port, run as the
`postgres` user when the tests run as root. One server per test session; each
test gets its own database. Where no server can be had, the tests that need one
skip, saying why.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from devicectl.dbconn import Conn, PgConn


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(dirs[-1]) if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bin_dir: Path
    data_dir: Path
    port: int
    as_user: list[str]
    _names: itertools.count[int]

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, template: str | None = None) -> str:
        """A fresh database; with `template`, a copy of that one (no one connected)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        like = f" TEMPLATE {template}" if template else ""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}{like}".encode())
        return self.url(name)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
            capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> None:
        sock = self.data_dir.parent
        # fsync off: the machine does not crash in a test, the server does (a commit
        # is still in the OS's cache); synchronous_commit stays on, so a killed
        # server keeps what it acknowledged, as a clinic's does.
        opts = (f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
                " -c full_page_writes=off")
        done = self.ctl("start", "-w", "-t", "60", "-l", str(sock / "log"), "-o", opts)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip() or done.stdout}")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("stop", "-w", "-m", mode)


def start_server() -> tuple[PgServer | None, str]:
    """A running server, or None and the reason there is none."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        return None, "no PostgreSQL server binaries (apt-get install postgresql)"
    root = Path(tempfile.mkdtemp(prefix="devicectl-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            return None, "running as root without runuser to start PostgreSQL as postgres"
        try:
            shutil.chown(root, "postgres", "postgres")
        except (LookupError, OSError) as exc:
            return None, f"no `postgres` user to run the server as ({exc})"
        as_user = [runuser, "-u", "postgres", "--"]
    data = root / "data"
    init = subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
         "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True, text=True, timeout=180, check=False)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"initdb failed: {init.stderr.strip()[:300]}"
    server = PgServer(bin_dir, data, _free_port(), as_user, itertools.count(1))
    try:
        server.start()
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        return None, str(exc)
    return server, ""


def serve_for_tests() -> Iterator[PgServer]:
    """A throwaway server for a fixture's scope (skipped, saying why, when none can be had),
    stopped and its files removed afterwards."""
    server, why = start_server()
    if server is None:
        pytest.skip(f"no PostgreSQL server for these tests: {why}")
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    yield from serve_for_tests()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def records(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path | str:
    """The records on each backend: an SQLite file, a fresh database on the test
    session's server. A server's unsaved file goes under tmp_path (XDG_DATA_HOME)."""
    if request.param == "sqlite":
        # the clinic's folder exists: a typed --db in a missing one is refused (round 12)
        (tmp_path / "records").mkdir(exist_ok=True)
        return tmp_path / "records" / "sessions.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    return str(request.getfixturevalue("pg_url"))


def copy_records(source: Path | str, tmp_path: Path, request: pytest.FixtureRequest
                 ) -> Path | str:
    """A test's own copy of records a module made once: on the server, a database
    copied whole from `source` (its template: cheap, no session replayed); an SQLite
    file through the backup API."""
    if isinstance(source, str):
        server: PgServer = request.getfixturevalue("pg_server")
        return server.new_database(template=source.rsplit("/", 1)[1])
    import sqlite3

    target = tmp_path / source.name
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    src.backup(dst)
    src.close()
    dst.close()
    return target


def raw_connect(db: Path | str) -> Conn:
    """A connection to the records past the store, as someone with write access
    (autocommit on both): sqlite3's, or devicectl's PgConn over psycopg."""
    if isinstance(db, str):
        return PgConn(psycopg.connect(db, autocommit=True))
    import sqlite3

    return sqlite3.connect(db, isolation_level=None)
