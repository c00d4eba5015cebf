"""The record table of format version 3: the delta records in a few bytes each (docs/format.md, normative).

One uint8 tensor, ``records/table``, of unsigned LEB128 integers ("varints": 7 bits a byte, low groups first,
the high bit set on every byte but the last; minimal, at most 10 bytes, below 2^64) then UTF-8 text:

    T, then T token byte lengths            the name tokens (names split at "."), in order of first use
    K, then K kinds                         each: dtype index, θ_init as its float64 bits, ndim, ndim dims
    shared[n], added[n], kind[n]            per record: tokens kept from the previous record's name, tokens
                                            that follow, index of its kind
    token ids (Σ added)                     indexes into the tokens
    the tokens' bytes, concatenated         exactly Σ lengths bytes, to the end of the tensor

Record i's name is the first shared[i] tokens of record i−1's name (none for record 0) followed by its added
tokens, joined with "."; its (dtype, θ_init, shape) is kinds[kind[i]]. The encoding is canonical, and readers
refuse any other: tokens and kinds are distinct and numbered in order of first use, all used; shared[i] is the
longest common token prefix of the two names; no token holds a "."; varints are minimal. A 224-tensor LoRA's
table is about 1.6 KB where version 2's columns took about 21 KB.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from compeft.errors import ContainerError

TABLE = "table"
MAX_VARINT_BYTES = 10
MAX_NAME_TOKENS = 1024  # a tensor name of more than 1023 dots is not a name
MAX_NAME_CHARS = 64 << 20  # all names together: the header cap, as when names were stored in full
MAX_TOKEN_GRID = 1 << 24  # records × the longest name's tokens (1120 × 9 for a 65B-shape LoRA)
SEP = "."
F64 = struct.Struct("<d")
U64 = struct.Struct("<Q")

Kind = tuple[int, float, tuple[int, ...]]  # (dtype index, θ_init, shape)


def _bad(what: str) -> ContainerError:
    return ContainerError(f"record table: {what}")


def float_bits(x: float) -> int:
    """The IEEE-754 bits of a float64, as an unsigned integer."""
    return U64.unpack(F64.pack(x))[0]


def bits_float(bits: int) -> float:
    return F64.unpack(U64.pack(bits))[0]


def encode_varints(values: Sequence[int] | np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (< 2^64), concatenated."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if not v.size:
        return b""
    groups = np.maximum(1, (np.frexp(v.astype(np.float64))[1] + 6) // 7).astype(np.int64)
    big = v >= np.uint64(1 << 53)  # float64 rounds their bit length: count exactly
    if big.any():
        groups[big] = [max(1, (int(x).bit_length() + 6) // 7) for x in v[big].tolist()]
    which = np.repeat(np.arange(v.size), groups)
    j = np.arange(which.size) - np.repeat(np.cumsum(groups) - groups, groups)
    out = (v[which] >> (np.uint64(7) * j.astype(np.uint64))) & np.uint64(0x7F)
    out |= (j < groups[which] - 1).astype(np.uint64) << np.uint64(7)
    return out.astype(np.uint8).tobytes()


def decode_varints(data: np.ndarray) -> np.ndarray:
    """The uint64 values of a byte array holding whole, minimal varints (ContainerError otherwise)."""
    if not data.size:
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero(data < 0x80)
    if not ends.size or ends[-1] != data.size - 1:
        raise _bad("ends inside a number")
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > MAX_VARINT_BYTES or (data[ends[lengths == MAX_VARINT_BYTES]] > 1).any():
        raise _bad("a number is 2^64 or more")
    if ((data[ends] == 0) & (lengths > 1)).any():
        raise _bad("a number is not written in its fewest bytes")
    shift = (np.arange(data.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    return np.add.reduceat((data & 0x7F).astype(np.uint64) << shift, starts)


class _Reader:
    """Sequential varints from the head of the table (the small sections before the columns)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def next(self) -> int:
        value = shift = 0
        for i in range(MAX_VARINT_BYTES):
            if self.pos >= len(self.data):
                raise _bad("ends inside a number")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                if i and not byte:
                    raise _bad("a number is not written in its fewest bytes")
                if value >= 1 << 64:
                    raise _bad("a number is 2^64 or more")
                return value
        raise _bad("a number is 2^64 or more")

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` varints at once (token lengths: one per token)."""
        window = np.frombuffer(self.data, dtype=np.uint8, count=min(len(self.data) - self.pos, MAX_VARINT_BYTES * count),
                               offset=self.pos)
        ends = np.flatnonzero(window < 0x80)
        if ends.size < count:
            raise _bad("ends inside a number")
        size = int(ends[count - 1]) + 1 if count else 0
        self.pos += size
        return decode_varints(window[:size])

    def count(self, limit: int, what: str) -> int:
        value = self.next()
        if value > limit:
            raise _bad(f"{what} {value} is more than the table can hold")
        return value


def encode_table(names: Sequence[str], kinds_of: Sequence[Kind]) -> bytes:
    """The table of records with these names and (dtype index, θ_init, shape) kinds, in record order."""
    token_ids: dict[str, int] = {}
    kind_ids: dict[tuple[int, int, tuple[int, ...]], int] = {}  # θ_init by its bits: 0.0 and -0.0 are two kinds
    shared, added, kinds, ids = [], [], [], []
    prev: list[str] = []
    for name, kind in zip(names, kinds_of, strict=True):
        tokens = name.split(SEP)
        s = 0
        while s < min(len(prev), len(tokens)) and prev[s] == tokens[s]:
            s += 1
        shared.append(s)
        added.append(len(tokens) - s)
        ids += [token_ids.setdefault(t, len(token_ids)) for t in tokens[s:]]
        kinds.append(kind_ids.setdefault((kind[0], float_bits(kind[1]), tuple(kind[2])), len(kind_ids)))
        prev = tokens
    encoded = [t.encode("utf-8") for t in token_ids]
    head = [len(encoded), *map(len, encoded), len(kind_ids)]
    for dtype, bits, shape in kind_ids:
        head += [dtype, bits, len(shape), *shape]
    return encode_varints(head) + encode_varints(np.array(shared + added + kinds + ids, dtype=np.uint64)) + b"".join(encoded)


def decode_table(data: bytes, n: int, n_dtypes: int, max_ndim: int) -> tuple[list[str], list[Kind], np.ndarray]:
    """(names, kinds, kind index per record) of a table of n records whose dtype indexes are below n_dtypes,
    checked for the canonical encoding (ContainerError naming what is wrong)."""
    r = _Reader(data)
    t = r.count(len(data), "the token count")
    lengths = r.take(t)
    if (lengths > np.uint64(len(data))).any():
        raise _bad("a token is longer than the table")
    lengths = lengths.astype(np.int64).tolist()
    k = r.count(len(data), "the kind count")
    kinds: list[Kind] = []
    for _ in range(k):
        dtype = r.next()
        theta = bits_float(r.next())
        ndim = r.next()
        if dtype >= n_dtypes:
            raise _bad(f"a kind's dtype index {dtype} is past 'record_dtypes'")
        if not math.isfinite(theta) or abs(theta) > float(np.finfo(np.float32).max):
            raise _bad(f"a kind's theta_init {theta!r} is not finite within float32")
        if ndim > max_ndim:
            raise _bad(f"a kind has {ndim} dimensions, more than {max_ndim}")
        shape = tuple(r.next() for _ in range(ndim))
        if any(s >= 1 << 62 for s in shape):
            raise _bad(f"a kind's dimension {max(shape)} is out of range")
        kinds.append((dtype, theta, shape))
    text = sum(lengths)
    if r.pos + 3 * n + text > len(data):
        raise _bad(f"is {len(data)} bytes, too short for {n} records")
    cols = decode_varints(np.frombuffer(data, dtype=np.uint8, count=len(data) - r.pos - text, offset=r.pos))
    if cols.size < 3 * n:
        raise _bad(f"holds {cols.size} numbers after its kinds, fewer than the {3 * n} of {n} records")
    shared, added, kind = cols[:n], cols[n : 2 * n], cols[2 * n : 3 * n]
    if (added > np.uint64(cols.size)).any() or (shared > np.uint64(cols.size)).any() \
            or int(added.sum(dtype=np.uint64)) != cols.size - 3 * n:
        raise _bad("added token counts do not match the token ids that follow")
    ids = cols[3 * n :]
    if (kind >= np.uint64(max(k, 1))).any() or (not k and n):
        raise _bad("a record's kind index is past its kinds")
    if (ids >= np.uint64(max(t, 1))).any() or (not t and ids.size):
        raise _bad("a token id is past its tokens")
    _first_use(ids, t, "tokens")
    _first_use(kind, k, "kinds")
    try:
        tokens = [raw.decode("utf-8") for raw in _split(data[len(data) - text :], lengths)]
    except UnicodeDecodeError as err:
        raise _bad("a token is not UTF-8") from err
    if len(set(tokens)) != t or any(SEP in tok for tok in tokens):
        raise _bad("tokens repeat or hold a '.'")
    if len({(dtype, float_bits(theta), shape) for dtype, theta, shape in kinds}) != k:
        raise _bad("kinds repeat")
    names = _names(shared.astype(np.int64), added.astype(np.int64), ids.astype(np.int64), tokens)
    return names, kinds, kind.astype(np.int64)


def _split(text: bytes, lengths: list[int]) -> list[bytes]:
    out, pos = [], 0
    for length in lengths:
        out.append(text[pos : pos + length])
        pos += length
    return out


def _first_use(ids: np.ndarray, count: int, what: str) -> None:
    """``ids`` use each of 0..count−1, first in that order (each id at most one more than every id before it)."""
    if not ids.size:
        ok = count == 0
    else:
        highest = np.maximum.accumulate(ids)
        ok = ids[0] == 0 and int(highest[-1]) == count - 1 and bool((ids[1:] <= highest[:-1] + np.uint64(1)).all())
    if not ok:
        raise _bad(f"{what} are not numbered in order of first use, or not all used")


def _names(shared: np.ndarray, added: np.ndarray, ids: np.ndarray, tokens: list[str]) -> list[str]:
    """Each record's name from the previous one's tokens (vectorized over records and token positions); shared
    prefixes must be the longest, and names stay within MAX_NAME_TOKENS tokens and MAX_NAME_CHARS in all."""
    n = shared.size
    if not n:
        return []
    lengths = shared + added
    prev = np.zeros(n, dtype=np.int64)
    prev[1:] = lengths[:-1]
    if (shared > prev).any():
        raise _bad("a record shares more tokens than the previous name has")
    if lengths.min() < 1 or lengths.max() > MAX_NAME_TOKENS:
        raise _bad(f"a record's name has no tokens or more than {MAX_NAME_TOKENS}")
    if n * int(lengths.max()) > MAX_TOKEN_GRID:  # the grid below: records × token positions
        raise _bad(f"{n} names of up to {int(lengths.max())} tokens are too many to expand")
    col = np.arange(int(lengths.max()))
    owner = np.maximum.accumulate(np.where(shared[:, None] <= col, np.arange(n)[:, None], 0), axis=0)
    valid = col < lengths[:, None]
    start = np.cumsum(added) - added
    full = np.where(valid, ids[np.where(valid, start[owner] + col - shared[owner], 0)] if ids.size else 0, -1)
    rows = np.flatnonzero((added > 0) & (shared < prev))
    if rows.size and (full[rows, shared[rows]] == full[rows - 1, shared[rows]]).any():
        raise _bad("a record shares fewer tokens with the previous name than it could")
    chars = np.array([len(t) for t in tokens], dtype=np.int64)
    name_chars = np.where(valid, chars[full], 0).sum(axis=1) + lengths - 1
    if int(name_chars.sum()) > MAX_NAME_CHARS:
        raise _bad(f"names expand to more than {MAX_NAME_CHARS} characters")
    pieces = np.array(tokens + [SEP + t for t in tokens], dtype=object)  # a token, then "." + the token
    text = "".join(pieces[(full + (col > 0) * len(tokens))[valid]].tolist())
    ends = np.cumsum(name_chars)
    return list(map(text.__getitem__, map(slice, (ends - name_chars).tolist(), ends.tolist())))


def table_kinds(data: bytes) -> list[tuple[int, float]] | None:
    """The (dtype index, θ_init) of each kind, read from the head of a table before it is checked (None when
    the head does not parse)."""
    try:
        r = _Reader(data)
        r.take(r.count(len(data), "the token count"))
        kinds = []
        for _ in range(r.count(len(data), "the kind count")):
            dtype, theta, ndim = r.next(), bits_float(r.next()), r.count(64, "ndim")
            for _ in range(ndim):
                r.next()
            kinds.append((dtype, theta))
        return kinds
    except ContainerError:
        return None
