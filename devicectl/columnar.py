"""Columnar decoding of recorded frames: whole captures at once, with numpy.

A capture (the flight recorder's frames, a raw byte log of a port) is decoded
here column by column instead of frame by frame: the chunks between 0x00
delimiters are grouped by length, each group becomes one byte matrix, and
COBS, the CRC and the version, type and length checks are worked out on whole
columns (byte arithmetic and table look-ups, a few numpy calls a byte column);
the fields are read from the decoded packets when first asked for. The result
is the same list of JSON objects as feeding the bytes to `protocol.Decoder`
and turning each frame or discard into its dict (`wire decode`'s shape:
`{"type", "seq", "flags", fields…}`, signed frames with `counter` and
`tag_ok`, a discard as `{"discarded": reason}`).
tests/test_columnar.py shows it equal on random captures.

Only well-formed frames of known types take the columnar path. A chunk of a
block whose COBS is broken, or whose CRC is wrong under the right version,
is that discard (the spec's order checks the length first, and a block's
length is right); every other chunk (too long, unknown type, wrong length or
version) is handed to the per-frame `Decoder.decode_chunk`, which classifies
it in the spec's order. `Decoded.per_frame` counts both. Tags are not
checked here (`tag_ok` is None, as without a session key): checking one
needs the key and an HMAC per frame, so callers with a key decode per frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from devicectl.messages import BY_TYPE
from devicectl.protocol import (
    CRC_INIT,
    FLAG_SIGNED,
    MAX_ENCODED,
    PROTO_VERSION,
    TAG_BYTES,
    Decoder,
    Discard,
    Frame,
    field_names,
    message_to_dict,
)

__all__ = [
    "MIN_GROUP", "Decoded", "decode_chunks", "decode_recorded", "decode_stream", "event_dict",
]

Bytes = npt.NDArray[np.uint8]
Index = npt.NDArray[np.intp]

#: Below this many chunks of one length the numpy set-up costs more than it saves
#: (they go to the per-frame decoder). The tests set 1 to put every chunk through numpy.
MIN_GROUP: Final = 8
#: Chunks decoded together: large enough to pay numpy's per-call cost back,
#: small enough that a block's working arrays stay in the cache.
_BLOCK_ROWS: Final = 16384

#: decode_stream finds the 0x00s this many bytes at a time (the booleans stay in cache).
_ZEROS_SLICE: Final = 1 << 18

_INT_DTYPES: Final = {"B": "u1", "H": "<u2", "I": "<u4", "h": "<i2"}


def _crc_tables() -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint16]]:
    """CRC-16/CCITT (binascii.crc_hqx, MSB first, polynomial 0x1021) tables.

    One byte: crc' = (crc << 8) ^ T8[(crc >> 8) ^ b]. Two bytes at once: the
    register is 16 bits, so after two bytes it is a linear function of
    crc ^ (b0 << 8 | b1) alone: crc' = T16[crc ^ word], T16[v] = two byte
    steps from 0 over v's bytes."""
    t8 = np.zeros(256, np.uint32)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        t8[byte] = crc & 0xFFFF
    v = np.arange(0x10000, dtype=np.uint32)
    crc = t8[v >> 8]  # first byte from a zero register
    crc = ((crc << 8) & 0xFFFF) ^ t8[(crc >> 8) ^ (v & 0xFF)]
    return t8.astype(np.uint16), crc.astype(np.uint16)


_CRC8, _CRC16 = _crc_tables()


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where a message type's fields sit in its packet, signed or not."""

    name: str
    size: int  # whole packet, CRC included
    ints: tuple[tuple[str, np.dtype[Any], int], ...]  # (field, dtype, offset)
    blobs: tuple[tuple[str, int, int], ...]  # (field, offset, length): given as hex
    keys: tuple[str, ...]  # the JSON object's keys, in order
    signed: bool
    dtype: np.dtype[Any]  # the integer fields of the whole packet, packed
    template: str  # one JSON line: json.dumps's text with %d / "%s" per value


