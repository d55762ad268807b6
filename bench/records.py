"""Benchmark: the records on each backend (issue 15 item 7).

1. Record events per second: one RecordWriter, as a session drives it (batches
   of 10 events, a safety event every 500, commit every 100 ms), into an SQLite
   file and into PostgreSQL; from the first event queued to the session closed.
2. ESTOP latency over a pseudo-terminal with each backend: bench/latency.py's
   pen and trials (over-depth TELEMETRY to the host's ESTOP, pen to pen), its
   host now with a RecordWriter as `devicectl run` has it (no view, switch
   interval 0.5 ms, heap frozen): no records, SQLite, PostgreSQL, in one run.
   The PostgreSQL writer must not change the loop's latency: p99 ratio to
   SQLite's ≤ 1.1.

PostgreSQL: `--pg URL`, else a throwaway server (tests/pg_support.py: Debian's
postgresql package, initdb in a temporary directory). Run:
`.venv/bin/python bench/records.py [--events N] [--trials N] [--pg URL]`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "tests"))

import latency  # noqa: E402  (bench/latency.py: the pen, the trials)

from devicectl.store import EventRecord, RecordWriter, Store  # noqa: E402

WALL = "2026-03-01T09:00:01+00:00"
EVENTS = 20_000
TRIALS = 300
GOAL_RATIO = 1.1
#: Trials a round: no records, SQLite and PostgreSQL take turns (in alternating order),
#: so the machine's load drifts over all three alike and the ratio is same-run.
ROUND = 30
#: A host whose trials stop short (latency.py's deadline, on a loaded machine) is
#: followed by another for the rest: a backend gets the hosts its rounds need plus
#: at most this many more.
SPARE_HOSTS = 40
#: The writer's CPU per event is measured this many times a backend, in turns.
CPU_REPEATS = 5


def estop_rounds(sqlite_db: Path, url: str, trials: int, per_round: int,
                 ahead: bool = False) -> dict[str, list[int]]:
    """`trials` ESTOP latencies (ns) with each of: no records, SQLite, PostgreSQL,
    taken in rounds of `per_round` that alternate the order; a host that stops
    short is followed by another until every backend has its trials (or SPARE_HOSTS
    more hosts than its rounds need)."""
    dbs = {"no records": "none", "SQLite": str(sqlite_db), "PostgreSQL": url}
    got: dict[str, list[int]] = {name: [] for name in dbs}
    hosts = dict.fromkeys(dbs, 0)
    order = list(dbs)
    max_hosts = -(-trials // per_round) + SPARE_HOSTS
    while any(len(got[n]) < trials and hosts[n] < max_hosts for n in dbs):
        for name in order:
            want = min(per_round, trials - len(got[name]))
            if want <= 0 or hosts[name] >= max_hosts:
                continue
            lat, report = estop_with(dbs[name], want, ahead)
            hosts[name] += 1
            got[name].extend(lat)
            print(f"    {name:10}: {len(got[name]):4}/{trials} trials  [{report}]", flush=True)
        order.reverse()
    return got


def _new_session(db: Path | str, patient: str) -> int:
    with Store(db) as store:
        return store.create_session(patient_ref=patient, profile_name="bench",
                                    profile_hash="h", profile_text="bench",
                                    started_at="2026-03-01T09:00:00+00:00", simulated=True)


def _backend_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of the server's backend process `pid` (0: none)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _executemany_events(conn: Any, session_id: int, events: list[EventRecord]) -> None:
    """Round 4's insert_events (one INSERT a row through executemany), for the
    before/after in one run."""
    import json

    from devicectl.chain import hashed_event_rows

    rows = [(session_id, e.t_us, e.wall, e.kind, e.text, e.zone_id,
             json.dumps(dict(e.data), default=str, separators=(",", ":")), int(e.safety))
            for e in events]
    conn.executemany(
        "INSERT INTO events (session_id, t_us, wall, kind, text, zone_id, data, safety, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", hashed_event_rows(conn, session_id, rows))


def writer_cpu_per_event(db: Path | str, n: int, *, old: bool = False) -> tuple[float, float]:
    """The writer's own work per event, as its thread does it (batches of 10, each
    committed with the chain's end read in its transaction): CPU µs of this thread
    (what holds the GIL: load-insensitive) and of the server's backend process."""
    from devicectl.records import insert_events

    insert = _executemany_events if old else insert_events
    sid = _new_session(db, f"BENCH-CPU-{os.getpid()}-{time.monotonic_ns()}")
    with Store(db) as store:
        conn = store.conn
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0]) if store.pg \
            else None
        batches = [[EventRecord(i + k, WALL, "SENT", f"event {i + k}", 1,
                                {"seq": i + k, "depth_um": 600}) for k in range(10)]
                   for i in range(0, n, 10)]
        server0, cpu0 = _backend_cpu_s(backend), time.thread_time()
        for batch in batches:
            conn.execute("BEGIN" if store.pg else "BEGIN IMMEDIATE")
            insert(conn, sid, batch)
            conn.execute("COMMIT")
        cpu, server = time.thread_time() - cpu0, _backend_cpu_s(backend) - server0
    return 1e6 * cpu / n, 1e6 * server / n


