"""s·t added in place to weights at the decoded positions (issue 17): the golomb Triton decoder's passes, with a
last pass that reads each kept entry's weight, adds ±s in float32, rounds once and writes it back, instead of
writing a dense output. No dense τ or scratch of the model's size; one set of launches for the whole residual.

Each planned chunk lies inside one weight (the encoder cuts chunks at tensor boundaries); the device table ``dest``
gives, per chunk, the byte address of its first entry in that weight, where its kept entries' previous values go
in the pristine buffer (bytes, ordered by chunk then code) and the weight's kind (bf16, fp16, float32). The
arithmetic is reconstruct's: float32(w) ± s rounded to nearest-even once (bf16 rounded with integer operations,
which Triton's CPU interpreter, whose float32 → bf16 conversion truncates, runs the same as the GPU). Mode-1 chunks
(more than half kept; rare) are decoded on the host once and left to the caller (``InPlace.dense``).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from compeft.codecs.golomb.numpy_backend import decode_chunk_host
from compeft.codecs.golomb.triton_backend import (
    CODE_BLOCK,
    CODE_WARPS,
    Plan,
    _code_head,
    _code_tail,
    decode_mode0,
    plan_columns,
    raise_errors,
)
from compeft.codecs.staging import padded_buffer

CHECK, ADD, ADD_SAVE, SUBTRACT, RESTORE = range(5)  # what the last pass does at each kept entry
KINDS = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}  # the weight dtypes the last pass handles
ADDR, SAVED, KIND = range(3)  # rows of the dest table
_ADDR, _SAVED, _KIND = tl.constexpr(ADDR), tl.constexpr(SAVED), tl.constexpr(KIND)
_CHECK, _ADD, _ADD_SAVE, _SUBTRACT, _RESTORE = (tl.constexpr(i) for i in range(5))


@triton.jit
def _widen(bits, KIND: tl.constexpr):
    """float32 of the weights' bits (int16 for bf16/fp16, int32 for float32): exact."""
    if KIND == 0:
        return ((bits.to(tl.int32) & 0xFFFF) << 16).to(tl.float32, bitcast=True)
    elif KIND == 1:
        return bits.to(tl.float16, bitcast=True).to(tl.float32)
    else:
        return bits.to(tl.float32, bitcast=True)


@triton.jit
def _narrow(f, KIND: tl.constexpr):
    """The bits of float32 ``f`` rounded to nearest-even in the weights' dtype (NaN: bf16's 0x7FC0)."""
    if KIND == 0:
        u = f.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return tl.where(f != f, 0x7FC0, r).to(tl.int16)
    elif KIND == 1:
        return f.to(tl.float16).to(tl.int16, bitcast=True)
    else:
        return f.to(tl.int32, bitcast=True)


@triton.jit(do_not_specialize=["K", "base", "saved"])
def _apply_pass(buf, words, plan, K, code_chunk, tile_xoff, tile_roff, err, stops, values, dest, saved, base,
                ITYPE: tl.constexpr, KIND: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr):
    """The last pass on the chunks of one weight kind: w ← dtype(float32(w) ± s) at each decoded position (MODE
    ADD, ADD_SAVE also keeping w's bits; SUBTRACT: − instead), the kept bits written back (RESTORE), or nothing
    but the checks (CHECK)."""
    t = base + tl.program_id(0)
    k, j, jj, valid, has_extra, r0 = _code_head(words, plan, K, code_chunk, t, BLOCK)
    p, ok, neg = _code_tail(buf, plan, K, k, t, j, jj, valid, has_extra, r0, tile_xoff, tile_roff, err, stops)
    if MODE != _CHECK:
        ok = ok & ((jj * 0 + tl.load(dest + _KIND * K + k)) == KIND)  # a vector: the interpreter's & wants one
        w_at = tl.load(dest + _ADDR * K + k).to(tl.pointer_type(ITYPE)) + p
        kept_at = (saved + tl.load(dest + _SAVED * K + k)).to(tl.pointer_type(ITYPE)) + jj
        if MODE == _RESTORE:
            tl.store(w_at, tl.load(kept_at, mask=ok, other=0), mask=ok)
        else:
            bits = tl.load(w_at, mask=ok, other=0)
            if MODE == _ADD_SAVE:
                tl.store(kept_at, bits, mask=ok)
            v = tl.where(neg == 1, tl.load(values), tl.load(values + 2))
            if MODE == _SUBTRACT:
                v = -v
            tl.store(w_at, _narrow(_widen(bits, KIND) + v, KIND), mask=ok)


_ITYPES = {0: tl.int16, 1: tl.int16, 2: tl.int32}


