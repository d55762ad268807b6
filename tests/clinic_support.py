"""What every scripted `devicectl run` in the tests passes for the clinic's gate:
an operator, the contraindication checklist answered all "no", consent, and the
adjunct instructions acknowledged at the end.
"""

from __future__ import annotations

from pathlib import Path

ALL_NO = Path(__file__).parent / "data" / "checklist-no.yaml"
#: The arguments, for argv lists: `main(["run", ..., *GATE])`.
GATE = ("--operator", "OP-TEST", "--checklist", str(ALL_NO), "--consent", "--ack-adjuncts")
