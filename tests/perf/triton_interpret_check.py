"""Run the Triton golomb decoder under Triton's CPU interpreter against the reference coder.

Executed in a subprocess by test_triton_interpret.py: TRITON_INTERPRET=1 must be set before the kernels
are defined. Exits non-zero with a message on the first difference."""

from __future__ import annotations

import os
import sys

import torch

from compeft.codecs.golomb.format import ENTRY, HEADER, read_table
from compeft.codecs.staging import padded_buffer
from compeft.errors import CodecError
from tests.golomb_reference import decode_reference, encode_reference
from tests.perf.helpers import decode_with, flipped_case, random_case, random_signs


def check_values(seeds: range) -> None:
    """Valid payloads: int8 τ and a bf16 value table (θ_init ≠ 0), equal to the signs that were encoded."""
    values = torch.tensor([0.75, 1.0, 1.25]).to(torch.bfloat16)
    for seed in seeds:
        segments, densities = random_case(seed, 200_000 if seed % 5 == 0 else 5000)
        signs = random_signs(segments, densities, seed)
        payload = encode_reference(signs, segments)
        if not torch.equal(decode_with(payload, signs.numel(), "triton"), signs):
            sys.exit(f"seed {seed}: int8 decode differs from the encoded signs")
        if not torch.equal(decode_with(payload, signs.numel(), "triton", values=values), values[(signs + 1).long()]):
            sys.exit(f"seed {seed}: value decode differs from the encoded signs")


def check_corrupted(seeds: range) -> None:
    """One flipped bit: the reference's CodecError or the reference's output."""
    for seed in seeds:
        signs, payload = flipped_case(seed)
        try:
            expected = decode_reference(payload, signs.numel())
        except CodecError:
            try:
                decode_with(payload, signs.numel(), "triton")
            except CodecError:
                continue
            sys.exit(f"seed {seed}: the Triton decoder accepted a payload the reference refuses")
        if not torch.equal(decode_with(payload, signs.numel(), "triton"), expected):
            sys.exit(f"seed {seed}: the Triton decoder's output differs from the reference's")


class PiecesOnCpu:
    """StagedPayload's interface without a device: the piece ends, and waits that return at once."""

    def __init__(self, ends: list[int]) -> None:
        self.ends = ends

    def first_pending(self) -> int:
        return 0

    def wait_piece(self, i: int) -> None:
        pass


def mode0_decode(payload: torch.Tensor, d: int, staged) -> tuple[torch.Tensor, list[int]]:
    """triton_backend.decode_mode0's output (mode-1 chunks left at zero) and error flags, in groups when ``staged``."""
    from compeft.codecs.golomb.triton_backend import Plan, decode_mode0, plan_columns

    table = read_table(payload, d)
    ids = (table.mode == 0).nonzero()[0]
    values = torch.tensor([-1, 0, 1], dtype=torch.int8)
    plan = Plan(plan_columns(table, ids, torch.device("cpu"), values), torch.device("cpu"))
    out = torch.zeros(d, dtype=torch.int8)
    decode_mode0(plan, padded_buffer(payload, torch.device("cpu")), out, staged)
    return out, plan.errors.tolist()


def check_groups(seeds: range) -> None:
    """Chunks decoded in groups (as when the payload is copied in pieces): the same first error flag (the one
    raised), and on valid payloads the same output (later flags and the output of a corrupted payload may
    come from unwritten scratch)."""
    for seed in seeds:
        signs, payload = flipped_case(seed) if seed % 2 else (None, None)
        if payload is None:
            segments, densities = random_case(seed, 20_000)
            signs = random_signs(segments, densities, seed)
            payload = encode_reference(signs, segments)
        try:
            read_table(payload, signs.numel())
        except CodecError:
            continue
        g = torch.Generator().manual_seed(seed)
        n = payload.numel()
        ends = sorted({int(x) for x in torch.randint(1, n, (3,), generator=g)}) + [n]
        (grouped, flags), (whole, expected) = (mode0_decode(payload, signs.numel(), s) for s in (PiecesOnCpu(ends), None))
        first = [next((i for i, f in enumerate(x) if f), None) for x in (flags, expected)]
        if first[0] != first[1] or (first[1] is None and not torch.equal(grouped, whole)):
            sys.exit(f"seed {seed}: decoding in groups (piece ends {ends}) differs")


