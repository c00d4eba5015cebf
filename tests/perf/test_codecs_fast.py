"""The fast golomb/bitmask paths give the reference bytes and values, and refuse what the reference refuses."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compeft.codecs import get_codec
from compeft.codecs.bits import pack_bits, unpack_bits
from compeft.codecs.golomb import numpy_backend, torch_backend
from compeft.codecs.golomb.format import MAX_CHUNK
from compeft.errors import CodecError
from tests.golomb_reference import decode_reference, encode_reference
from tests.perf.helpers import decode_with, random_case, random_signs

GOLOMB = get_codec("golomb")
BITMASK = get_codec("bitmask")


@pytest.mark.parametrize("seed", range(40))
def test_encoders_match_reference(seed):
    segments, densities = random_case(seed)
    signs = random_signs(segments, densities, seed)
    ref = encode_reference(signs, segments)
    assert torch.equal(numpy_backend.encode(signs, segments), ref)
    assert torch.equal(numpy_backend.encode(signs, segments, threads=3), ref)
    assert torch.equal(torch_backend.encode(signs, segments), ref)
    assert torch.equal(GOLOMB.encode(signs, segments), ref)


@pytest.mark.parametrize("seed", range(40))
def test_decoders_match_reference(seed):
    segments, densities = random_case(seed)
    signs = random_signs(segments, densities, seed)
    payload = encode_reference(signs, segments)
    d = signs.numel()
    assert torch.equal(decode_reference(payload, d), signs)
    assert torch.equal(decode_with(payload, d, "numpy"), signs)
    assert torch.equal(decode_with(payload, d, "numpy", threads=3), signs)
    assert torch.equal(decode_with(payload, d, "torch"), signs)
    values = torch.tensor([-0.375, 0.0, 0.375]).to(torch.bfloat16)
    expected = values[(signs + 1).long()]
    assert torch.equal(decode_with(payload, d, "numpy", values=values), expected)
    assert torch.equal(decode_with(payload, d, "torch", values=values), expected)


def test_long_segments_split_and_empty_input():
    segments = [MAX_CHUNK + 17, 3, 2 * MAX_CHUNK]
    signs = random_signs(segments, [0.02, 0.6, 0.3], 7)
    ref = encode_reference(signs, segments)
    assert torch.equal(GOLOMB.encode(signs, segments), ref)
    assert torch.equal(torch_backend.encode(signs, segments), ref)
    assert torch.equal(GOLOMB.decode(ref, signs.numel()), signs)
    assert torch.equal(decode_with(ref, signs.numel(), "torch"), signs)
    empty = torch.zeros(0, dtype=torch.int8)
    assert torch.equal(GOLOMB.encode(empty), encode_reference(empty))
    assert GOLOMB.decode(GOLOMB.encode(empty), 0).numel() == 0


def outcome(fn):
    try:
        return ("ok", fn())
    except CodecError:
        return ("error", None)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), where=st.floats(0, 1), bit=st.integers(0, 7), cut=st.booleans())
def test_corrupted_payloads_refused_like_reference(seed, where, bit, cut):
    segments, densities = random_case(seed, 600)
    signs = random_signs(segments, densities, seed)
    payload = encode_reference(signs, segments).clone()
    i = min(payload.numel() - 1, int(where * payload.numel()))
    if cut:
        payload = payload[:i]
    else:
        payload[i] ^= 1 << bit
    d = signs.numel()
    ref = outcome(lambda: decode_reference(payload, d))
    for fast in (lambda: decode_with(payload, d, "numpy"), lambda: decode_with(payload, d, "torch")):
        got = outcome(fast)
        assert got[0] == ref[0]
        if ref[0] == "ok":
            assert torch.equal(got[1], ref[1])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 4099])
def test_bit_packing_numpy_matches_torch_formula(n):
    g = torch.Generator().manual_seed(n)
    bits = torch.randint(0, 2, (n,), generator=g).to(torch.uint8)
    weights = 1 << torch.arange(8, dtype=torch.int32)
    padded = torch.zeros((n + 7) // 8 * 8, dtype=torch.int32)
    padded[:n] = bits.to(torch.int32)
    expected = (padded.view(-1, 8) * weights).sum(1).to(torch.uint8)
    assert torch.equal(pack_bits(bits), expected)
    assert torch.equal(pack_bits(bits.bool()), expected)
    assert torch.equal(unpack_bits(expected, n), bits)


@pytest.mark.parametrize("seed", range(10))
def test_bitmask_values_match_decode(seed):
    segments, densities = random_case(seed)
    signs = random_signs(segments, densities, seed)
    payload = BITMASK.encode(signs, segments)
    d = signs.numel()
    assert torch.equal(BITMASK.decode(payload, d), signs)
    values = torch.tensor([0.5, 1.0, 1.5]).to(torch.float16)
    assert torch.equal(BITMASK.decode(payload, d, "cpu", values), values[(signs + 1).long()])
