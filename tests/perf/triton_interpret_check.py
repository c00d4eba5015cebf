"""Run the Triton golomb decoder under Triton's CPU interpreter against the reference coder.

Executed in a subprocess by test_triton_interpret.py: TRITON_INTERPRET=1 must be set before the kernels
are defined. Exits non-zero with a message on the first difference."""

from __future__ import annotations

import os
import sys

import torch

from compeft.codecs import get_codec
from compeft.codecs.golomb_fast import decode_fast
from compeft.errors import CodecError
from tests.perf.helpers import flipped_case, random_case, random_signs

GOLOMB = get_codec("golomb")


def check_values(seeds: range) -> None:
    """Valid payloads: int8 τ and a bf16 value table (θ_init ≠ 0), equal to the signs that were encoded."""
    values = torch.tensor([0.75, 1.0, 1.25]).to(torch.bfloat16)
    for seed in seeds:
        segments, densities = random_case(seed, 200_000 if seed % 5 == 0 else 5000)
        signs = random_signs(segments, densities, seed)
        payload = GOLOMB.encode_reference(signs, segments)
        if not torch.equal(decode_fast(payload, signs.numel(), "cpu", backend="triton"), signs):
            sys.exit(f"seed {seed}: int8 decode differs from the encoded signs")
        if not torch.equal(decode_fast(payload, signs.numel(), "cpu", values, backend="triton"), values[(signs + 1).long()]):
            sys.exit(f"seed {seed}: value decode differs from the encoded signs")


def check_corrupted(seeds: range) -> None:
    """One flipped bit: the reference's CodecError or the reference's output."""
    for seed in seeds:
        signs, payload = flipped_case(seed)
        try:
            expected = GOLOMB.decode_reference(payload, signs.numel())
        except CodecError:
            try:
                decode_fast(payload, signs.numel(), "cpu", backend="triton")
            except CodecError:
                continue
            sys.exit(f"seed {seed}: the Triton decoder accepted a payload the reference refuses")
        if not torch.equal(decode_fast(payload, signs.numel(), "cpu", backend="triton"), expected):
            sys.exit(f"seed {seed}: the Triton decoder's output differs from the reference's")


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1")
    check_values(range(int(sys.argv[1])))
    check_corrupted(range(int(sys.argv[2])))
    print("ok")
