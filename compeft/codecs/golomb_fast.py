"""Vectorized ``golomb`` encode/decode: every chunk in one pass of tensor ops (CPU or CUDA).

The reference coder in golomb.py loops over chunks with ~10 small tensor ops each (~1100 tensors and
~1500 chunks for a 65B-shape LoRA). Here all chunks of the common kind (mode 0: positions of the
non-zeros coded) are coded or decoded together: per-chunk parameters (M, plane offsets, first code)
are gathered by chunk id, segmented scans become one global cumsum minus its value at each chunk's
first code, and the four planes of every body are written as bit fields added into one word buffer
(fields never overlap, so integer adds are an exact, order-independent OR). Rare mode-1 chunks (more
than half non-zero) go through the reference per-chunk coder. The bytes are identical to golomb.py's
reference coder by construction and by test (tests/perf).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from compeft.codecs.golomb import (
    ENTRY,
    HEADER,
    MAGIC,
    MAX_CHUNK,
    ChunkEntry,
    chunk_lengths,
    decode_chunk,
    encode_chunk,
    golomb_parameter,
    read_header,
)
from compeft.errors import CodecError

TABLE_DTYPE = np.dtype(
    [("length", "<u4"), ("count", "<u4"), ("m", "<u4"), ("mode", "u1"), ("pad", "V3"), ("unary_bytes", "<u4"), ("extra_bits", "<u4")]
)
PIECE_BYTES = 32 << 20  # StagedPayload's largest piece (bench.ab_decode compares sizes)
PAD = 8  # zero bytes after the payload so that field reads (two 4-byte words) never run past the buffer


def bit_length(x: np.ndarray) -> np.ndarray:
    """Python's int.bit_length for non-negative integers below 2^53, element-wise."""
    return np.frexp(x.astype(np.float64))[1].astype(np.int64)


class Table:
    """The chunk table as int64 numpy columns, with each body's plane offsets (bytes into the payload)."""

    def __init__(self, length, count, m, mode, unary_bytes, extra_bits, body_start: int) -> None:
        self.length, self.count, self.m, self.mode = length, count, m, mode
        self.unary_bytes, self.extra_bits = unary_bytes, extra_bits
        self.b = bit_length(m - 1)
        self.width = np.maximum(self.b - 1, 0)
        self.u = (np.int64(1) << self.b) - m
        self.nonzeros = np.where(mode == 0, count, length - count)
        self.low_bytes = (count * self.width + 7) // 8
        self.extra_bytes = (extra_bits + 7) // 8
        self.sign_bytes = (self.nonzeros + 7) // 8
        self.body_bytes = unary_bytes + self.low_bytes + self.extra_bytes + self.sign_bytes
        ends = body_start + np.cumsum(self.body_bytes)
        self.unary_off = ends - self.body_bytes
        self.low_off = self.unary_off + unary_bytes
        self.extra_off = self.low_off + self.low_bytes
        self.sign_off = self.extra_off + self.extra_bytes
        self.start = np.cumsum(length) - length
        self.end = int(ends[-1]) if len(ends) else body_start

    def __len__(self) -> int:
        return len(self.length)

    def entry(self, i: int) -> ChunkEntry:
        return ChunkEntry(*(int(c[i]) for c in (self.length, self.count, self.m, self.mode, self.unary_bytes, self.extra_bits)))


