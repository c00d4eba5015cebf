"""The CUDA popcount kernels: (common, disagree) of a query against n candidate planes in one launch, and the
set bits of a plane. On the GPU the popcount is the hardware ``popc`` (libdevice ``__nv_popcll``); under Triton's
CPU interpreter (TRITON_INTERPRET=1, CI), which has no libdevice, the same kernel counts with the SWAR bit trick.
Both give the integers of the numpy path (``compeft.ops.popcount``)."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

BLOCK = 4096  # words per program: 32 KiB of each plane
MAX_ROWS = 65535  # CUDA's grid limit on axis 1
_HARDWARE = os.environ.get("TRITON_INTERPRET", "0") in ("", "0")

if _HARDWARE:
    from triton.language.extra import libdevice
else:  # the interpreter never calls it (HW is False there)
    libdevice = None


@triton.jit
def _popcount(x, HW: tl.constexpr):
    """Set bits of each int64 word (arithmetic shifts are safe: every mask clears the bits they fill)."""
    if HW:
        return libdevice.popc(x).to(tl.int64)
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


@triton.jit
def _pair_kernel(qs_ptr, qn_ptr, cs_ptr, cn_ptr, out_ptr, words, stride, BLOCK: tl.constexpr, HW: tl.constexpr):
    block = tl.program_id(0)
    row = tl.program_id(1).to(tl.int64)
    offs = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < words
    qs = tl.load(qs_ptr + offs, mask=mask, other=0)
    qn = tl.load(qn_ptr + offs, mask=mask, other=0)
    cs = tl.load(cs_ptr + row * stride + offs, mask=mask, other=0)
    cn = tl.load(cn_ptr + row * stride + offs, mask=mask, other=0)
    both = qs & cs
    tl.atomic_add(out_ptr + 2 * row, tl.sum(_popcount(both, HW), axis=0))
    tl.atomic_add(out_ptr + 2 * row + 1, tl.sum(_popcount(both & (qn ^ cn), HW), axis=0))


@triton.jit
def _count_kernel(ptr, out_ptr, words, BLOCK: tl.constexpr, HW: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(ptr + offs, mask=offs < words, other=0)
    tl.atomic_add(out_ptr, tl.sum(_popcount(x, HW), axis=0))


@triton.jit
def _pack_kernel(t_ptr, s_ptr, n_ptr, d, WORDS: tl.constexpr):
    """Support and negative words of WORDS·64 int8 ternary entries (bit j of a word = entry j of its 64)."""
    word = tl.program_id(0).to(tl.int64) * WORDS + tl.arange(0, WORDS)
    lane = tl.arange(0, 64)
    idx = word[:, None] * 64 + lane[None, :]
    t = tl.load(t_ptr + idx, mask=idx < d, other=0)
    bit = tl.full((1, 64), 1, tl.int64) << lane[None, :].to(tl.int64)
    tl.store(s_ptr + word, tl.sum(tl.where(t != 0, bit, 0), axis=1))
    tl.store(n_ptr + word, tl.sum(tl.where(t < 0, bit, 0), axis=1))


PACK_WORDS = 64


def pack_ternary(signs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(support, negative) int64 words of an int8 ternary vector, in one pass (the planes' layout)."""
    d = signs.numel()
    words = (d + 63) // 64
    padded = triton.cdiv(words, PACK_WORDS) * PACK_WORDS
    support = torch.empty(padded, dtype=torch.int64, device=signs.device)
    negative = torch.empty(padded, dtype=torch.int64, device=signs.device)
    _pack_kernel[(padded // PACK_WORDS,)](signs.reshape(-1), support, negative, d, WORDS=PACK_WORDS, num_warps=4)
    return support[:words], negative[:words]


def candidate_counts(q_support: torch.Tensor, q_negative: torch.Tensor, c_support: torch.Tensor,
                     c_negative: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(common[n], disagree[n]) of the query against every candidate row, int64 on the planes' device (not
    synchronized: read them when needed). ``out``: an int64 [n, 2] buffer to reuse (zeroed here)."""
    n, words = c_support.shape
    if c_support.stride(1) != 1 or c_negative.stride() != c_support.stride():
        c_support, c_negative = c_support.contiguous(), c_negative.contiguous()
    q_support, q_negative = q_support.contiguous(), q_negative.contiguous()
    out = torch.zeros(n, 2, dtype=torch.int64, device=q_support.device) if out is None else out.zero_()
    blocks = triton.cdiv(words, BLOCK)
    for start in range(0, n, MAX_ROWS):
        rows = min(MAX_ROWS, n - start)
        _pair_kernel[(blocks, rows)](q_support, q_negative, c_support[start:], c_negative[start:], out[start:], words,
                                     c_support.stride(0), BLOCK=BLOCK, HW=_HARDWARE, num_warps=8)
    return out[:, 0], out[:, 1]


def count_into(words: torch.Tensor, out: torch.Tensor) -> None:
    """Add the set bits of one plane to the int64 scalar ``out`` on its device (no synchronization)."""
    words = words.contiguous()
    _count_kernel[(triton.cdiv(words.numel(), BLOCK),)](words, out, words.numel(), BLOCK=BLOCK, HW=_HARDWARE,
                                                         num_warps=8)


def plane_count(words: torch.Tensor) -> int:
    """Set bits of one plane (synchronizes)."""
    out = torch.zeros(1, dtype=torch.int64, device=words.device)
    count_into(words, out)
    return int(out.item())
