"""Pair counts over bit planes by popcount, without building dense vectors.

For a query (S_q, N_q) and candidates (S_c, N_c) the counts are common = |S_q ∩ S_c| and disagree =
|S_q ∩ S_c ∩ (N_q ⊕ N_c)| (common positions whose signs differ), plus |S| of any plane. On the CPU they run over
64-bit words in cache-sized chunks with numpy's ``bitwise_count`` (the hardware popcount instruction); on CUDA a
Triton kernel (``compeft.ops.triton_popcount``) does the same in one launch. Both give the same integers.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK_WORDS = 1 << 16  # 512 KiB per plane chunk: the working set of one step stays in L2


def _u64(words: torch.Tensor) -> np.ndarray:
    return words.contiguous().numpy().view(np.uint64)


def support_count(words: torch.Tensor) -> int:
    """Set bits in a plane (any device)."""
    if words.device.type == "cuda":
        from compeft.ops.triton_popcount import plane_count

        return plane_count(words)
    data = _u64(words)
    total, buf = 0, np.empty(min(CHUNK_WORDS, data.size), dtype=np.uint8)
    for start in range(0, data.size, CHUNK_WORDS):
        part = data[start : start + CHUNK_WORDS]
        counts = buf[: part.size]
        np.bitwise_count(part, out=counts)
        total += int(np.add.reduce(counts, dtype=np.uint64))
    return total


def _pair_cpu(qs: np.ndarray, qn: np.ndarray, cs: np.ndarray, cn: np.ndarray) -> tuple[int, int]:
    common = disagree = 0
    size = min(CHUNK_WORDS, qs.size)
    x, y, counts = np.empty(size, np.uint64), np.empty(size, np.uint64), np.empty(size, np.uint8)
    for start in range(0, qs.size, CHUNK_WORDS):
        stop = min(qs.size, start + CHUNK_WORDS)
        m = stop - start
        xs, ys, cnt = x[:m], y[:m], counts[:m]
        np.bitwise_and(qs[start:stop], cs[start:stop], out=xs)
        np.bitwise_count(xs, out=cnt)
        common += int(np.add.reduce(cnt, dtype=np.uint64))
        np.bitwise_xor(qn[start:stop], cn[start:stop], out=ys)
        np.bitwise_and(xs, ys, out=ys)
        np.bitwise_count(ys, out=cnt)
        disagree += int(np.add.reduce(cnt, dtype=np.uint64))
    return common, disagree


def pair_counts(q_support: torch.Tensor, q_negative: torch.Tensor, c_support: torch.Tensor,
                c_negative: torch.Tensor) -> tuple[int, int]:
    """(common, disagree) of two artifacts' planes (1-D, same length, same device)."""
    common, disagree = many_counts(q_support, q_negative, c_support.unsqueeze(0), c_negative.unsqueeze(0))
    return int(common[0]), int(disagree[0])


def many_counts(q_support: torch.Tensor, q_negative: torch.Tensor, c_support: torch.Tensor,
                c_negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(common, disagree) of a query against each row of candidate planes [n, words], as int64 tensors on the
    planes' device."""
    if c_support.dim() != 2 or c_support.shape != c_negative.shape or c_support.shape[1] != q_support.numel():
        raise ValueError("candidate planes must be [n, words] with the query's word count")
    if q_support.device.type == "cuda":
        from compeft.ops.triton_popcount import candidate_counts

        return candidate_counts(q_support, q_negative, c_support, c_negative)
    qs, qn = _u64(q_support), _u64(q_negative)
    rows = [_pair_cpu(qs, qn, _u64(c_support[i]), _u64(c_negative[i])) for i in range(c_support.shape[0])]
    out = torch.tensor(rows, dtype=torch.int64).reshape(-1, 2)
    return out[:, 0], out[:, 1]
