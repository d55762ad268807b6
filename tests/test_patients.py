"""Patient references: one spelling per patient, and never something that names them."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from clinic_support import GATE
from hypothesis import given, settings
from hypothesis import strategies as st

from devicectl.cli import main
from devicectl.errors import RefusedError
from devicectl.patients import patient_ref

FAST = settings(max_examples=300, deadline=None)
CODES = st.from_regex(r"[A-Za-z0-9]{0,4}[0-9][A-Za-z0-9_-]{0,8}", fullmatch=True)


@FAST
@given(code=CODES, left=st.sampled_from(["", " ", "\t"]), right=st.sampled_from(["", " "]))
def test_a_code_has_one_spelling_whatever_its_case_and_padding(
    code: str, left: str, right: str
) -> None:
    ref = patient_ref(left + code + right)
    assert ref == code.upper()
    assert patient_ref(ref.lower()) == ref  # idempotent, case-insensitive


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("John Smith", "looks like a name"),
        ("Maria", "could be a name"),
        ("Jean-Pierre", "could be a name"),
        ("smith", "could be a name"),
        ("jane.doe@example.org", "e-mail"),
        ("P-1980-05-12", "date"),
        ("", "empty"),
        ("   ", "empty"),
        ("P-1;drop", "only letters, digits"),
        ("[/]", "only letters, digits"),
        ("P" + "1" * 40, "at most 32"),
    ],
)
def test_what_could_identify_a_patient_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(RefusedError, match=why):
        patient_ref(text)


@pytest.mark.parametrize("code", ["P-CLI", "p-ro", "AB-x", "A", "P-0042", "x7"])
def test_codes_without_a_name_in_them_are_accepted(code: str) -> None:
    assert patient_ref(code) == code.upper()


def test_the_cli_refuses_a_name_before_any_record_is_made(
    records: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = Path(__file__).parent / "data" / "short-frontal.yaml"
    db = records
    code = main(["run", "--profile", str(profile), "--patient", "Jane Doe", "--sim", "--yes",
                 "--speed", "0", "--db", str(db), *GATE])
    assert code == 1
    err = capsys.readouterr().err
    assert "looks like a name" in err and "Traceback" not in err
    if isinstance(db, Path):
        assert not db.exists()
    else:  # the clinic's server: reached by no one yet (its database is empty)
        with psycopg.connect(db) as conn:
            assert conn.execute(b"SELECT to_regclass('sessions')").fetchone() == (None,)