def read_table_fast(payload: torch.Tensor, d: int) -> Table:
    """golomb.read_table with numpy: the same checks and messages, no Python loop over chunks."""
    size = payload.numel()
    n_chunks = read_header(payload, d)
    body_start = HEADER.size + n_chunks * ENTRY.size
    host = payload if payload.device.type == "cpu" else payload[:body_start].cpu()
    raw = np.frombuffer(host[HEADER.size : body_start].contiguous().numpy().tobytes(), dtype=TABLE_DTYPE)
    cols = {name: raw[name].astype(np.int64) for name in ("length", "count", "m", "mode", "unary_bytes", "extra_bits")}
    length, count, m, mode, extra = cols["length"], cols["count"], cols["m"], cols["mode"], cols["extra_bits"]
    bad1 = ~((1 <= length) & (length <= MAX_CHUNK) & (count <= length) & ((mode == 0) | (mode == 1)))
    bad2 = ~((1 <= m) & (m <= length) & (extra <= count))
    bad = np.flatnonzero(bad1 | bad2)
    if bad.size:
        i = int(bad[0])
        if bad1[i]:
            raise CodecError(f"golomb chunk {i}: bad length/count/mode {length[i]}/{count[i]}/{mode[i]}")
        raise CodecError(f"golomb chunk {i}: bad parameter M={m[i]} or extra_bits={extra[i]}")
    table = Table(length, count, m, mode, cols["unary_bytes"], extra, body_start)
    total_len = int(length.sum())
    if total_len != d:
        raise CodecError(f"golomb chunks cover {total_len} entries, expected {d}")
    if table.end != size:
        raise CodecError(f"golomb payload is {size} bytes, its table describes {table.end}")
    return table


def _to_device(columns: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """Move several equal-length numpy columns to the device in one copy."""
    if not columns[0].size:
        return [torch.zeros(0, dtype=dtype, device=device) for _ in columns]
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(columns))).to(dtype)
    return list(stacked.to(device).unbind(0))


def _read_bits(buf: torch.Tensor, bit: torch.Tensor) -> torch.Tensor:
    """The single bit at each bit index of the byte buffer."""
    return (buf[bit >> 3].to(bit.dtype) >> (bit & 7)) & 1


def _first_flags(n: int, firsts: torch.Tensor, device: torch.device) -> torch.Tensor:
    flags = torch.zeros(n, dtype=torch.bool, device=device)
    flags[firsts] = True
    return flags


class _Checks:
    """Deferred validation: boolean tensors collected during the pass, read back with one sync."""

    def __init__(self) -> None:
        self.items: list[tuple[torch.Tensor, str]] = []

    def add(self, ok: torch.Tensor, message: str) -> None:
        # small flag vectors are kept as they are (one op fewer each); large ones are reduced now
        self.items.append((ok.reshape(-1) if ok.numel() <= 1 << 16 else ok.all().reshape(1), message))

    def raise_first(self) -> None:
        if not self.items:
            return
        flags = torch.cat([ok for ok, _ in self.items]).cpu().numpy()
        start = 0
        for (ok, message), end in zip(self.items, itertools.accumulate(ok.numel() for ok, _ in self.items)):
            if not flags[start:end].all():
                raise CodecError(message)
            start = end


