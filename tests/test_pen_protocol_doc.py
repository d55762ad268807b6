"""docs/pen-protocol.md is the shared spec, byte for byte: the contract this repo implements."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COPY = REPO / "docs" / "pen-protocol.md"
#: The normative spec lives beside the repository (../shared/spec/), where it exists;
#: the compiled build's copy of the tests (build/compiled) looks beside the repository too.
SPEC = Path("shared") / "spec" / "pen-protocol.md"
SHARED = next((d / SPEC for d in REPO.parents if (d / SPEC).is_file()), REPO.parent / SPEC)


def test_the_docs_copy_of_the_spec_is_byte_identical_to_the_shared_spec() -> None:
    if not SHARED.is_file():
        pytest.skip(f"no shared spec at {SHARED} to compare with (a checkout on its own)")
    assert COPY.read_bytes() == SHARED.read_bytes(), (
        f"{COPY} differs from {SHARED}; copy the shared spec over it"
    )


def test_the_docs_copy_is_revision_1_1() -> None:
    assert "(revision 1.1)" in COPY.read_text(encoding="utf-8").splitlines()[0]
