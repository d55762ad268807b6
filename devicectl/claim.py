"""The single-use cartridge, claimed at the GO: after the go/no-go and before the
first START, the session's record takes the pen's cartridge in one write that
the records refuse when any other session holds it (on the clinic's PostgreSQL a
primary key over the claims, so of two rooms that fit one cartridge at the same
moment exactly one gets the GO; in an SQLite file the writers queue on the file).
A session continuing one that lost its link is the same treatment: it may record
that session's cartridge again (`CONTINUED_CHAIN`).

The write runs on a thread of its own: the inner loop only asks (`request`) and
looks (`granted`, `refused`); it never waits on the records.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path

from devicectl.errors import StoreError

#: The session `?` and those it continues (a lost link: the records' own link,
#: `sessions.continues`, set when the continuation is created and checked by the
#: database, devicectl/continuation.py; never the CONTINUES event, which whoever
#: may append events can write), in the SQL both backends speak. A cartridge
#: belongs to the session that first recorded it and to the sessions continuing
#: that one: the same treatment. Any other session recording it is refused.
CONTINUED_CHAIN = """WITH RECURSIVE chain(id, n) AS (
    SELECT CAST(? AS BIGINT), 0
    UNION ALL
    SELECT s.continues, c.n + 1
    FROM sessions s JOIN chain c ON s.id = c.id
    WHERE s.continues IS NOT NULL AND c.n < 1000)
SELECT id FROM chain"""

#: A claim the records have not answered in this long is a NO-GO (s).
CLAIM_TIMEOUT_S = 15.0
#: Why the pen may not stamp while the claim is not granted (a START or RESUME refused).
CLAIM_PENDING = "the cartridge is not claimed in the records yet"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CartridgeClaim:
    """One session's claim on its pen's cartridge. Thread-safe: `request` once
    (later calls are ignored), then `granted` / `refused` (the NO-GO's sentence)."""

    def __init__(self, db: Path | str, session_id: int) -> None:
        self.db = db
        self.session_id = session_id
        self.cartridge_id: int | None = None
        self.refused: str | None = None
        self._granted = False
        self._requested = False
        self._done = threading.Event()

    @property
    def requested(self) -> bool:
        return self._requested

    @property
    def granted(self) -> bool:
        return self._granted

    @property
    def decided(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._done.wait(timeout_s)

    def request(self, *, serial: int, fw_version: int, cartridge_id: int,
                position_mode: str) -> None:
        """Starts the claim (and records the pen with it); returns at once."""
        if self._requested:
            return
        self._requested = True
        self.cartridge_id = cartridge_id
        threading.Thread(
            target=self._claim, args=(serial, fw_version, cartridge_id, position_mode),
            name=f"cartridge-claim-{self.session_id}", daemon=True).start()

    def _claim(self, serial: int, fw_version: int, cartridge_id: int,
               position_mode: str) -> None:
        from devicectl.store import CartridgeUsedError, Store

        try:
            with Store(self.db, create=False) as store:
                try:
                    store.set_device(self.session_id, serial=serial, fw_version=fw_version,
                                     cartridge_id=cartridge_id, position_mode=position_mode)
                except CartridgeUsedError as exc:  # kept apart from the treatments
                    with contextlib.suppress(StoreError):
                        store.record_refusal(reason=str(exc), wall=_now(),
                                             cartridge_id=cartridge_id,
                                             session_id=self.session_id)
                    raise
        except StoreError as exc:
            name = str(exc)
            if f"cartridge {cartridge_id}" not in name:
                name = (f"cartridge {cartridge_id} could not be claimed in the records "
                        f"({name}); no treatment without a record")
            self.refused = name
        except Exception as exc:
            self.refused = (f"cartridge {cartridge_id} could not be claimed in the records "
                            f"({exc!r}); no treatment without a record")
        else:
            self._granted = True
        finally:
            self._done.set()
