"""`devicectl run` on the clinic's PostgreSQL, as the rooms run it: real host
processes (the CLI, the simulated pen in each), one real server
(tests/pg_support.py). Whatever the timing between the rooms, the clinic's rules
give exactly one GO: a cartridge is claimed at the GO under the server's unique
constraint, a patient's sessions are created under a lock on the patient."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from clinic_support import GATE

from devicectl.liveness import is_running
from devicectl.store import Store
from devicectl.store_pg import WRITER_ROLE

#: `devicectl` as the rooms run it: its own process.
DEVICECTL = (sys.executable, "-c", "import sys; from devicectl.cli import main; "
             "sys.exit(main(sys.argv[1:]))")
DATA = Path(__file__).parent / "data"
SHORT = DATA / "short-frontal.yaml"


def _rooms(url: str, tmp_path: Path, rooms: list[tuple[str, str, int]]) -> list[tuple[int, str]]:
    """Each (room, patient, seed) runs `devicectl run --sim` in its own process, all
    started at once; their exit codes and outputs."""
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), COLUMNS="200")
    env.pop("DEVICECTL_DB", None)
    procs = [subprocess.Popen(
        [*DEVICECTL, "run", "--profile", str(SHORT), "--patient", patient,
         "--sim", "--yes", "--speed", "0", "--seed", str(seed), "--room", room, "--db", url,
         *GATE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for room, patient, seed in rooms]
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=120)
        out.append((p.returncode, text))
    return out


def room_login(url: str) -> str:
    """The URL as a room's login sees it: a role in devicectl_writer, no more."""
    with psycopg.connect(url, autocommit=True) as conn, \
            contextlib.suppress(psycopg.errors.DuplicateObject):
        conn.execute(f"CREATE ROLE devicectl_room LOGIN IN ROLE {WRITER_ROLE}".encode())
    return url.replace("postgres@", "devicectl_room@")


def test_two_rooms_fitting_one_cartridge_get_exactly_one_go(pg_url: str, tmp_path: Path) -> None:
    Store(pg_url).close()  # the schema first: the rooms race for the rows, not the tables
    rooms_url = room_login(pg_url)  # the rooms as a clinic has them: no UPDATE on the log
    results = _rooms(rooms_url, tmp_path, [("room-1", "P-1", 5), ("room-2", "P-2", 5)])
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    won = next(text for code, text in results if code == 0)
    lost = next(text for code, text in results if code == 1)
    cartridge = re.search(r"cartridge (\d+) \(", won)
    assert cartridge is not None, won
    assert "GO: pen, cartridge" in won and "NO-GO" not in won
    # Lost at the claim when both reached the GO together; when the other room had
    # finished first (virtual sessions take a second), the cartridge is simply used.
    by_claim = "single use" in lost
    assert f"NO-GO: cartridge {cartridge[1]}" in lost, lost
    assert by_claim or "was used in an earlier session" in lost, lost
    with Store(pg_url) as store:
        sessions = {s.room: s for s in store.sessions()}
        assert sorted(s.outcome or "" for s in sessions.values()) == ["complete", "refused"]
        winner = next(s for s in sessions.values() if s.outcome == "complete")
        loser = next(s for s in sessions.values() if s.outcome == "refused")
        assert winner.cartridge_id == int(cartridge[1])
        # The refused attempt is no clinical session: no cartridge, no strokes.
        assert loser.cartridge_id is None and all(z.strokes == 0 for z in loser.zones)
        assert any(e.kind == "GO_NO_GO" and f"cartridge {cartridge[1]}" in e.text
                   for e in store.events(loser.id))
        assert sorted(sessions) == ["room-1", "room-2"] and winner.simulated is True
        if by_claim:
            [refusal] = store.refusals()  # the refused attempt, apart from the treatments
            assert (refusal["session_id"], refusal["cartridge_id"], refusal["room"]) == (
                loser.id, int(cartridge[1]), loser.room)
            assert f"cartridge {cartridge[1]}" in refusal["reason"]
    assert not is_running(pg_url, winner.id)  # its process ended: the server's lock went
    assert all("devicectl_room@" not in text for _, text in results)  # no login shown


def test_two_rooms_starting_one_patient_get_exactly_one_go(pg_url: str, tmp_path: Path) -> None:
    Store(pg_url).close()
    results = _rooms(pg_url, tmp_path, [("room-1", "P-7", 21), ("room-2", "p-7 ", 22)])
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    lost = next(text for code, text in results if code == 1)
    # Created together: the second waits on the patient's lock and finds the first
    # open; created after it ended: the interval's NO-GO. Either way, one treatment.
    assert re.search(r"patient p-7 has session \d+ open in room room-\d", lost.lower()) or \
        ("NO-GO" in lost and "interval" in lost.lower()), lost
    with Store(pg_url) as store:
        treated = [s for s in store.sessions() if any(z.strokes for z in s.zones)]
        assert len(treated) == 1 and treated[0].outcome == "complete"
        if "has session" in lost:  # refused before any session of its own: kept apart
            [refusal] = store.refusals()
            assert refusal["patient_ref"].strip().upper() == "P-7"
            assert refusal["session_id"] is None and "open in room" in refusal["reason"]


@pytest.mark.parametrize("bad", ["postgresql://clinic:s3cret@127.0.0.1:1/records"])
def test_a_run_on_an_unreachable_server_is_refused_in_one_sentence(
    bad: str, tmp_path: Path
) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path))
    done = subprocess.run(
        [*DEVICECTL, "run", "--profile", str(SHORT), "--patient", "P-1",
         "--sim", "--yes", "--db", bad, *GATE], capture_output=True, text=True, env=env,
        timeout=60, check=False)
    assert done.returncode == 1
    assert "cannot reach the records server postgresql://127.0.0.1:1/records" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr
