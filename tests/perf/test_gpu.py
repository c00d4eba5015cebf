"""GPU paths: the same bytes, thresholds and tensors as the CPU paths (run on the lent GPU; skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir
from compeft import api
from compeft.codecs import get_codec
from compeft.codecs.golomb import torch_backend
from compeft.errors import CodecError
from compeft.fastload import load_fast
from compeft.sparsify import ternarize
from tests.golomb_reference import decode_reference, encode_reference
from tests.perf.helpers import (
    decode_with,
    flipped_case,
    payload_span,
    random_case,
    random_signs,
    records_from,
)

pytestmark = pytest.mark.gpu
GOLOMB = get_codec("golomb")


@pytest.mark.parametrize("seed", range(25))
def test_gpu_golomb_bytes_and_values_equal_cpu(seed):
    segments, densities = random_case(seed, 200_000 if seed % 5 == 0 else 5000)
    signs = random_signs(segments, densities, seed)
    ref = encode_reference(signs, segments)
    assert torch.equal(torch_backend.encode(signs.cuda(), segments), ref)
    assert torch.equal(GOLOMB.encode(signs.cuda(), segments), ref)
    assert torch.equal(GOLOMB.decode(ref, signs.numel(), "cuda").cpu(), signs)
    values = torch.tensor([-0.25, 0.0, 0.25], device="cuda").to(torch.bfloat16)
    assert torch.equal(GOLOMB.decode(ref, signs.numel(), "cuda", values).cpu(), values.cpu()[(signs + 1).long()])


@pytest.mark.parametrize("seed", range(60))
def test_gpu_decoder_refuses_what_cpu_refuses(seed):
    signs, payload = flipped_case(seed)
    try:
        expected = decode_reference(payload, signs.numel())
    except CodecError:
        with pytest.raises(CodecError):
            GOLOMB.decode(payload, signs.numel(), "cuda")
    else:
        assert torch.equal(GOLOMB.decode(payload, signs.numel(), "cuda").cpu(), expected)
    torch.cuda.synchronize()  # no device-side assert was raised


@pytest.mark.parametrize("seed", range(8))
def test_gpu_ternarize_equals_cpu(seed):
    g = torch.Generator().manual_seed(seed)
    tau = torch.randn(1_000_003 + seed * 77_777, generator=g) * 0.01
    tau[::5] = tau[::5].to(torch.bfloat16).float()
    density = [0.05, 0.1, 0.2, 0.5][seed % 4]
    cpu, gpu = ternarize(tau, density), ternarize(tau.cuda(), density)
    assert gpu.threshold == cpu.threshold and gpu.kept == cpu.kept
    assert torch.equal(gpu.signs.cpu(), cpu.signs)
    assert np.float32(gpu.sigma) == np.float32(cpu.sigma)


@pytest.mark.parametrize("codec", ["golomb", "bitmask"])
def test_gpu_compress_and_load_equal_cpu(tmp_path, codec):
    src = write_adapter_dir(tmp_path / "adapter", lora_tensors(SHAPES["tiny"], seed=2), SHAPES["tiny"])
    api.compress(src, tmp_path / "cpu", density=0.1, codec=codec, device="cpu")
    api.compress(src, tmp_path / "gpu", density=0.1, codec=codec, device="cuda")
    a = (tmp_path / "cpu" / "compeft.safetensors").read_bytes()
    b = (tmp_path / "gpu" / "compeft.safetensors").read_bytes()
    assert a == b
    ref = api.load(tmp_path / "cpu", device="cpu")
    fast = load_fast(tmp_path / "gpu", "cuda")
    for name in ref:
        assert fast[name].is_cuda and torch.equal(fast[name].cpu(), ref[name])


@pytest.mark.parametrize("seed", range(12))
def test_gpu_triton_and_torch_backends_agree(seed):
    segments, densities = random_case(seed, 300_000 if seed % 4 == 0 else 3000)
    signs = random_signs(segments, densities, seed)
    payload = encode_reference(signs, segments)
    values = torch.tensor([-3.0, 0.0, 3.0], device="cuda").to(torch.float16)
    expected = values.cpu()[(signs + 1).long()]
    for backend in ("torch", "triton"):
        assert torch.equal(decode_with(payload, signs.numel(), backend, "cuda").cpu(), signs)
        assert torch.equal(decode_with(payload, signs.numel(), backend, "cuda", values).cpu(), expected)


def test_gpu_fast_load_of_corrupted_payload_matches_cpu(tmp_path):
    from compeft.container import container_path, parse_container, read_bytes
    from compeft.fastload import load_bytes

    src = write_adapter_dir(tmp_path / "adapter", lora_tensors(SHAPES["tiny"], seed=4), SHAPES["tiny"])
    api.compress(src, tmp_path / "art", density=0.1, device="cpu")
    clean = read_bytes(container_path(tmp_path / "art"), pin=True)
    _, end = payload_span(clean)  # flips land in the payload's last 20 kB
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        data = clean.clone()
        i = int(torch.randint(end - 20_000, end, (1,), generator=g))
        data[i] ^= 1 << int(torch.randint(0, 8, (1,), generator=g))
        container = parse_container(data, Path("<memory>"), verify=False)
        try:
            ternary = decode_with(container.payload, container.doc["d"], "numpy")
        except CodecError:
            with pytest.raises(CodecError):
                load_bytes(data, "cuda", verify=False)
            continue
        got = load_bytes(data, "cuda", verify=False)
        ref = records_from(container, ternary)
        for name in ref:
            assert torch.equal(got[name].cpu(), ref[name])


def test_gpu_compress_refuses_non_finite_like_cpu(tmp_path):
    """The pinned CUDA input path checks finiteness on the device, with the CPU path's message."""
    from compeft.errors import AdapterFormatError

    tensors = lora_tensors(SHAPES["tiny"], seed=3)
    name = sorted(tensors)[1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[7] = float("inf")
    src = write_adapter_dir(tmp_path / "adapter", tensors, SHAPES["tiny"])
    errors = []
    for device in ("cpu", "cuda"):
        with pytest.raises(AdapterFormatError) as err:
            api.compress(src, tmp_path / device, density=0.1, device=device)
        errors.append(str(err.value))
        assert not (tmp_path / device).exists()
    assert errors[0] == errors[1] and name in errors[0]


def test_gpu_resident_artifact_loads_like_cpu_and_refuses_like_it(tmp_path):
    """ResidentArtifact on CUDA (cached Triton plan, host fill value): the CPU's tensors on every load, and
    on unverified bytes with a flipped payload bit the same error class or the same tensors."""
    from compeft.container import container_path, read_bytes
    from compeft.fastload import ResidentArtifact, load_bytes

    src = write_adapter_dir(tmp_path / "adapter", lora_tensors(SHAPES["tiny"], seed=5), SHAPES["tiny"])
    api.compress(src, tmp_path / "art", density=0.1, device="cpu")
    ref = api.load(tmp_path / "art", device="cpu")
    resident = ResidentArtifact.open(tmp_path / "art")
    for _ in range(3):
        got = resident.load("cuda")
        assert all(got[n].is_cuda and torch.equal(got[n].cpu(), ref[n]) for n in ref)
    clean = read_bytes(container_path(tmp_path / "art"), pin=True)
    _, end = payload_span(clean)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        data = clean.clone().pin_memory()
        i = int(torch.randint(end - 20_000, end, (1,), generator=g))
        data[i] ^= 1 << int(torch.randint(0, 8, (1,), generator=g))
        try:
            expected = load_bytes(data, "cpu", verify=False)
        except CodecError:
            with pytest.raises(CodecError):
                ResidentArtifact(data, verify=False).load("cuda")
            continue
        got = ResidentArtifact(data, verify=False).load("cuda")
        assert all(torch.equal(got[n].cpu(), expected[n]) for n in expected)
    torch.cuda.synchronize()


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda doc: doc.__setitem__("d", doc["d"] + 1), id="d"),
        pytest.param(lambda doc: doc.__setitem__("codec", "bitmask"), id="codec"),
        pytest.param(lambda doc: doc.__setitem__("scale", 0.5), id="scale"),
        pytest.param(lambda doc: doc.__setitem__("kind", "full"), id="kind"),
        pytest.param(lambda doc: None, id="unchanged"),
    ],
)
def test_gpu_cold_load_of_an_edited_document_matches_cpu(tmp_path, edit):
    """load_bytes copies the payload to the device before it reads the document; a (consistently hashed)
    document that then disagrees with the payload gives the CPU's error, or the CPU's tensors."""
    from compeft.container import (
        container_path,
        parse_container,
        read_bytes,
        write_container,
    )
    from compeft.errors import CompeftError
    from compeft.fastload import load_bytes

    src = write_adapter_dir(tmp_path / "adapter", lora_tensors(SHAPES["tiny"], seed=6), SHAPES["tiny"])
    api.compress(src, tmp_path / "art", density=0.1, device="cpu")
    path = container_path(tmp_path / "art")
    c = parse_container(read_bytes(path), path)
    doc = {k: v for k, v in c.doc.items() if k != "checksums"}
    edit(doc)
    write_container(path, doc, c.payload, c.carried, c.records)
    data = read_bytes(path, pin=True)
    try:
        expected = load_bytes(data, "cpu")
    except CompeftError as err:
        with pytest.raises(type(err)) as got:
            load_bytes(data, "cuda")
        assert str(got.value) == str(err)
    else:
        got = load_bytes(data, "cuda")
        assert list(got) == list(expected) and all(torch.equal(got[n].cpu(), expected[n]) for n in expected)