def _layout(cls: type[Any], signed: bool) -> _Layout:
    codes = [(n, c) for n, c in zip(field_names(cls), _codes(cls.FORMAT[1:]), strict=True)]
    ints: list[tuple[str, np.dtype[Any], int]] = []
    blobs: list[tuple[str, int, int]] = []
    offset = 4
    for name, code in codes:
        if code.endswith("s"):
            blobs.append((name, offset, int(code[:-1])))
            offset += int(code[:-1])
        else:
            dtype = np.dtype(_INT_DTYPES[code])
            ints.append((name, dtype, offset))
            offset += dtype.itemsize
    keys = ("type", "seq", "flags", *field_names(cls))
    values = {"type": f'"{cls.TYPE.name}"', "seq": "%d", "flags": "%d"}
    values |= {n: '"%s"' if c.endswith("s") else "%d" for n, c in codes}
    if signed:
        keys += ("counter", "tag_ok")
        ints.append(("counter", np.dtype("<u4"), offset))
        values |= {"counter": "%d", "tag_ok": "null"}
        offset += 4 + TAG_BYTES
    size = offset + 2
    dtype = np.dtype({"names": ["seq", "flags"] + [n for n, _, _ in ints],
                      "formats": ["u1", "u1"] + [d for _, d, _ in ints],
                      "offsets": [2, 3] + [o for _, _, o in ints], "itemsize": size})
    template = "{" + ", ".join(f'"{k}": {values[k]}' for k in keys) + "}"
    return _Layout(cls.TYPE.name, size, tuple(ints), tuple(blobs), keys, signed, dtype,
                   template)


def _codes(body: str) -> list[str]:
    out: list[str] = []
    digits = ""
    for ch in body:
        if ch.isdigit():
            digits += ch
        else:
            out.append(digits + ch)
            digits = ""
    return out


#: (packet length, type, signed) -> layout: the only packets the columnar path takes.
_LAYOUTS: Final[dict[tuple[int, int, bool], _Layout]] = {
    (lay.size, t, s): lay
    for t, cls in BY_TYPE.items()
    for s in (False, True)
    for lay in (_layout(cls, s),)
}
#: expected packet length per kind (type * 2 + signed); 0 for an undefined type.
_EXPECTED: Final = np.zeros(512, np.uint8)
for (_size, _type, _signed) in _LAYOUTS:
    _EXPECTED[_type * 2 + int(_signed)] = _size


@dataclass(slots=True)
class _Table:
    """Frames of one layout: where they stand in the stream and their packets.

    The packets stay as COBS decoding left them, transposed (`columns[j]` is byte
    j of every packet of the block), for the frames `picked` among them (None:
    all; a block's layouts share its columns). They are turned into rows, where
    the layout's structured dtype reads the fields, once and only when a value is
    asked for (`column`, `rows`)."""

    layout: _Layout
    where: Index
    columns: Bytes  # (packet length, frames of the block): byte j of each is row j
    picked: Index | None
    _packets: Bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def packets(self) -> Bytes:
        """The decoded packets, one a row."""
        if self._packets is None:
            rows = self.columns.T
            self._packets = np.ascontiguousarray(rows if self.picked is None
                                                 else rows[self.picked])
        return self._packets

    def column(self, name: str) -> npt.NDArray[Any]:
        """One integer field (or seq, flags) of every frame, as a numpy column."""
        values = np.frombuffer(self.packets.data, dtype=self.layout.dtype)
        column: npt.NDArray[Any] = values[name]
        return column

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Each frame's values in the layout's key order ("type", "tag_ok" excluded)."""
        columns: dict[str, list[Any]] = {
            name: self.column(name).tolist() for name in self.layout.dtype.names or ()
        }
        for name, offset, size in self.layout.blobs:
            text = np.ascontiguousarray(self.packets[:, offset : offset + size]).tobytes().hex()
            step = 2 * size
            columns[name] = [text[i : i + step] for i in range(0, len(text), step)]
        names = [k for k in self.layout.keys if k not in ("type", "tag_ok")]
        return zip(*(columns[k] for k in names), strict=True)


@dataclass(frozen=True, slots=True)
class Decoded:
    """Every frame and discard of a capture, in stream order, as JSON objects or lines.

    Frames decoded by columns stay in columns until asked for (`events`,
    `lines`); `per_frame` counts the chunks that are not (damaged, unknown
    types, odd lengths, groups too small for numpy): their objects are in `single`."""

    count: int
    tables: list[_Table]
    single: dict[int, dict[str, Any]]  # stream position -> object, from the per-frame path

    @property
    def per_frame(self) -> int:
        return len(self.single)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON objects, as `wire decode` prints them (without a session key)."""
        out: list[Any] = [None] * self.count
        for i, obj in self.single.items():
            out[i] = obj
        for table in self.tables:
            keys = table.layout.keys
            fixed = {"type": table.layout.name}
            if table.layout.signed:
                fixed["tag_ok"] = None  # type: ignore[assignment]
            names = [k for k in keys if k not in fixed]
            for i, row in zip(table.where.tolist(), table.rows(), strict=True):
                obj = dict(zip(names, row, strict=True)) | fixed
                out[i] = {k: obj[k] for k in keys}
        return out

    def lines(self) -> list[str]:
        """`json.dumps` of each object, built from the columns without the dicts."""
        out: list[str] = [""] * self.count
        for i, obj in self.single.items():
            out[i] = json.dumps(obj)
        for table in self.tables:
            template = table.layout.template
            for i, row in zip(table.where.tolist(), table.rows(), strict=True):
                out[i] = template % row
        return out