def decode_fast(
    payload: torch.Tensor,
    d: int,
    device: torch.device | str = "cpu",
    values: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    chunks: slice | None = None,
    table: Table | None = None,
    buf: torch.Tensor | None = None,
    backend: str | None = None,
    deferred: list | None = None,
    staged: StagedPayload | None = None,
    plan_columns=None,
) -> torch.Tensor:
    """Decode a golomb payload on ``device``.

    With ``values`` None the result is the int8 ternary τ; with ``values`` = (v₋₁, v₀, v₊₁), a tensor of
    3 entries of any dtype (on the CPU, the fastest, or on ``device``), it is τ mapped through that table
    (e.g. θ_init + s·t already in bf16), written without an int8 intermediate. ``chunks``/``out``/``table``/
    ``buf`` let several threads decode disjoint chunk ranges into one output; ``staged`` is the payload's
    copy to the device already under way; ``plan_columns`` is the Triton plan of ``table``'s mode-0 chunks made
    earlier (golomb_triton.plan_columns, for ``values``' dtype).
    """
    device = torch.device(device)
    if table is None:
        table = read_table_fast(payload, d)  # first: it checks d against the payload before d bytes are allocated
    rng = range(len(table))[chunks] if chunks is not None else range(len(table))
    all_ids = np.arange(rng.start, rng.stop, dtype=np.int64)
    ids = all_ids[table.mode[all_ids] == 0]
    zeros_coded = all_ids[table.mode[all_ids] == 1]  # mode-1 chunks (reference per-chunk decode)
    if backend is None:
        from compeft.kernels import triton_available

        backend = "triton" if device.type == "cuda" and triton_available() else "torch"
    if values is None:
        values = torch.tensor([-1, 0, 1], dtype=torch.int8)
    triton = bool(ids.size) and backend == "triton"
    if triton:
        from compeft.kernels.golomb_triton import Plan, decode_mode0_triton, plan_columns as make_plan, raise_errors
    plan = None
    if triton and plan_columns is not None and plan_columns.dtype == values.dtype:
        # a plan made earlier goes up before the payload: both copies queue on one copy engine, and the
        # first decode pass needs both
        plan = Plan(plan_columns, device)
    if buf is None and staged is None and device.type == "cuda":
        staged = StagedPayload(payload, device)  # the main stream fills the output meanwhile
    zero = values[1].item() if values.device.type == "cpu" else values[1]  # a host scalar: the vectorized fill, exact
    main = torch.cuda.current_stream(device) if staged is not None else None
    filled = None
    if out is None:  # queued before the plan: the device fills while the host plans and the payload is copied
        out = torch.empty(d, dtype=values.dtype, device=device)
        if triton and staged is not None:
            # on a stream of its own, beside the first decode passes: only the last one needs θ_init in place
            fill = side_stream(device, "fill")
            fill.wait_stream(main)
            with torch.cuda.stream(fill):
                out.fill_(zero)
            out.record_stream(fill)
            filled = torch.cuda.Event()
            filled.record(fill)
        else:
            out.fill_(zero)
    if triton and plan is None:
        plan = Plan(make_plan(table, ids, device, values), device)  # one asynchronous upload from page-locked memory
    if plan is not None:
        values = plan.values
    elif values.device.type == "cpu" and device.type == "cuda":
        values = values.pin_memory().to(device, non_blocking=True)  # a pageable copy would wait for the device
    elif values.device.type != device.type:
        values = values.to(device)
    if staged is not None:
        buf = staged.buf
        if not triton or zeros_coded.size:
            staged.wait_all(main)
            if filled is not None:
                main.wait_event(filled)
    elif buf is None:
        buf = padded_buffer(payload, device)
    for i in zeros_coded.tolist():
        a, n = int(table.unary_off[i]), int(table.body_bytes[i])
        t = decode_chunk(table.entry(i), buf[a : a + n])
        s = int(table.start[i])
        out[s : s + t.numel()] = values[(t + 1).to(torch.int64)]
    if triton:
        decode_mode0_triton(plan, buf, out, staged, filled)
        if staged is not None:
            staged.wait_all(main)
        errors = plan.errors
        check = lambda: raise_errors(errors.cpu().numpy())  # noqa: E731  (waits for the device)
        if deferred is not None:
            deferred.append(check)
        else:
            check()
    elif ids.size:
        _decode_mode0(table, ids, buf, out, values, device)
    return out


_SIDE_STREAMS: dict = {}


def side_stream(device: torch.device, role: str = "copy") -> torch.cuda.Stream:
    """One long-lived side stream per device and role (fresh streams would each grow their own allocator pool)."""
    stream = _SIDE_STREAMS.get((device, role))
    if stream is None:
        stream = _SIDE_STREAMS[(device, role)] = torch.cuda.Stream(device)
    return stream


