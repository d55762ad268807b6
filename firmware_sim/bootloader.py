"""The simulated pen's bootloader: the chunk store, the image checks, A/B slots, rollback.

Sans-I/O, driven by firmware.py, which owns the pen's state (UPDATING) and its
transition table; this module only answers each FW_* command with a NACK code
and, on a good FW_COMMIT, installs the image in the other slot and starts it.

An image's payload is the pen's personality as YAML: its version, changed
PenParams (`pen:`), the scenario bugs it fixes (`fixes:`), and its start-up
self-test (`self_test: pass | fail`). The factory firmware (slot A, no image)
is the pen as its PenParams describe it. A new image that fails its first
start's self-test is not kept: the previous slot starts again (FW_ROLLBACK).
`Slots` is plain data, so a served pen can keep it in a file between runs.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from devicectl.errors import DevicectlError, ProfileError
from devicectl.firmware import (
    CHUNK_BYTES,
    MAX_IMAGE_BYTES,
    SIM_HW_ID,
    TEST_PUBLIC_KEY,
    Image,
    read_image,
)
from devicectl.protocol import FwBegin, FwChunk, Nack, PenEvent
from firmware_sim.physics import PenParams, pen_with

IMAGES_DIR: Final = Path(__file__).parent / "images"


@dataclass(frozen=True, slots=True)
class Personality:
    """What an image makes of the pen."""

    fw_version: int
    pen: dict[str, Any] = field(default_factory=dict)
    fixes: frozenset[str] = frozenset()
    self_test: str = "pass"

    def apply(self, base: PenParams) -> PenParams:
        return replace(pen_with(base, self.pen, source="firmware image"),
                       fw_version=self.fw_version)


def personality_of(image: Image) -> Personality:
    """The personality in an image's payload; ProfileError when it is not one (self-test)."""
    try:
        doc = yaml.safe_load(image.payload.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        raise ProfileError("the image's payload is not a YAML personality") from None
    if not isinstance(doc, dict):
        raise ProfileError("the image's payload is not a YAML mapping")
    pen = doc.get("pen") or {}
    fixes = doc.get("fixes") or []
    if not isinstance(pen, dict) or not isinstance(fixes, list):
        raise ProfileError("the image's `pen` must be a mapping and `fixes` a list")
    pen_with(PenParams(), pen, source="firmware image")  # names a bad field
    return Personality(image.fw_version, dict(pen), frozenset(str(f) for f in fixes),
                       str(doc.get("self_test", "pass")))


@dataclass(slots=True)
class Slots:
    """A/B slots: the image in each (None: the factory firmware), and which one runs."""

    images: dict[str, bytes | None] = field(default_factory=lambda: {"A": None, "B": None})
    active: str = "A"

    @property
    def inactive(self) -> str:
        return "B" if self.active == "A" else "A"

    def to_json(self) -> str:
        return json.dumps({"active": self.active,
                           "images": {k: v.hex() if v else None for k, v in self.images.items()}})

    @classmethod
    def from_json(cls, text: str, source: str) -> Slots:
        try:
            doc = json.loads(text)
            images = {k: bytes.fromhex(v) if v else None for k, v in doc["images"].items()}
            active = str(doc["active"])
            if set(images) != {"A", "B"} or active not in images:
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DevicectlError(
                f"{source}: not a simulated pen's state file; delete it to start from the "
                "factory firmware"
            ) from None
        return cls(images, active)


def load_slots(path: Path) -> Slots:
    """The slots kept in `path`, or factory slots when the file does not exist yet."""
    try:
        return Slots.from_json(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        return Slots()
    except OSError as exc:
        raise DevicectlError(f"{path}: cannot read the pen's state ({exc.strerror})") from None


class Bootloader:
    """The chunk store and the checks of FW_COMMIT; the slots and what runs in them."""

    def __init__(self, base: PenParams, slots: Slots | None = None,
                 public_key: bytes = TEST_PUBLIC_KEY, hw_id: int = SIM_HW_ID) -> None:
        self.base = base
        self.slots = slots if slots is not None else Slots()
        self.public_key = public_key
        self.hw_id = hw_id
        self.personality = self._running()
        self._begin: FwBegin | None = None
        self._store = bytearray()
        self._received: set[int] = set()
        #: Told after the next HELLO: FW_UPDATED or FW_ROLLBACK.
        self.pending_event: PenEvent | None = None
        #: Why the last FW_COMMIT was refused (for logs and tests).
        self.refusal: str | None = None

    def _running(self) -> Personality:
        data = self.slots.images[self.slots.active]
        if data is None:
            return Personality(self.base.fw_version)
        return personality_of(read_image(data))

    @property
    def pen(self) -> PenParams:
        """The pen as the running firmware makes it."""
        return self.personality.apply(self.base)

    # --- FW_* commands: each returns the pen's answer -------------------------

    def begin(self, msg: FwBegin) -> Nack:
        if not 0 < msg.image_size <= MAX_IMAGE_BYTES:
            return Nack.BAD_ARG
        self._begin = msg
        n_chunks = -(-msg.image_size // CHUNK_BYTES)
        self._store = bytearray(n_chunks * CHUNK_BYTES)
        self._received = set()
        return Nack.OK

    def chunk(self, msg: FwChunk) -> Nack:
        begin = self._begin
        if begin is None or msg.offset % CHUNK_BYTES or msg.offset >= begin.image_size:
            return Nack.BAD_ARG
        self._store[msg.offset : msg.offset + CHUNK_BYTES] = msg.data  # again: same effect
        self._received.add(msg.offset // CHUNK_BYTES)
        return Nack.OK

    def commit(self) -> Nack:
        """All the spec's checks; OK means the new image is installed, to start now."""
        self.refusal = self._check()
        if self.refusal is not None:
            return Nack.BAD_IMAGE
        assert self._begin is not None
        data = bytes(self._store[: self._begin.image_size])
        previous = self.slots.active
        self.slots.images[self.slots.inactive] = data
        self.slots.active = self.slots.inactive
        self.abandon()
        self._first_start(previous)
        return Nack.OK

    def abandon(self) -> None:
        """FW_ABORT, a fault in UPDATING, or a commit done: the store is emptied."""
        self._begin = None
        self._store = bytearray()
        self._received = set()

    def _check(self) -> str | None:
        begin = self._begin
        if begin is None:
            return "no update begun"
        if len(self._received) != len(self._store) // CHUNK_BYTES:
            return "chunks missing"
        data = bytes(self._store[: begin.image_size])
        if zlib.crc32(data) != begin.image_crc32:
            return "CRC-32 of the image does not match FW_BEGIN"
        try:
            image = read_image(data)
        except DevicectlError:
            return "not a valid image format"
        if image.hw_id != self.hw_id:
            return f"hardware id {image.hw_id}, this pen is {self.hw_id}"
        if image.fw_version != begin.fw_version:
            return "the image's version is not the one FW_BEGIN announced"
        if image.fw_version < self.personality.fw_version:
            return "downgrade"
        if not image.signature_valid(self.public_key):
            return "signature"
        return None

    def _first_start(self, previous: str) -> None:
        """Start the new slot; a failed self-test starts `previous` again."""
        try:
            personality = self._running()
            ok = personality.self_test == "pass"
        except DevicectlError:
            ok = False
        if ok:
            self.personality = personality
            self.pending_event = PenEvent.FW_UPDATED
            return
        self.slots.images[self.slots.active] = None  # not kept
        self.slots.active = previous
        self.personality = self._running()
        self.pending_event = PenEvent.FW_ROLLBACK
