"""Patient references: one spelling per patient, and never a name.

A reference is a pseudonymous code the clinic keeps the key to (P-0042).
It is trimmed and upper-cased, so "p2 " and "P2" are the same patient for
the interval rule, and refused when it looks like it could identify someone.
"""

from __future__ import annotations

import re
from typing import Final

from devicectl.errors import RefusedError

#: The longest reference accepted: a code, not a sentence.
PATIENT_REF_MAX_CHARS: Final = 32

_ALLOWED: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DATE: Final = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_EXAMPLE: Final = "a code such as P-0042"
_CAPITALISED: Final = re.compile(r"[A-Z][a-z]{2,}")


def patient_ref(text: str) -> str:
    """The reference in its one spelling (trimmed, upper case), or RefusedError saying why
    it cannot be one: empty, too long, a name, an e-mail address, a date, odd characters.
    """
    ref = text.strip()
    if not ref:
        raise RefusedError(f"the patient reference is empty; give {_EXAMPLE}")
    if "@" in ref:
        raise RefusedError(
            f"the patient reference {ref!r} looks like an e-mail address; records hold "
            f"pseudonymous references only, {_EXAMPLE}"
        )
    if any(c.isspace() for c in ref):
        raise RefusedError(
            f"the patient reference {ref!r} has spaces and looks like a name; records hold "
            f"pseudonymous references only, {_EXAMPLE}"
        )
    if len(ref) > PATIENT_REF_MAX_CHARS:
        raise RefusedError(
            f"the patient reference is {len(ref)} characters long; at most "
            f"{PATIENT_REF_MAX_CHARS}, {_EXAMPLE}"
        )
    if _DATE.search(ref):
        raise RefusedError(
            f"the patient reference {ref!r} contains a date (of birth?); records hold "
            f"pseudonymous references only, {_EXAMPLE}"
        )
    if not _ALLOWED.fullmatch(ref):
        raise RefusedError(
            f"the patient reference {ref!r} may hold only letters, digits, '-', '_' and '.', "
            f"starting with a letter or digit: {_EXAMPLE}"
        )
    if _looks_like_a_name(ref):
        raise RefusedError(
            f"the patient reference {ref!r} could be a name; records hold pseudonymous "
            f"references only, {_EXAMPLE}"
        )
    return ref.upper()


def _looks_like_a_name(ref: str) -> bool:
    """Without a digit: a capitalised word (Maria, Jean-Pierre, Smith.J) or one word of
    small letters (smith). Codes such as P-CLI or AB-x pass."""
    if any(c.isdigit() for c in ref):
        return False
    parts = re.split(r"[._-]", ref)
    if any(_CAPITALISED.fullmatch(part) for part in parts):
        return True
    return len(parts) == 1 and ref.islower() and len(ref) >= 3