def outcome(payload: torch.Tensor, d: int, backend: str) -> str:
    try:
        decode_with(payload, d, backend)
    except CodecError as err:
        return str(err)
    return "accepted"


def targeted(payload: torch.Tensor, d: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    """Corruptions one flipped bit rarely makes: a zero byte after a chunk's unary plane (with its table
    entry grown to match), and a set padding bit after a chunk's sign plane."""
    table = read_table(payload, d)
    chunks = [i for i in range(len(table)) if table.mode[i] == 0 and table.count[i] > 0]
    if not chunks:
        return []
    i = chunks[seed % len(chunks)]
    raw = bytearray(payload.numpy().tobytes())
    entry = HEADER.size + i * ENTRY.size
    grown = bytearray(raw)
    grown[entry + 16 : entry + 20] = int(table.unary_bytes[i] + 1).to_bytes(4, "little")
    end = int(table.unary_off[i] + table.unary_bytes[i])
    grown[end:end] = b"\0"
    cases = [("golomb chunk unary stream has trailing bytes", torch.frombuffer(grown, dtype=torch.uint8))]
    nz = int(table.nonzeros[i])
    if nz % 8:
        raw[int(table.sign_off[i]) + nz // 8] |= 0x80
        cases.append(("golomb chunk has non-zero padding bits", torch.frombuffer(raw, dtype=torch.uint8)))
    return cases


def check_targeted(seeds: range) -> None:
    """Targeted corruptions: the reference refuses them, and both fast backends name the same check."""
    for seed in seeds:
        segments, densities = random_case(seed, 3000)
        signs = random_signs(segments, densities, seed)
        payload = encode_reference(signs, segments)
        for message, bad in targeted(payload, signs.numel(), seed):
            try:
                decode_reference(bad, signs.numel())
                sys.exit(f"seed {seed}: the reference accepted a corruption ({message})")
            except CodecError:
                pass
            got = {backend: outcome(bad, signs.numel(), backend) for backend in ("triton", "torch")}
            if set(got.values()) != {message}:
                sys.exit(f"seed {seed}: expected {message!r}, got {got}")


def check_out_of_proportion() -> None:
    """Payloads declaring more entries or coded positions than their bytes allow (issue 15 item 3) are refused by
    the Triton and torch paths with the reference's checks, before d entries are allocated; a valid all-zero
    payload of 3 chunks decodes to zeros."""
    import numpy as np

    from compeft.codecs.golomb.format import MAX_CHUNK, TABLE_DTYPE, header_bytes

    def zeros(chunks: int, declared: int, count: int = 0) -> torch.Tensor:
        table = np.zeros(chunks, dtype=TABLE_DTYPE)
        table["length"], table["m"], table["count"] = MAX_CHUNK, 1, count
        return torch.frombuffer(bytearray(header_bytes(declared, table)), dtype=torch.uint8)

    for backend in ("triton", "torch"):
        if not (decode_with(zeros(3, 3 * MAX_CHUNK), 3 * MAX_CHUNK, backend) == 0).all():
            sys.exit(f"{backend}: an all-zero payload did not decode to zeros")
        for payload, d, message in ((zeros(1, 1 << 40), 1 << 40, "cannot describe"), (zeros(1, MAX_CHUNK, 9), MAX_CHUNK, "unary bytes")):
            got = outcome(payload, d, backend)
            if message not in got:
                sys.exit(f"{backend}: expected {message!r}, got {got!r}")


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1")
    check_values(range(int(sys.argv[1])))
    check_corrupted(range(int(sys.argv[2])))
    check_targeted(range(int(sys.argv[1])))
    check_groups(range(int(sys.argv[1]) + 10))
    check_out_of_proportion()
    print("ok")
