"""The keyring: the device keys of the clinic's pens, by serial number (authenticated link).

One JSON file, `{"pens": {"SERIAL": "64 hex digits"}, "require_auth": false}`,
readable and writable by its owner only: created 0600, and refused when anyone else
may read it. Keys never leave this module except to the code that authenticates a
pen; listing shows serial numbers only. `require_auth` (`devicectl keys require on`):
every pen must authenticate, whatever serial it claims.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from devicectl.errors import DevicectlError
from devicectl.signing import KEY_BYTES

ENV_KEYRING: Final = "DEVICECTL_KEYRING"
#: A keyring of every pen a clinic could own is kilobytes (about 80 bytes a pen).
MAX_KEYRING_BYTES: Final = 16 * 1024**2


class KeyringError(DevicectlError):
    """The keyring cannot be used: unsafe permissions, unreadable, malformed, or a bad key."""


def default_path() -> Path:
    env = os.environ.get(ENV_KEYRING)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "devicectl" / "keyring.json"


def parse_key(text: str, source: str = "the key") -> bytes:
    """A device key from hex (spaces allowed): exactly 32 bytes."""
    digits = "".join(text.split()).removeprefix("0x")
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        raise KeyringError(
            f"{source} is not hex; give the pen's 32-byte key as 64 hex digits"
        ) from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{source} is {len(key)} bytes; a pen's key is 32 bytes (64 hex digits)")
    return key


@dataclass(frozen=True)
class KeyPolicy:
    """The keyring as a session takes it (read once): its keys by serial number, and
    whether every pen must authenticate (`require_auth`: a pen without AUTH is refused
    whatever serial it claims, so that a device in the cable that renames the pen and
    clears its AUTH gets nowhere). Called with a serial number, the key or None;
    picklable, for the pen process."""

    keys: dict[int, bytes] = field(default_factory=dict)
    require_auth: bool = False

    def __call__(self, serial_number: int) -> bytes | None:
        return self.keys.get(serial_number)


class Keyring:
    """The keys of the clinic's pens. Reading checks the file's permissions first."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_path()
        #: typed (--keyring, $DEVICECTL_KEYRING), not the default place
        self._typed = path is not None or bool(os.environ.get(ENV_KEYRING))

    def _load(self) -> dict[int, bytes]:
        return self._read().keys

    def _read(self) -> KeyPolicy:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return KeyPolicy()
        except OSError as exc:
            raise KeyringError(f"{self.path}: cannot read the keyring ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):  # a device or a folder: its mode is not ours to change
            raise KeyringError(f"{self.path}: not a file; the keyring is one JSON file "
                               f"(--keyring FILE, or ${ENV_KEYRING})")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyringError(
                f"{self.path}: the keyring can be read by others (mode "
                f"{stat.S_IMODE(st.st_mode):o}); refusing it: run `chmod 600 {self.path}`"
            )
        if st.st_size > MAX_KEYRING_BYTES:  # refused before it is read
            raise KeyringError(
                f"{self.path}: {st.st_size} bytes is not a devicectl keyring (at most "
                f"{MAX_KEYRING_BYTES // 1024**2} MiB)")
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            pens = doc["pens"]
            required = doc.get("require_auth", False)
            if not isinstance(required, bool):
                raise TypeError
            return KeyPolicy({int(serial): parse_key(key, f"{self.path}: the key of pen {serial}")
                              for serial, key in pens.items()}, required)
        except OSError as exc:
            raise KeyringError(f"{self.path}: cannot read the keyring ({exc.strerror})") from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyringError(
                f"{self.path}: not a devicectl keyring (expected {{\"pens\": {{serial: hex key}}, "
                "\"require_auth\": true or false})"
            ) from None

    def _save(self, keys: dict[int, bytes], require_auth: bool | None = None) -> None:
        if require_auth is None:
            require_auth = self._read().require_auth
        if self._typed and not self.path.parent.is_dir():  # the default place may be made
            raise KeyringError(
                f"no folder {self.path.parent} for the keyring {self.path}: check the path (a "
                "typo would keep the keys where nothing reads them), or create the folder first")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = json.dumps({"pens": {str(s): k.hex() for s, k in sorted(keys.items())},
                           "require_auth": require_auth}, indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            # a new file, never one found under that name (a planted symlink would
            # take the keys wherever it points)
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            os.chmod(tmp, 0o600)
            tmp.replace(self.path)
        except OSError as exc:
            raise KeyringError(f"{self.path}: cannot write the keyring ({exc.strerror})") from None

    def policy(self) -> KeyPolicy:
        """The keys and the rule, read (and the permissions checked) once: a session's."""
        return self._read()

    def set_require_auth(self, required: bool) -> None:
        """Whether every pen must authenticate (the keys stay as they are)."""
        self._save(self._load(), required)

    def key_for(self, serial_number: int) -> bytes | None:
        return self._load().get(serial_number)

    def serials(self) -> list[int]:
        return sorted(self._load())

    def add(self, serial_number: int, key: bytes) -> None:
        keys = self._load()
        keys[serial_number] = key
        self._save(keys)

    def remove(self, serial_number: int) -> bool:
        keys = self._load()
        if keys.pop(serial_number, None) is None:
            return False
        self._save(keys)
        return True
