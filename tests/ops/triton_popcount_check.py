"""Run the Triton popcount kernels under Triton's CPU interpreter against the numpy path (executed in a subprocess
by test_triton_popcount.py: TRITON_INTERPRET=1 must be set before the kernels are defined)."""

from __future__ import annotations

import sys

import torch

from compeft.ops import popcount
from compeft.ops.planes import pack_words
from compeft.ops.triton_popcount import BLOCK, candidate_counts, pack_ternary, plane_count


def main() -> None:
    g = torch.Generator().manual_seed(0)
    for d in (1, 64, 64 * BLOCK + 77, 3 * 64 * BLOCK):
        n = 3
        q = torch.randint(-1, 2, (d,), generator=g, dtype=torch.int8)
        q[: min(d, 64)] = -1  # words with the top bit set (negative int64)
        cands = torch.randint(-1, 2, (n, d), generator=g, dtype=torch.int8)
        cs = torch.stack([pack_words(c != 0) for c in cands])
        cn = torch.stack([pack_words(c < 0) for c in cands])
        qs, qn = pack_words(q != 0), pack_words(q < 0)
        common, disagree = candidate_counts(qs, qn, cs, cn)
        ref_common, ref_disagree = popcount.many_counts(qs, qn, cs, cn)
        if not (torch.equal(common, ref_common) and torch.equal(disagree, ref_disagree)):
            sys.exit(f"d={d}: Triton counts {common.tolist()}/{disagree.tolist()} differ from numpy's "
                     f"{ref_common.tolist()}/{ref_disagree.tolist()}")
        if plane_count(qs) != popcount.support_count(qs):
            sys.exit(f"d={d}: Triton plane count differs")
        if d < 10**6:
            ps, pn = pack_ternary(q)
            if not (torch.equal(ps, qs) and torch.equal(pn, qn)):
                sys.exit(f"d={d}: Triton packing differs from pack_words")
    print("ok")


if __name__ == "__main__":
    main()