class StagedPayload:
    """The payload's copy to a CUDA device, on a side stream, in equal pieces of at most PIECE_BYTES with an
    event after each: a decode can start on the chunks that have arrived while the rest is still being
    copied (each piece costs the decode one more set of kernel launches)."""

    def __init__(self, payload: torch.Tensor, device: torch.device) -> None:
        self.stream = side_stream(device)
        self.stream.wait_stream(torch.cuda.current_stream(device))
        n = payload.numel()
        pieces = max(1, -(-n // PIECE_BYTES))
        self.ends = [n * (i + 1) // pieces for i in range(pieces)]
        self.events = []
        payload = payload.reshape(-1)
        with torch.cuda.stream(self.stream):
            self.buf = _padded_empty(n, device)
            start = 0
            for end in self.ends:
                self.buf[start:end].copy_(payload[start:end], non_blocking=True)
                self.events.append(torch.cuda.Event())
                self.events[-1].record(self.stream)
                start = end

    def first_pending(self) -> int:
        """The first piece still being copied (the last one when all have arrived)."""
        return next((i for i, e in enumerate(self.events) if not e.query()), len(self.events) - 1)

    def wait_piece(self, i: int) -> None:
        """Make the current stream wait for pieces 0..i."""
        torch.cuda.current_stream(self.buf.device).wait_event(self.events[i])

    def wait_all(self, stream: torch.cuda.Stream) -> None:
        """Make ``stream`` wait for the whole copy (and keep the buffer alive for it)."""
        stream.wait_event(self.events[-1])
        self.buf.record_stream(stream)


def _padded_empty(n: int, device: torch.device) -> torch.Tensor:
    """A buffer for n payload bytes followed by at least PAD zero bytes, a whole number of 4-byte words."""
    buf = torch.empty((n + PAD + 3) // 4 * 4, dtype=torch.uint8, device=device)
    buf[n:].zero_()
    return buf


def padded_buffer(payload: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The payload on ``device`` followed by at least PAD zero bytes, a whole number of 4-byte words."""
    n = payload.numel()
    buf = _padded_empty(n, device)
    buf[:n].copy_(payload.reshape(-1), non_blocking=True)
    return buf


def _decode_mode0(table: Table, ids: np.ndarray, buf: torch.Tensor, out: torch.Tensor, values: torch.Tensor, device: torch.device) -> None:
    cnt = table.count[ids]
    n = int(cnt.sum())
    unary = table.unary_bytes[ids]
    n_unary = int(unary.sum())
    unary_base = np.cumsum(unary) - unary  # byte offset of each chunk's unary plane in the gathered stream
    first = np.cumsum(cnt) - cnt
    last = first + cnt - 1
    nonempty = cnt > 0
    small = 8 * (buf.numel() + 8) < 2**31 and out.numel() < 2**31
    it = torch.int32 if small else torch.int64
    big_w = int(table.width[ids].max()) + 7 > 24
    M = table.m[ids]
    u_eff = np.where(M > 1, table.u[ids], 1 << 30)
    qmax = (table.length[ids] - 1) // M
    cols = [
        unary_base * 8,
        8 * unary,
        first,
        8 * table.low_off[ids],
        table.width[ids],
        (np.int64(1) << table.width[ids]) - 1,
        u_eff,
        M,
        qmax,
        8 * table.extra_off[ids],
        8 * table.sign_off[ids],
    ]
    (ubase_k, ubits_k, first_k, lbase_k, w_k, mask_k, u_k, m_k, qmax_k, xbase_k, sbase_k) = _to_device(cols, device, it)
    start_k, length_k, extra_k = _to_device([table.start[ids], table.length[ids], table.extra_bits[ids]], device, torch.int64)
    ne = np.flatnonzero(nonempty)
    first_ne = torch.from_numpy(first[ne]).to(device)
    last_ne = torch.from_numpy(last[ne]).to(device)
    ne_dev = torch.from_numpy(ne).to(device)
    checks = _Checks()

    # unary planes of the selected chunks, gathered into one stream
    uoff = table.unary_off[ids]
    if device.type == "cpu":
        raw = buf.numpy()
        stream = np.concatenate([raw[a : a + c] for a, c in zip(uoff.tolist(), unary.tolist()) if c]) if n_unary else np.zeros(0, np.uint8)
        stops_np = np.flatnonzero(np.unpackbits(stream, bitorder="little"))
        if stops_np.size != n:
            raise CodecError(f"golomb unary streams hold {stops_np.size} codes, the table says {n}")
        stops = torch.from_numpy(stops_np.astype(np.int32 if small else np.int64))
    else:
        shift = torch.from_numpy(uoff - unary_base).to(device)
        index = torch.arange(n_unary, device=device) + torch.repeat_interleave(shift, torch.from_numpy(unary).to(device), output_size=n_unary)
        ubytes = buf[index]
        ubits = ((ubytes.unsqueeze(1) >> torch.arange(8, device=device, dtype=torch.uint8)) & 1).reshape(-1)
        checks.add(ubits.sum(dtype=torch.int64) == n, f"golomb unary streams do not hold the {n} codes the table says")
        stops = torch.nonzero_static(ubits, size=n, fill_value=0).reshape(-1).to(it)
    if n == 0:
        checks.raise_first()
        return
    cid = torch.repeat_interleave(torch.arange(len(ids), device=device), torch.from_numpy(cnt).to(device), output_size=n)
    s = stops - ubase_k[cid]
    checks.add((s >= 0) & (s < ubits_k[cid]), "golomb chunk unary stream has a code count other than its table's")
    checks.add(s[last_ne] // 8 + 1 == ubits_k[ne_dev] // 8, "golomb chunk unary stream has trailing bytes")
    prev = torch.empty_like(s)
    prev[1:] = s[:-1]
    prev[first_ne] = -1
    q = s - prev - 1
    del prev, stops
    checks.add(q <= qmax_k[cid], "golomb chunk position is past its length")
    j = torch.arange(n, device=device, dtype=it) - first_k[cid]

    # low fields: the top b-1 bits of each truncated-binary remainder
    w = w_k[cid]
    lbit = lbase_k[cid] + j * w
    byte = (lbit >> 3).to(torch.int64)
    if big_w:
        word = buf[byte].to(torch.int64) | (buf[byte + 1].to(torch.int64) << 8) | (buf[byte + 2].to(torch.int64) << 16) | (buf[byte + 3].to(torch.int64) << 24)
        h = ((word >> (lbit & 7).to(torch.int64)) & mask_k[cid].to(torch.int64)).to(it)
    else:
        word = buf[byte].to(it) | (buf[byte + 1].to(it) << 8) | (buf[byte + 2].to(it) << 16)
        h = (word >> (lbit & 7)) & mask_k[cid]
    del word, byte, lbit

    # extra bits: one more bit for the remainders at or above u
    u = u_k[cid]
    has_extra = h >= u
    ex_incl = torch.cumsum(has_extra, 0, dtype=it)
    ex_excl = ex_incl - has_extra.to(it)
    n_extra = torch.zeros(len(ids), dtype=it, device=device)
    n_extra[ne_dev] = ex_incl[last_ne] - ex_excl[first_ne]
    checks.add(n_extra.to(torch.int64) == extra_k, "golomb chunk extra-bit count differs from its table")
    xfirst = torch.zeros(len(ids), dtype=it, device=device)
    xfirst[ne_dev] = ex_excl[first_ne]
    xbit = (xbase_k[cid] + ex_excl - xfirst[cid]).clamp_(0, 8 * buf.numel() - 1)
    e = _read_bits(buf, xbit)
    del xbit, ex_incl, ex_excl
    r = torch.where(has_extra, ((h << 1) | e) - u, h)
    del h, e, has_extra, u

    # positions: segmented cumsum of gap + 1
    g1 = (q * m_k[cid] + r + 1).to(torch.int64)
    del q, r
    g = torch.cumsum(g1, 0)
    gfirst = torch.zeros(len(ids), dtype=torch.int64, device=device)
    gfirst[ne_dev] = g[first_ne] - g1[first_ne]
    pos = g - 1 - gfirst[cid]
    del g, g1
    checks.add(pos[last_ne] < length_k[ne_dev], "golomb chunk position is past its length")
    pos += start_k[cid]
    pos.clamp_(0, out.numel() - 1)

    # padding of the low, extra and sign planes
    for base_k, nbits in ((lbase_k, torch.from_numpy(cnt * table.width[ids])), (xbase_k, torch.from_numpy(table.extra_bits[ids])), (sbase_k, torch.from_numpy(cnt))):
        nbits = nbits.to(device=device, dtype=it)
        tail = nbits & 7
        last_byte = ((base_k + nbits) >> 3).to(torch.int64)
        checks.add((tail == 0) | ((buf[last_byte].to(it) >> tail) == 0), "golomb chunk has non-zero padding bits")

    sign = _read_bits(buf, (sbase_k[cid] + j)).to(torch.bool)
    del j, cid
    out[pos] = torch.where(sign, values[0], values[2])
    checks.raise_first()


def encode_fast(signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
    """GolombCodec.encode, vectorized over chunks; the same bytes, returned on the CPU."""
    signs = signs.reshape(-1)
    device = signs.device
    d = signs.numel()
    lengths = np.asarray(chunk_lengths(d, segments), dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    n_chunks = len(lengths)
    pos = torch.nonzero(signs).reshape(-1)
    before = torch.searchsorted(pos, torch.from_numpy(starts).to(device))
    before = np.append(before.cpu().numpy().astype(np.int64), pos.numel())
    nnz = np.diff(before)
    mode = (2 * nnz > lengths).astype(np.int64)
    if mode.any():
        per_code = torch.repeat_interleave(torch.from_numpy(mode == 0).to(device), torch.from_numpy(nnz).to(device), output_size=pos.numel())
        pos = pos[per_code]
    ids = np.flatnonzero(mode == 0)
    cnt = nnz[ids]
    n = int(cnt.sum())
    M = np.asarray([golomb_parameter(int(c), int(length)) for c, length in zip(cnt.tolist(), lengths[ids].tolist())], dtype=np.int64)
    b = bit_length(M - 1)
    u = (np.int64(1) << b) - M
    w = np.maximum(b - 1, 0)
    first = np.cumsum(cnt) - cnt
    ne = np.flatnonzero(cnt > 0)
    first_ne = torch.from_numpy(first[ne]).to(device)
    last_ne = torch.from_numpy(first[ne] + cnt[ne] - 1).to(device)
    ne_dev = torch.from_numpy(ne).to(device)
    K = len(ids)
    start_k, m_k, u_k, w_k, first_k = _to_device([starts[ids], M, np.where(M > 1, u, 1 << 40), w, first], device, torch.int64)
    cid = torch.repeat_interleave(torch.arange(K, device=device), torch.from_numpy(cnt).to(device), output_size=n)
    local = pos - start_k[cid]
    prev = torch.empty_like(local)
    if n:
        prev[1:] = local[:-1]
        prev[first_ne] = -1
    gap = local - prev - 1
    del prev, local
    m = m_k[cid]
    q = torch.div(gap, m, rounding_mode="floor")
    r = gap - q * m
    del gap, m
    u_c = u_k[cid]
    has_extra = r >= u_c
    high = torch.where(has_extra, (r + u_c) >> 1, r)
    ex = ((r + u_c) & 1) * has_extra
    del r, u_c
    qsum = torch.cumsum(q + 1, 0)
    del q
    xinc = torch.cumsum(has_extra, 0)
    xexc = xinc - has_extra.to(torch.int64)
    # per-chunk totals: unary bits and extra bits (segment sums via the inclusive scans)
    per_chunk = torch.zeros(2, K, dtype=torch.int64, device=device)
    qbefore = torch.zeros(K, dtype=torch.int64, device=device)
    xbefore = torch.zeros(K, dtype=torch.int64, device=device)
    if n:
        qbefore[ne_dev] = torch.where(first_ne > 0, qsum[(first_ne - 1).clamp_(min=0)], torch.zeros_like(first_ne))
        xbefore[ne_dev] = xexc[first_ne]
        per_chunk[0, ne_dev] = qsum[last_ne] - qbefore[ne_dev]
        per_chunk[1, ne_dev] = xinc[last_ne] - xbefore[ne_dev]
    totals = per_chunk.cpu().numpy()
    unary_bytes0 = (totals[0] + 7) // 8
    extra_bits0 = totals[1]

    # every chunk's entry and body size, mode-1 chunks through the reference coder
    entries = np.zeros(n_chunks, dtype=TABLE_DTYPE)
    entries["length"] = lengths
    entries["mode"] = mode
    body = np.zeros(n_chunks, dtype=np.int64)
    entries["count"][ids] = cnt
    entries["m"][ids] = M
    entries["unary_bytes"][ids] = unary_bytes0
    entries["extra_bits"][ids] = extra_bits0
    body[ids] = unary_bytes0 + (cnt * w + 7) // 8 + (extra_bits0 + 7) // 8 + (cnt + 7) // 8
    mode1_bodies = {}
    for i in np.flatnonzero(mode == 1).tolist():
        s0 = int(starts[i])
        entry, planes = encode_chunk(signs[s0 : s0 + int(lengths[i])])
        entries[i] = (entry.length, entry.count, entry.m, entry.mode, b"\0\0\0", entry.unary_bytes, entry.extra_bits)
        mode1_bodies[i] = torch.cat([p.to(device) for p in planes])
        body[i] = mode1_bodies[i].numel()
    offsets = np.cumsum(body) - body
    total = int(body.sum())
    uoff = offsets[ids]
    loff = uoff + unary_bytes0
    xoff = loff + (cnt * w + 7) // 8
    soff = xoff + (extra_bits0 + 7) // 8
    words = torch.zeros(total // 4 + 2, dtype=torch.int64, device=device)
    if n:
        ubase_k, lbase_k, xbase_k, sbase_k = _to_device([8 * uoff, 8 * loff, 8 * xoff, 8 * soff], device, torch.int64)
        j = torch.arange(n, device=device) - first_k[cid]
        _add_fields(words, ubase_k[cid] + (qsum - qbefore[cid]) - 1, None)
        del qsum
        _add_fields(words, lbase_k[cid] + j * w_k[cid], high)
        del high
        _add_fields(words, xbase_k[cid] + xexc - xbefore[cid], ex)
        del xexc, xinc, ex, has_extra
        neg = (signs[pos] < 0).to(torch.int64)
        _add_fields(words, sbase_k[cid] + j, neg)
    data = words.to(torch.int32).view(torch.uint8)[:total]
    for i, chunk_body in mode1_bodies.items():
        data[int(offsets[i]) : int(offsets[i] + body[i])] = chunk_body
    head = HEADER.pack(MAGIC, d, n_chunks) + entries.tobytes()
    return torch.cat([torch.frombuffer(bytearray(head), dtype=torch.uint8), data.cpu()])


def _add_fields(words: torch.Tensor, bit: torch.Tensor, value: torch.Tensor | None) -> None:
    """OR value (a field of at most 32 bits, or a single 1 when None) into the 32-bit words at bit offsets."""
    index = bit >> 5
    shift = bit & 31
    if value is None:
        words.index_add_(0, index, torch.bitwise_left_shift(torch.ones_like(bit), shift))
        return
    v = torch.bitwise_left_shift(value, shift)
    words.index_add_(0, index, v & 0xFFFFFFFF)
    words.index_add_(0, index + 1, v >> 32)


def decode_parallel_cpu(payload: torch.Tensor, d: int, values: torch.Tensor | None = None, threads: int | None = None) -> torch.Tensor:
    """decode_fast on the CPU with the chunks split into contiguous groups decoded in parallel threads."""
    from concurrent.futures import ThreadPoolExecutor

    payload = payload.reshape(-1).cpu()
    table = read_table_fast(payload, d)
    buf = padded_buffer(payload, torch.device("cpu"))
    if values is None:
        out = torch.zeros(d, dtype=torch.int8)
    else:
        out = torch.empty(d, dtype=values.dtype)
        out.fill_(values[1])
    threads = threads or min(torch.get_num_threads(), 16)
    groups = split_chunks(table, threads)
    if len(groups) <= 1:
        return decode_fast(payload, d, "cpu", values, out=out, table=table, buf=buf)
    with ThreadPoolExecutor(len(groups)) as pool:
        futures = [pool.submit(decode_fast, payload, d, "cpu", values, out=out, chunks=g, table=table, buf=buf) for g in groups]
        for f in futures:
            f.result()
    return out


def split_chunks(table: Table, parts: int) -> list[slice]:
    """Contiguous chunk ranges with about equal coded bytes (≥ 1 MiB each) for parallel decoding."""
    if len(table) == 0:
        return []
    weight = np.cumsum(table.body_bytes + table.length // 64)
    parts = max(1, min(parts, len(table), int(weight[-1] >> 20) + 1))
    cuts = np.searchsorted(weight, weight[-1] * np.arange(1, parts) / parts)
    bounds = [0, *sorted(set(int(c) + 1 for c in cuts if 0 < int(c) + 1 < len(table))), len(table)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
