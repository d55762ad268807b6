"""The fault campaign in its reduced form: every fault kind, every phase of a few.

Each cell is a whole virtual session through the real host (firmware_sim/
campaign_cell.py). A cell fails when the pen was stamping when the host had
gone, stamped past the spec's bound after its first bad frame, lost records,
or crashed a view. `make faults` runs the whole matrix into docs/fault-matrix.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.campaign import BEYOND_SOFTWARE, DOC, failures, kinds, matrix, run_matrix
from firmware_sim.campaign_cell import BOUND_US, PHASES, RECORDS_FAIL, CellResult

CELLS = matrix(reduced=True)
#: Cells with a failing records store run in real time (the writer's thread and its
#: 100 ms bound are wall-clock); they run with the other real-time tests.
REAL_TIME = [c for c in CELLS if c[0] == RECORDS_FAIL]
VIRTUAL = [c for c in CELLS if c[0] != RECORDS_FAIL]
#: one worker runs the module (pytest-xdist --dist loadgroup): the fixture once
pytestmark = pytest.mark.xdist_group("fault-matrix")


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], CellResult]:
    return dict(zip(VIRTUAL, run_matrix(VIRTUAL, jobs=2), strict=True))


def _check(cell: tuple[str, str], result: CellResult) -> None:
    if cell[0] in BEYOND_SOFTWARE:  # the host must do all a host can (campaign.py says why)
        assert result.estops[:1] == ("MISMATCH",), result.estops[:3]  # at once, H1
        assert result.outcome == "fault" and result.exit_code == 3
        assert result.recorded == result.sent and result.crash is None
        assert result.stopped_after_host, "silent host: the pen's watchdog must stop it"
        return
    assert not failures([result])


@pytest.mark.parametrize("cell", VIRTUAL, ids=[f"{k}@{ph}" for k, ph in VIRTUAL])
def test_the_cell_is_safe_with_nothing_lost(
    cell: tuple[str, str], results: dict[tuple[str, str], CellResult]
) -> None:
    _check(cell, results[cell])


@pytest.mark.realtime
@pytest.mark.parametrize("cell", REAL_TIME, ids=[f"{k}@{ph}" for k, ph in REAL_TIME])
def test_the_real_time_cell_is_safe_with_nothing_lost(cell: tuple[str, str]) -> None:
    (result,) = run_matrix([cell], jobs=1)
    _check(cell, result)


def test_the_matrix_has_at_least_14_kinds_and_every_phase() -> None:
    full = matrix()
    assert len({k for k, _ in full}) >= 14
    assert {ph for _, ph in full} == set(PHASES)
    assert {k for k, _ in CELLS} == set(kinds())  # the reduced form leaves no kind out


def test_the_checked_in_table_covers_the_whole_matrix() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = {tuple(c.strip() for c in line.split("|")[1:3]) for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| fault")}
    assert set(matrix()) <= rows, "run `make faults` and check in docs/fault-matrix.md"


def _result(**kw: object) -> CellResult:
    base = dict(
        kind="k", phase="stamping", pen_stopped=True, outcome="fault", exit_code=3, sent=5,
        recorded=5, first_bad_us=1000, stamped_after_us=0, bound_us=BOUND_US, estops=("1",),
        expect="ESTOP 1", crash=None,
    )
    return CellResult(**(base | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"pen_stopped": False}, "stamping when the host had gone"),
        ({"stamped_after_us": BOUND_US + 1000}, "after its first bad frame"),
        ({"recorded": 4}, "1 of 5 commands sent are not in the records"),
        ({"crash": "the plain view: MarkupError"}, "crash"),
    ],
)
def test_each_way_a_cell_can_fail_is_named(kw: dict[str, object], words: str) -> None:
    assert failures([_result()]) == []
    (found,) = failures([_result(**kw)])
    assert words in found


def test_stamping_within_the_bound_or_where_no_stop_is_owed_is_safe() -> None:
    assert _result(stamped_after_us=BOUND_US).safe
    assert _result(stamped_after_us=10**9, bound_us=None, first_bad_us=None).safe


def test_the_table_is_where_the_docs_are() -> None:
    assert Path(__file__).resolve().parent.parent / "docs" / "fault-matrix.md" == DOC


def test_an_unknown_fault_kind_is_one_sentence_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from firmware_sim.campaign import main

    assert main(["--kind", "gremlins", "--out", str(tmp_path / "m.md")]) == 2
    err = capsys.readouterr().err
    assert "unknown fault kind(s) gremlins" in err and "ignores-stop" in err
    assert not (tmp_path / "m.md").exists()