def events_per_second(db: Path | str, n: int) -> float:
    sid = _new_session(db, f"BENCH-{os.getpid()}-{time.monotonic_ns()}")
    writer = RecordWriter(db, sid)
    writer.start()
    t0 = time.perf_counter()
    for i in range(0, n, 10):
        writer.events([EventRecord(i + k, WALL, "SENT", f"event {i + k}", 1,
                                   {"seq": i + k, "depth_um": 600}, safety=(i + k) % 500 == 0)
                       for k in range(10)])
        if i % 1000 == 0:
            time.sleep(0)  # a session's loop hands the GIL over now and then
    writer.close("complete", "2026-03-01T09:30:00+00:00", timeout_s=600)
    elapsed = time.perf_counter() - t0
    assert writer.failure is None, writer.failure
    with Store(db) as store:
        assert len(store.events(sid)) == n
    return n / elapsed


# --- the host process, with records -------------------------------------------------


def host_main(port: str, db: str, switch_s: float | None, freeze: bool,
              ahead: bool = False) -> int:
    """Sessions one after another on the pen at `port`, each with its writer: the
    spec's H5 ends a session at its second over-depth, so each trial's ESTOP
    may end one; the next connects to the same pen (in FAULT), clears it, starts."""
    import gc
    import signal

    if switch_s is not None:
        sys.setswitchinterval(switch_s)
    target: Path | str | None = None
    if db != "none":
        target = db if db.startswith("postgresql://") else Path(db)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sessions = 0
    closing: list[RecordWriter] = []
    import random

    from devicectl.controller import Controller, StartFacts
    from devicectl.link import open_transport
    from devicectl.profile import load_profile
    from devicectl.profile_plan import make_plan
    from devicectl.session import Policy, Session
    from devicectl.zones import load_zone_map
    zone_map = load_zone_map()
    loaded = load_profile(latency.PROFILE)
    wire = open_transport(port)  # one port for all the sessions, as one workstation's pen

    built = itertools.count()
    recorded = False  # the trials' pen (one cartridge) recorded by an earlier host
    if target is not None:
        with Store(target) as store:
            recorded = bool(store.used_cartridge_ids())

    def build(cartridge: int | None = None) -> tuple[Any, RecordWriter | None]:
        """A session as latency.build_session makes it, on the shared port, with a writer.
        The trials' pen keeps its cartridge: each session takes it as its own (a resume's)."""
        writer = None
        n = next(built)
        if target is not None:
            writer = RecordWriter(target, _new_session(target, f"BENCH-{os.getpid()}-{n}"))
            writer.start()
        facts = StartFacts("BENCH", frozenset(), resumed_cartridge_id=cartridge)
        controller = Controller(lambda dev: make_plan(loaded, dev, zone_map), zone_map,
                                facts, nonce=random.getrandbits(32),
                                now_us=time.monotonic_ns() // 1000,
                                telemetry_hz=latency.TELEMETRY_HZ)
        session = Session(controller, wire=wire, writer=writer,
                          policy=Policy(auto_confirm=True, end_on_fault=False))
        if n or recorded:  # the one cartridge is recorded once (single use: a second
            # row is refused), by the first host of the run (rounds: one host a round)
            session.records.device = lambda: None  # type: ignore[method-assign]
        return session, writer

    # Between sessions (the default) the next session's record and writer are made,
    # and the last one's closed, while no session treats: as in a clinic, where
    # a treatment's setup never overlaps another's. `ahead`: made during the
    # previous session and closed during the next (round 4's way; the pen's
    # bytes do not pile up between sessions, but the setup runs beside trials).
    following: tuple[Any, RecordWriter | None] | None = build()
    if freeze:
        gc.collect()
        gc.freeze()
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}  # the collector's, per generation
    began = [0.0]

    def collector(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - began[0])

    gc.callbacks.append(collector)
    ends: dict[str, int] = {}
    while not stop.is_set():
        assert following is not None
        session, writer = following
        following = None
        done = threading.Event()
        session.start()
        threading.Thread(target=latency._drain, args=(session, done), daemon=True).start()
        threading.Thread(target=latency.technician, args=(session, done), daemon=True).start()
        while not stop.wait(0.005) and not session.wait(0):
            dev = session.controller.device
            if ahead and following is None and dev is not None:
                following = build(dev.cartridge_id)
        session.request_stop("bench over")
        session.wait(2.0)
        done.set()
        ctl = session.controller
        end = f"{ctl.state.name}: {ctl.fault_final or ctl.go_no_go}"[:90]
        ends[end] = ends.get(end, 0) + 1
        if writer is not None:
            closing.append(writer)
            if ahead:  # closed once the next session runs: the pen is read meanwhile
                threading.Thread(target=writer.close, args=("fault", None, 30)).start()
            else:
                writer.close("fault", None, 30)
        if following is None:
            dev = session.controller.device
            following = build(dev.cartridge_id if dev is not None else None)
        sessions += 1
    wire.close()
    if following is not None and following[1] is not None:
        closing.append(following[1])
    for w in closing:
        w.close("fault", None, 30)
    failures = [w.failure for w in closing if w.failure is not None]
    gc_text = " ".join(f"gen{g}: {len(p)} x, max {1e3 * max(p, default=0):.2f} ms"
                       for g, p in pauses.items())
    print(f"HOST records={str(db).split('@')[-1]} sessions={sessions} ends={ends} "
          f"records_failures={failures[:1]!r} gc=[{gc_text}]", flush=True)
    return 0


