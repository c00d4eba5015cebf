"""The −0.0 entries of weights, found, set to +0.0 and put back (issue 17, in-place apply on CUDA).

The decompressed fine-tune is θ + s·t in float32 everywhere, so an untouched −0.0 weight becomes +0.0 there, while
an update of the kept entries alone would leave it. ``NegZeros.find`` flips every −0.0 of the weights to +0.0 and
records where it was (weight index << 40 | entry), at most ``capacity`` of them (the rest are left and counted);
``restore`` writes −0.0 back there. Bits are compared, so this is exact for bf16, fp16 (0x8000) and float32
(0x80000000); one read of the weights, writes only at the −0.0s.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

SPAN = 1 << 13  # entries per program: one unmasked block each, no loop-carried reduction (many loads in flight)
BLOCK = 1 << 13  # entries per load (SPAN is a multiple)
WARPS = 4
INDEX_BITS = 40  # an entry's index in its weight: the low bits of a recorded position
_INDEX_BITS = tl.constexpr(INDEX_BITS)
_INDEX_MASK = tl.constexpr((1 << INDEX_BITS) - 1)
_ITYPES = {2: (tl.int16, -(1 << 15)), 4: (tl.int32, -(1 << 31))}
_TORCH_ITYPES = {2: torch.int16, 4: torch.int32}


@triton.jit
def _flip(at, x, idx, w, found, counter, capacity, ITYPE: tl.constexpr, NEG: tl.constexpr, BLOCK: tl.constexpr):
    """The −0.0s among the loaded ``x`` (entries ``idx`` of weight ``w``, at ``at``) set to +0.0 and recorded while
    room lasts."""
    hit = x == NEG
    if tl.max(hit.to(tl.int32), 0) > 0:  # rare
        h = hit.to(tl.int64)
        slot = tl.atomic_add(counter, tl.sum(h, 0)) + tl.cumsum(h, 0) - h
        keep = hit & (slot < capacity)
        tl.store(at, tl.zeros([BLOCK], dtype=ITYPE), mask=keep)
        tl.store(found + slot, (w.to(tl.int64) << _INDEX_BITS) | idx, mask=keep)


@triton.jit(do_not_specialize=["S", "capacity", "ref_addr"])
def _find(spans, S, addrs, ref, ref_addr, found, counter, capacity, ITYPE: tl.constexpr, WIDTH: tl.constexpr,
          NEG: tl.constexpr, ALIGNED: tl.constexpr, FULL: tl.constexpr, SPAN: tl.constexpr, BLOCK: tl.constexpr):
    """One program per span (weight, start, stop) of one width: −0.0s set to +0.0, recorded while room lasts.
    Weights are addressed from ``ref`` (one of them, at address ``ref_addr``), not through integer-to-pointer casts,
    which lose the alignment. FULL: every span holds SPAN entries, read in unmasked blocks; ALIGNED: every weight
    starts on 16 bytes. Both together let the loads be vectorized."""
    s = tl.program_id(0)
    w = tl.load(spans + s)
    lo = tl.load(spans + S + s)
    first = (tl.load(addrs + w) - ref_addr) // WIDTH  # the weight's first entry, counted from ref
    if FULL:
        for q in range(0, SPAN // BLOCK):
            i = lo + q * BLOCK
            at = first + i
            if ALIGNED:
                at = tl.multiple_of(at, 16 // WIDTH)
            at = ref + at + tl.arange(0, BLOCK)
            _flip(at, tl.load(at), i + tl.arange(0, BLOCK).to(tl.int64), w, found, counter, capacity, ITYPE, NEG, BLOCK)
    else:
        stop = tl.load(spans + 2 * S + s)
        for i in range(lo, stop, BLOCK):
            at = ref + first + i + tl.arange(0, BLOCK)
            idx = i + tl.arange(0, BLOCK).to(tl.int64)
            inside = idx < stop
            x = tl.load(at, mask=inside, other=0)
            _flip(at, tl.where(inside, x, 0), idx, w, found, counter, capacity, ITYPE, NEG, BLOCK)


@triton.jit(do_not_specialize=["n"])
def _restore(found, n, addrs, widths, WIDTH: tl.constexpr, ITYPE: tl.constexpr, NEG: tl.constexpr,
             BLOCK: tl.constexpr):
    """−0.0 written back at the recorded positions of the weights of one width."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    code = tl.load(found + i, mask=i < n, other=0)
    w = code >> _INDEX_BITS
    mine = (i < n) & (tl.load(widths + w, mask=i < n, other=0) == WIDTH)
    at = tl.load(addrs + w, mask=mine, other=0).to(tl.pointer_type(ITYPE)) + (code & _INDEX_MASK)
    tl.store(at, tl.full([BLOCK], NEG, ITYPE), mask=mine)