class InPlace:
    """The golomb chunks covering ``spans`` (τ offset, entries, dtype of each weight, in τ order; dtypes among
    KINDS) planned once on ``device`` with the payload resident there; ``run`` adds s·t (``values``: −s, 0, s in
    float32) in place to the weights given in the same order. ``saved_bytes``: the pristine buffer's size."""

    def __init__(self, plan, payload: torch.Tensor, spans: list[tuple[int, int, torch.dtype]], values: torch.Tensor,
                 device: torch.device) -> None:
        table = plan.table
        offsets = np.array([s[0] for s in spans], dtype=np.int64)
        numels = np.array([s[1] for s in spans], dtype=np.int64)
        span_of = np.searchsorted(offsets, table.start, side="right") - 1  # chunks never straddle two weights
        at = np.maximum(span_of, 0)
        chunks = np.flatnonzero((span_of >= 0) & (table.start < offsets[at] + numels[at])) if len(spans) else \
            np.zeros(0, dtype=np.int64)
        span_of = span_of[chunks]
        mode0 = table.mode[chunks] == 0
        self.ids, self.span = chunks[mode0], span_of[mode0]
        itemsize = np.array([torch.empty((), dtype=s[2]).element_size() for s in spans], dtype=np.int64)
        kinds = np.array([KINDS[s[2]] for s in spans], dtype=np.int64)
        self.rel = (table.start[self.ids] - offsets[self.span]) * itemsize[self.span]  # byte offset in the weight
        room = (table.count[self.ids] * itemsize[self.span] + 7) // 8 * 8  # aligned for every kind
        self.saved_bytes = int(room.sum())
        self.kinds = sorted(set(kinds[self.span].tolist()))
        self.device, self.warps = device, CODE_WARPS  # the last pass's warps (bench.fullmodel_bench compares them)
        self.cols = plan_columns(table, self.ids, device, values)
        self.plan = Plan(self.cols, device)
        self.buf = padded_buffer(payload, device)
        rows = np.zeros((3, len(self.ids)), dtype=np.int64)
        rows[SAVED], rows[KIND] = np.cumsum(room) - room, kinds[self.span]
        self.rows = rows
        self.dest = torch.from_numpy(rows.reshape(-1).copy()).to(device)
        self._addresses: tuple | None = None
        # mode-1 chunks, left to the caller: (span, first entry in the weight, s·t in float32 on the device)
        self.dense = [(s, int(table.start[i] - offsets[s]), decode_chunk_host(table, i, payload, values).to(device))
                      for i, s in zip(chunks[~mode0].tolist(), span_of[~mode0].tolist())]

    def _point(self, weights: list[torch.Tensor]) -> None:
        """The dest table's addresses for these weights (uploaded when they moved)."""
        ptrs = tuple(w.data_ptr() for w in weights)
        if ptrs != self._addresses and len(self.ids):
            self.rows[ADDR] = np.array(ptrs, dtype=np.int64)[self.span] + self.rel
            host = torch.from_numpy(self.rows[ADDR].copy())
            self.dest[: len(self.ids)].copy_(host.pin_memory() if self.device.type == "cuda" else host, non_blocking=True)
        self._addresses = ptrs

    def run(self, weights: list[torch.Tensor], mode: int, saved: torch.Tensor | None = None) -> torch.Tensor:
        """The last pass in ``mode`` over the weights' mode-0 chunks, queued; ``saved``: the pristine buffer
        (ADD_SAVE writes it, RESTORE reads it). Returns the error flags (a device tensor, read once by the caller;
        see ``check``)."""
        if mode != CHECK:
            self._point(weights)
        self.plan.errors.zero_()
        base = saved.data_ptr() if saved is not None else 0

        def last(buf, words, plan, K, code_chunk, tile_xoff, tile_roff, err, stops, values, t0, tiles):
            for kind in self.kinds if mode != CHECK else [0]:
                _apply_pass[(tiles,)](buf, words, plan, K, code_chunk, tile_xoff, tile_roff, err, stops, values, self.dest,
                                      base, t0, ITYPE=_ITYPES[kind], KIND=kind, MODE=mode, BLOCK=CODE_BLOCK,
                                      num_warps=self.warps)

        if self.cols.K:
            decode_mode0(self.plan, self.buf, None, last=last)
        return self.plan.errors

    @staticmethod
    def raise_flags(flags: np.ndarray) -> None:
        """Raise CodecError for the first error flag set in ``flags`` (``run``'s, read back)."""
        raise_errors(flags)

    def check(self) -> None:
        """Decode once without writing and raise CodecError on the first error flag (a payload checked here
        decodes the same every time)."""
        raise_errors(self.run([], CHECK).cpu().numpy())