class _DroppingOs:
    """latency.py's `os`, but a write the pty cannot take (the host fell behind by a
    pty buffer, ~130 ms at 1000 Hz on a loaded machine) is dropped, as an overflowing
    serial line drops bytes, instead of ending the run."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes) -> int:
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0


def estop_with(db: str, n: int, ahead: bool = False) -> tuple[list[int], str]:
    """n trials with a host recording into `db` (a fresh host process)."""

    def spawn(*args: str) -> subprocess.Popen[str]:
        more = ["--build-ahead"] if ahead else []
        return subprocess.Popen([sys.executable, str(HERE), *args, "--db", db, *more],
                                stdout=subprocess.PIPE, text=True)

    latency._spawn = spawn  # type: ignore[assignment]  # the trials start this host
    latency.os = _DroppingOs()  # type: ignore[assignment]
    return latency.estop_trials(n, live=False, switch_s=0.0005, freeze=True)


def _ratio_interval(a: list[int], b: list[int], q: float, n: int = 1000
                    ) -> tuple[float, float]:
    """The 5th and 95th percentiles of the q-quantile ratio a/b over `n` bootstrap
    resamples: how far this run's ratio could move by chance alone."""
    import random

    rng = random.Random(7)
    ratios = sorted(latency._pct(rng.choices(a, k=len(a)), q)
                    / latency._pct(rng.choices(b, k=len(b)), q) for _ in range(n))
    return ratios[n // 20], ratios[n - 1 - n // 20]


def _server_pids(data_dir: Path) -> list[int]:
    """The server's postmaster and the processes it has forked so far."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if int(proc.name) == postmaster or ppid == postmaster:
            pids.append(int(proc.name))
    return pids


def _renice_server(data_dir: Path, nice: int) -> None:
    """The server's processes at `nice` (backends it forks later inherit it)."""
    for pid in _server_pids(data_dir):
        os.setpriority(os.PRIO_PROCESS, pid, nice)


def _pin(data_dir: Path, server_cpus: set[int]) -> None:
    """The server's processes on `server_cpus` (backends it forks later inherit it),
    this process (and so the pen and the hosts it starts) on the other CPUs: on one
    machine, the nearest to a clinic's server on a machine of its own."""
    for pid in _server_pids(data_dir):
        os.sched_setaffinity(pid, server_cpus)
    rest = set(range(os.cpu_count() or 1)) - server_cpus
    if rest:
        os.sched_setaffinity(0, rest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="role")
    h = sub.add_parser("host")
    h.add_argument("port")
    h.add_argument("--switch-interval", type=float)
    h.add_argument("--gc-freeze", action="store_true")
    h.add_argument("--db", required=True)
    for q in (h, ap):
        q.add_argument("--build-ahead", action="store_true",
                       help="make the next session's record during a session, close the last "
                       "one's during the next (round 4's way; default: between sessions)")
    ap.add_argument("--events", type=int, default=EVENTS)
    ap.add_argument("--trials", type=int, default=TRIALS)
    ap.add_argument("--round", type=int, default=ROUND,
                    help="trials a round: the three hosts take turns, round by round")
    ap.add_argument("--pg", help="a PostgreSQL URL (default: a throwaway server)")
    ap.add_argument("--server-nice", type=int, default=None, metavar="N",
                    help="run the throwaway server's processes at this niceness (19: "
                    "behind the pen and the host, as a server on another machine would "
                    "not compete with them for these cores)")
    ap.add_argument("--server-cpus", default=None, metavar="LIST",
                    help="pin the throwaway server to these CPUs (e.g. 0) and the pen and "
                    "the hosts to the others, in every configuration alike")
    args = ap.parse_args()
    if args.role == "host":
        return host_main(args.port, args.db, args.switch_interval, args.gc_freeze,
                         args.build_ahead)

    server = None
    url = args.pg
    if url is None:
        from pg_support import start_server

        server, why = start_server()
        if server is None:
            print(f"no PostgreSQL server: {why}")
            return 1
        url = server.new_database()
        if args.server_nice is not None:
            _renice_server(server.data_dir, args.server_nice)
        if args.server_cpus is not None:
            _pin(server.data_dir, {int(c) for c in args.server_cpus.split(",")})
    tmp = Path(tempfile.mkdtemp(prefix="devicectl-bench-"))
    os.environ["XDG_DATA_HOME"] = str(tmp)  # a server's unsaved file, if any, stays here
    try:
        sqlite_db = tmp / "sessions.db"
        print(f"records benchmark (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.2f})")
        cpu_events = min(args.events, 10_000)
        configs = (("SQLite", sqlite_db, False), ("PostgreSQL (COPY)", url, False),
                   ("PostgreSQL, executemany (round 4)", url, True))
        cpus: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in configs}
        for _ in range(CPU_REPEATS):  # taking turns: a burst of load falls on all alike
            for name, db, old in configs:
                cpus[name].append(writer_cpu_per_event(db, cpu_events, old=old))
        for name, got in cpus.items():
            cpu = statistics.median(c for c, _ in got)
            server_cpu = statistics.median(s for _, s in got)
            print(f"  writer CPU per event, {name:34}: {cpu:5.1f} µs in the writer's thread"
                  f" (+ {server_cpu:5.1f} µs in the server's process)  (median of "
                  f"{CPU_REPEATS} x {cpu_events} events: "
                  f"{', '.join(f'{c:.1f}' for c, _ in got)})", flush=True)
        for name, db in (("SQLite", sqlite_db), ("PostgreSQL", url)):
            rate = events_per_second(db, args.events)
            print(f"  record events/s, {name:10}: {rate:9.0f}  ({args.events} events, "
                  "batches of 10, commit every 100 ms)", flush=True)
        lat = estop_rounds(sqlite_db, url, args.trials, args.round, args.build_ahead)
        print(f"  sessions' records made and closed "
              f"{'beside the trials (--build-ahead)' if args.build_ahead else 'between sessions'}")
        p99s: dict[str, float] = {}
        for name, got in lat.items():
            p50, p99 = latency._pct(got, 0.5), latency._pct(got, 0.99)
            p99s[name] = p99
            p95 = latency._pct(got, 0.95)
            print(f"  ESTOP over a pty, {name:10}: p50 {p50:7.1f} µs  p95 {p95:7.1f} µs  "
                  f"p99 {p99:7.1f} µs  max {max(got) / 1000:7.1f} µs  "
                  f"({len(got)} trials)")
        complete = all(len(got) >= args.trials for got in lat.values())
        ratio = p99s["PostgreSQL"] / p99s["SQLite"]
        verdict = ("met" if ratio <= GOAL_RATIO else "NOT met") if complete else \
            "not measured: the trials did not finish"
        p50_ratio = latency._pct(lat["PostgreSQL"], 0.5) / latency._pct(lat["SQLite"], 0.5)
        p95_ratio = latency._pct(lat["PostgreSQL"], 0.95) / latency._pct(lat["SQLite"], 0.95)
        low, high = _ratio_interval(lat["PostgreSQL"], lat["SQLite"], 0.99)
        print(f"  p99 PostgreSQL / SQLite: {ratio:.2f} (≤ {GOAL_RATIO}: {verdict}); "
              f"90 % bootstrap interval {low:.2f}-{high:.2f}; p95 ratio {p95_ratio:.2f}, "
              f"p50 ratio {p50_ratio:.2f}; load now {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.stop("immediate")
            shutil.rmtree(server.data_dir.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