class NegZeros:
    """The spans of weights of the given (numel, element size) list, planned once on ``device``."""

    def __init__(self, shapes: list[tuple[int, int]], device: torch.device, span: int = SPAN, block: int = BLOCK,
                 warps: int = WARPS) -> None:
        self.device, self.span, self.block, self.warps = device, span, block, warps
        widths = np.array([w for _, w in shapes], dtype=np.int64)
        self.widths = torch.from_numpy(widths).to(device)
        self.spans = {}
        for width in sorted(set(widths.tolist())):  # full spans (unmasked loads) and the weights' last partial ones
            rows = [(i, a, min(a + span, n)) for i, (n, w) in enumerate(shapes) if w == width for a in range(0, n, span)]
            for full in (True, False):
                mine = [r for r in rows if (r[2] - r[1] == span) == full]
                if mine:
                    table = np.array(mine, dtype=np.int64).T.reshape(-1)
                    self.spans[width, full] = (torch.from_numpy(table.copy()).to(device), len(mine))
        self._addrs: tuple | None = None
        self.addrs = torch.zeros(max(len(shapes), 1), dtype=torch.int64, device=device)

    def _point(self, weights: list[torch.Tensor]) -> torch.Tensor:
        ptrs = tuple(w.data_ptr() for w in weights)
        if ptrs != self._addrs and ptrs:
            host = torch.tensor(ptrs, dtype=torch.int64)
            self.addrs[: len(ptrs)].copy_(host.pin_memory() if self.device.type == "cuda" else host, non_blocking=True)
            self._addrs = ptrs
        return self.addrs

    def find(self, weights: list[torch.Tensor], found: torch.Tensor, counter: torch.Tensor, hint: bool = True) -> None:
        """Every −0.0 of ``weights`` set to +0.0, the first ``found.numel()`` of them recorded in ``found`` and all
        counted in ``counter`` (int64, zeroed; queued on the current stream: past the capacity the rest stay −0.0).
        ``hint``: alignment hints where the weights allow (bench.fullmodel_bench compares the variants, with the
        span, block and warps of the constructor)."""
        addrs = self._point(weights)
        aligned = hint and all(p % 16 == 0 for p in self._addrs or ())
        whole = self.span % self.block == 0
        for (width, full), (spans, n) in self.spans.items():
            itype, neg = _ITYPES[width]
            ref = next(w for w in weights if w.element_size() == width).view(_TORCH_ITYPES[width])
            _find[(n,)](spans, n, addrs, ref, ref.data_ptr(), found, counter, found.numel(), ITYPE=itype, WIDTH=width,
                        NEG=neg, ALIGNED=aligned and whole, FULL=full and whole, SPAN=self.span, BLOCK=self.block,
                        num_warps=self.warps)

    def restore(self, weights: list[torch.Tensor], found: torch.Tensor, n: int) -> None:
        """−0.0 written back at the first ``n`` recorded positions (queued)."""
        if n <= 0:
            return
        addrs = self._point(weights)
        for width in sorted({width for width, _ in self.spans}):
            itype, neg = _ITYPES[width]
            _restore[(triton.cdiv(n, BLOCK),)](found, n, addrs, self.widths, WIDTH=width, ITYPE=itype, NEG=neg,
                                                BLOCK=BLOCK)