def event_dict(event: Frame | Discard) -> dict[str, Any]:
    """One frame or discard as its JSON object (`wire decode`'s shape, no session key)."""
    if isinstance(event, Discard):
        return {"discarded": event.value}
    fields = message_to_dict(event.message)
    out = {"type": fields.pop("type"), "seq": event.seq, "flags": event.flags, **fields}
    if event.counter is not None:
        out["counter"] = event.counter
        out["tag_ok"] = None
    return out


def decode_stream(data: bytes, min_group: int = MIN_GROUP) -> Decoded:
    """Every chunk of `data` that a 0x00 ends, as `Decoder().feed(data)` sees them.

    Bytes after the last 0x00 are an unfinished frame and give nothing, as in
    the stream decoder."""
    arr = np.frombuffer(data, np.uint8)
    ends = _zeros(arr)
    starts = np.empty_like(ends)
    starts[:1] = 0
    np.add(ends[:-1], 1, out=starts[1:])
    lengths = ends - starts
    if len(lengths) and lengths.min() == 0:  # two 0x00 in a row: no chunk between
        keep = lengths > 0
        starts, lengths = starts[keep], lengths[keep]
    return _decode(data, arr, starts, lengths, min_group)


def _zeros(arr: Bytes) -> Index:
    """Where `arr` holds 0x00: `np.flatnonzero(arr == 0)`, a slice at a time, so that
    the comparison's booleans are read back from the cache, not from memory."""
    step = _ZEROS_SLICE
    if len(arr) <= step:
        return np.flatnonzero(arr == 0)
    zero = np.empty(step, np.bool_)
    parts = []
    for at in range(0, len(arr), step):
        piece = arr[at : at + step]
        found = np.flatnonzero(np.equal(piece, 0, out=zero[: len(piece)]))
        found += at
        parts.append(found)
    return np.concatenate(parts)


def decode_chunks(chunks: Sequence[bytes], min_group: int = MIN_GROUP) -> Decoded:
    """One event per chunk: each chunk is the bytes between two delimiters (no 0x00)."""
    data = b"".join(chunks)
    lengths = np.fromiter(map(len, chunks), np.intp, len(chunks))
    if np.any(lengths == 0):
        raise ValueError("a chunk is empty; chunks are the bytes between delimiters")
    starts = np.cumsum(lengths) - lengths
    arr = np.frombuffer(data, np.uint8)
    if np.any(arr == 0):
        raise ValueError("a chunk holds a 0x00; split the bytes at the delimiters first")
    return _decode(data, arr, starts, lengths, min_group)


def decode_recorded(
    raws: Sequence[bytes], min_group: int = MIN_GROUP
) -> list[list[dict[str, Any]]]:
    """Per recorded frame (bytes up to and with its delimiter), its events.

    Equal to decoding each `raw` with a fresh Decoder. A raw that is not one
    chunk and its 0x00 (cut, or holding several frames) is decoded per frame."""
    single = [len(r) > 1 and r.find(0) == len(r) - 1 for r in raws]
    chunks = [r[:-1] for r, one in zip(raws, single, strict=True) if one]
    events = iter(decode_chunks(chunks, min_group).events)
    out: list[list[dict[str, Any]]] = []
    for raw, one in zip(raws, single, strict=True):
        out.append([next(events)] if one else _per_frame_stream(raw))
    return out


def _per_frame_stream(raw: bytes) -> list[dict[str, Any]]:
    decoder = Decoder()
    out: list[dict[str, Any]] = []
    pieces = raw.split(b"\x00")
    for piece in pieces[:-1]:
        if piece:
            out.append(_per_frame(decoder, piece))
    return out


