"""Firmware images (spec 1.1, "Firmware update"): read, check, and sign with the test key.

An image is `b"PENF"`, `<HHHI` format (=1), hw_id, fw_version, payload_size,
the payload, then a 64-byte Ed25519 signature over everything before it, by the
maker's key. `read_image` parses one and names what is wrong; `check_image`
adds the signature against the public keys the host knows. Signing exists only
for the simulator's test-only key: a real maker's key never comes near here.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from devicectl.errors import DevicectlError

MAGIC: Final = b"PENF"
IMAGE_FORMAT: Final = 1
HEADER: Final = struct.Struct("<4sHHHI")
SIGNATURE_BYTES: Final = 64
CHUNK_BYTES: Final = 40
MAX_IMAGE_BYTES: Final = 1 << 20
#: The simulated pen's hardware id.
SIM_HW_ID: Final = 1
#: The simulator's test-only signing key: its seed, and its public key (spec 1.1).
TEST_KEY_SEED: Final = hashlib.sha256(b"devicectl-sim-firmware-signing-key (test only)").digest()
TEST_PUBLIC_KEY: Final = bytes.fromhex(
    "304c16f6c00f9ed7fcfaba3d177119989649188635a6dc1794a8e9b150645995"
)
#: The name the test key goes by in KNOWN_PUBLIC_KEYS (images it signs are for
#: simulated pens: `firmware update` sends them to a port only with --test-key).
TEST_KEY_NAME: Final = "simulator test key"
#: The makers' public keys the host knows, by name. Only the simulator's here:
#: a real pen's maker would add its own.
KNOWN_PUBLIC_KEYS: Final = {TEST_KEY_NAME: TEST_PUBLIC_KEY}


class ImageError(DevicectlError):
    """A firmware image is malformed, or its signature does not hold."""


@dataclass(frozen=True, slots=True)
class Image:
    data: bytes  # the whole image
    image_format: int
    hw_id: int
    fw_version: int
    payload: bytes
    signature: bytes

    @property
    def signed_part(self) -> bytes:
        return self.data[:-SIGNATURE_BYTES]

    @property
    def crc32(self) -> int:
        return zlib.crc32(self.data)

    @property
    def version_text(self) -> str:
        return version_text(self.fw_version)

    def signature_valid(self, public_key: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(self.signature, self.signed_part)
        except (InvalidSignature, ValueError):
            return False
        return True

    def signed_by(self) -> str | None:
        """The name of the known key whose signature holds, or None."""
        for name, key in KNOWN_PUBLIC_KEYS.items():
            if self.signature_valid(key):
                return name
        return None


def version_text(fw_version: int) -> str:
    return f"{fw_version >> 8}.{fw_version & 0xFF}"


def parse_version(text: str) -> int:
    """'1.2' -> 0x0102; names a bad version."""
    major, dot, minor = text.strip().partition(".")
    if not (dot and major.isdigit() and minor.isdigit() and int(major) < 256 and int(minor) < 256):
        raise ImageError(f"version {text!r} is not MAJOR.MINOR, each 0 to 255 (e.g. 1.2)")
    return int(major) << 8 | int(minor)


def read_image(data: bytes, source: str = "the image") -> Image:
    """Parse an image; an ImageError names the first thing wrong with it."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{source} is {len(data)} bytes; an image is at most 1 MiB")
    if len(data) < HEADER.size + SIGNATURE_BYTES:
        raise ImageError(f"{source} is {len(data)} bytes, too short to be a firmware image")
    magic, image_format, hw_id, fw_version, payload_size = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ImageError(f"{source} is not a firmware image (it does not start with PENF)")
    if image_format != IMAGE_FORMAT:
        raise ImageError(f"{source} has image format {image_format}; this host knows format 1")
    expected = HEADER.size + payload_size + SIGNATURE_BYTES
    if len(data) != expected:
        raise ImageError(
            f"{source} is {len(data)} bytes but its header says {expected} "
            f"(payload {payload_size} bytes): truncated or padded"
        )
    payload = data[HEADER.size : HEADER.size + payload_size]
    return Image(bytes(data), image_format, hw_id, fw_version, payload, data[-SIGNATURE_BYTES:])


def load_image(path: str | Path) -> Image:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)  # never more (a device: /dev/zero)
            size = os.fstat(f.fileno()).st_size  # a file's size, named when too large
    except OSError as exc:
        raise ImageError(f"{p}: cannot read the image ({exc.strerror})") from None
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"{p} is {size} bytes; an image is at most 1 MiB")
    return read_image(data, str(p))


def read_at_most(path: Path, max_bytes: int) -> bytes:
    """Up to `max_bytes` of a file: a wrong path to a huge file or a device (/dev/zero)
    must not be read whole."""
    with path.open("rb") as f:
        return f.read(max_bytes)


def check_image(image: Image, source: str = "the image") -> str:
    """The name of the key that signed `image`; ImageError when no known key did."""
    name = image.signed_by()
    if name is None:
        raise ImageError(
            f"{source}: the signature does not hold for any known maker's key "
            "(tampered with, or signed by someone else); do not install it"
        )
    return name


def sign_with_test_key(hw_id: int, fw_version: int, payload: bytes) -> bytes:
    """An image signed with the simulator's test-only key (for simulated pens only)."""
    if len(payload) > MAX_IMAGE_BYTES - HEADER.size - SIGNATURE_BYTES:
        raise ImageError("the payload is too large for a 1 MiB image")
    body = HEADER.pack(MAGIC, IMAGE_FORMAT, hw_id, fw_version, len(payload)) + payload
    key = Ed25519PrivateKey.from_private_bytes(TEST_KEY_SEED)
    return body + key.sign(body)


def chunks(image: Image) -> list[tuple[int, bytes]]:
    """(offset, 40 bytes) for every chunk, the last padded with zeros."""
    data = image.data
    return [
        (off, data[off : off + CHUNK_BYTES].ljust(CHUNK_BYTES, b"\x00"))
        for off in range(0, len(data), CHUNK_BYTES)
    ]