def _per_frame(decoder: Decoder, chunk: bytes) -> dict[str, Any]:
    before = dict(decoder.discarded)
    frame = decoder.decode_chunk(chunk)
    if frame is not None:
        return event_dict(frame)
    reason = next(r for r, n in decoder.discarded.items() if n != before[r])
    return event_dict(reason)


def _decode(data: bytes, arr: Bytes, starts: Index, lengths: Index, min_group: int) -> Decoded:
    count = len(starts)
    tables: list[_Table] = []
    single: dict[int, dict[str, Any]] = {}  # stream position -> object, not by columns
    rest: list[Index] = []  # stream positions the per-frame decoder takes
    # chunks grouped by length (stream order within a group), the lengths above 255
    # counted as 255 (too long for a frame): one byte a chunk, one count; only the
    # lengths with enough chunks for numpy are picked out (in a capture a few lengths
    # make almost every frame)
    by_length = np.minimum(lengths, 255, out=np.empty(count, np.uint8), casting="unsafe")
    sizes = np.bincount(by_length, minlength=256)
    taken = np.zeros(256, np.bool_)
    for length in np.flatnonzero(sizes[: MAX_ENCODED + 1] >= max(min_group, 1)).tolist():
        if length < 7:
            continue
        taken[length] = True
        group = np.flatnonzero(by_length == length)
        # every `length` bytes from each offset as one item (no copy): gathering whole
        # items copies 2-3x faster than gathering the rows of a 2-D window view
        windows = np.ndarray((len(arr) - length + 1,), f"V{length}", arr, strides=(1,))
        for block in range(0, len(group), _BLOCK_ROWS):  # a block's arrays stay in cache
            rows = group[block : block + _BLOCK_ROWS]
            matrix = windows[starts[rows]].view(np.uint8).reshape(len(rows), length)
            tables += _decode_group(matrix, rows, rest, single)
    # the chunks of the lengths not taken: one pass for each such length when they are
    # few (a capture's damaged frames mostly keep their length), else one for all
    others = np.flatnonzero(sizes * ~taken).tolist()
    if len(others) <= 4:
        rest += [np.flatnonzero(by_length == length) for length in others]
    else:
        rest.append(np.flatnonzero(~taken[by_length]))
    decoder = Decoder()
    for i in np.sort(np.concatenate(rest)).tolist() if rest else ():
        start = int(starts[i])
        single[i] = _per_frame(decoder, data[start : start + int(lengths[i])])
    return Decoded(count, tables, single)


def _cobs_decode(matrix: Bytes) -> tuple[Bytes, npt.NDArray[np.bool_]]:
    """COBS-decoded packets of equal-length chunks (no 0x00 inside), as columns (byte j
    of every packet is row j: transposed), and which are valid.

    A chunk of at most 66 bytes holds no 0xFF block, so every code byte but the
    last stands for a 0x00, and a valid chain of codes ends exactly at the end.
    All rows go along their bytes together, one column a step (a column of the
    transposed copy is contiguous): `at` is each row's next code byte; where a
    row's code byte is this column, the column's byte is its step to the next
    and is decoded to 0x00. A row whose chain jumps past the end never lands on it.

    Every step is byte arithmetic (`at` is a uint8 too): where `at` passes 255 it
    wraps to below the current column (j + code - 256 < j), where no later column
    and not the end can match it, as if it had jumped past the end."""
    length = matrix.shape[1]
    columns = np.ascontiguousarray(matrix.T)
    at = columns[0].copy()
    hit = np.empty(len(at), np.bool_)
    ones = hit.view(np.uint8)  # 1 where this column is the row's code byte, else 0
    step = np.empty_like(at)
    for j in range(1, length):
        column = columns[j]
        np.equal(at, j, out=hit)
        np.multiply(column, ones, out=step)
        at += step
        column ^= step  # the code bytes become 0x00
    ok: npt.NDArray[np.bool_] = at == length
    return columns[1:], ok


#: The CRC register after the version byte, from CRC_INIT: a packet whose first byte
#: is not PROTO_VERSION is no frame whatever its CRC, so for the others the CRC may
#: start from here (an odd count of covered bytes then leaves an even count to pair).
_CRC_AFTER_VERSION: Final = ((CRC_INIT << 8) & 0xFFFF) ^ int(_CRC8[(CRC_INIT >> 8) ^ PROTO_VERSION])


def _crc_ok(columns: Bytes) -> npt.NDArray[np.bool_]:
    """CRC of each packet (all but the last two bytes) against its last two, two bytes
    a step; `columns` are the packets transposed, as `_cobs_decode` gives them.

    Right only for the packets that begin with PROTO_VERSION (the others are
    discarded anyway): when the covered bytes are odd, the version byte is taken as
    read (`_CRC_AFTER_VERSION`) and the rest go two at a time."""
    n = columns.shape[0]
    covered = n - 2
    first, init = (1, _CRC_AFTER_VERSION) if covered % 2 else (0, CRC_INIT)
    # every big-endian pair as a word, in two calls for all of them
    words = np.left_shift(columns[first:covered:2], 8, dtype=np.uint16)
    words |= columns[first + 1 : covered : 2]
    crc = np.full(columns.shape[1], init, np.uint16)
    for word in words:
        word ^= crc
        np.take(_CRC16, word, out=crc, mode="wrap")  # in range; "wrap" checks less
    sent = np.left_shift(columns[n - 1], 8, dtype=np.uint16)  # sent little-endian
    sent |= columns[n - 2]
    ok: npt.NDArray[np.bool_] = crc == sent
    return ok


def _decode_group(matrix: Bytes, rows: Index, rest: list[Index],
                  single: dict[int, dict[str, Any]]) -> list[_Table]:
    """The frames of one block of equal-length chunks (`rows`: their stream positions)
    as tables; its COBS and CRC discards into `single`, the stream positions of the
    other rows it cannot decode (other versions, other kinds) into `rest`."""
    columns, cobs_ok = _cobs_decode(matrix)
    n = columns.shape[0]
    if not 6 <= n <= 64:
        rest.append(rows)
        return []
    versions = columns[0]
    good = versions == PROTO_VERSION
    good &= cobs_ok
    good &= _crc_ok(columns)  # on every row: cheaper than copying out the good ones
    # the usual block is of one kind (type, signed or not): the first row's, checked
    # in bytes; any other kind among the good rows takes the general way below
    types, signed = columns[1], columns[3] & FLAG_SIGNED
    kind = int(types[0]) * 2 + int(signed[0] != 0)
    other = types != types[0]
    other |= signed != signed[0]
    other &= good
    if not other.any() and _EXPECTED[kind] == n:
        layout = _LAYOUTS[(n, kind >> 1, bool(kind & 1))]
        if good.all():  # all good: no copy
            return [_Table(layout, rows, columns, None)]
        _discards(rows, np.flatnonzero(~good), cobs_ok, versions, rest, single)
        sel = np.flatnonzero(good)
        return [_Table(layout, rows[sel], columns, sel)] if len(sel) else []
    _discards(rows, np.flatnonzero(~good), cobs_ok, versions, rest, single)
    kinds = types.astype(np.intp) * 2  # type * 2 + signed
    kinds += signed != 0
    known = _EXPECTED[kinds] == n
    rest.append(rows[np.flatnonzero(good & ~known)])  # unknown types, other lengths
    good &= known
    tables = []
    for kind in np.flatnonzero(np.bincount(kinds[good], minlength=512)).tolist():
        sel = np.flatnonzero(good & (kinds == kind))
        layout = _LAYOUTS[(n, kind >> 1, bool(kind & 1))]
        tables.append(_Table(layout, rows[sel], columns, sel))
    return tables


def _discards(rows: Index, bad: Index, cobs_ok: npt.NDArray[np.bool_], versions: Bytes,
              rest: list[Index], single: dict[int, dict[str, Any]]) -> None:
    """The block's rows `bad` (not frames) as the per-frame decoder would see them:
    broken COBS is that discard; with COBS and the version right, the CRC was wrong
    (the spec checks the length before the CRC, and a block's length is right); a
    row of another version goes to the per-frame decoder (its CRC, taken from the
    version byte on, says nothing: it may be a CRC or a version discard)."""
    where = rows[bad]
    cobs = cobs_ok[bad]
    crc = cobs & (versions[bad] == PROTO_VERSION)
    for i in where[~cobs].tolist():
        single[i] = {"discarded": Discard.COBS.value}
    for i in where[crc].tolist():
        single[i] = {"discarded": Discard.CRC.value}
    rest.append(where[cobs & ~crc])
