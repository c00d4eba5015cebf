"""CUDA (issue 2, "Devices"): the same input gives the same bytes on CPU and CUDA; load/decode on CUDA equal the CPU results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from checks import assert_tensors_identical
from safetensors.torch import load_file

import compeft
from compeft.codecs import get_codec

pytestmark = pytest.mark.gpu

CASES = ["lora-all-linear", "ia3", "seqcls-head-bf16-lora", "lora-embedding", "dora", "lora-fp16"]


@pytest.mark.parametrize("codec", ["golomb", "bitmask"])
@pytest.mark.parametrize("case", CASES)
def test_cuda_compress_is_byte_identical_and_loads_on_cuda(workshop, tmp_path, case, codec):
    """compress on CUDA writes the CPU's bytes; load(device='cuda') returns CUDA tensors equal to the CPU load; decompress on
    CUDA equals CPU."""
    src = workshop.adapter(case).path
    compeft.compress(src, tmp_path / "cpu", density=0.15, codec=codec, device="cpu")
    compeft.compress(src, tmp_path / "cuda", density=0.15, codec=codec, device="cuda")
    assert (tmp_path / "cpu/compeft.safetensors").read_bytes() == (tmp_path / "cuda/compeft.safetensors").read_bytes()
    on_cpu = compeft.load(tmp_path / "cpu", device="cpu")
    on_cuda = compeft.load(tmp_path / "cpu", device="cuda")
    assert all(t.device.type == "cuda" for t in on_cuda.values())
    assert_tensors_identical({k: v.cpu() for k, v in on_cuda.items()}, on_cpu, f"{case} cuda load")
    compeft.decompress(tmp_path / "cpu", tmp_path / "dec-cpu", device="cpu")
    compeft.decompress(tmp_path / "cpu", tmp_path / "dec-cuda", device="cuda")
    assert (tmp_path / "dec-cpu/adapter_model.safetensors").read_bytes() == (tmp_path / "dec-cuda/adapter_model.safetensors").read_bytes()


@pytest.mark.parametrize("codec_id", ["golomb", "bitmask"])
def test_codecs_agree_across_devices(codec_id):
    """Encoding CUDA signs gives the CPU payload, and decoding on CUDA gives the CPU result, across a 2^20 chunk boundary."""
    rng = np.random.default_rng(3)
    codec = get_codec(codec_id)
    for d, k, segments in ((0, 0.1, []), (1, 1.0, [1]), (5000, 0.6, [100, 4900]), ((1 << 20) + 777, 0.05, [(1 << 20) + 700, 77]),
                           (3_000_000, 0.1, [])):
        signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=d)
        signs[rng.random(d) >= k] = 0
        t = torch.from_numpy(signs)
        payload = codec.encode(t, segments)
        assert torch.equal(codec.encode(t.cuda(), segments).cpu(), payload)
        out = codec.decode(payload, d, "cuda")
        assert out.device.type == "cuda" and torch.equal(out.cpu(), t)
        assert torch.equal(codec.decode(payload.cuda(), d, "cuda").cpu(), t)


def test_cuda_ternarization_of_a_large_task_vector_is_byte_identical(tmp_path):
    """A 3M-parameter adapter with many ties compresses to the same bytes on CPU and CUDA."""
    from builders import synthetic_adapter

    gen = torch.Generator().manual_seed(8)
    tensors = {f"m.{i}.lora_A.weight": (torch.randn(1000, 1000, generator=gen) * 64).round() / 64 for i in range(3)}
    src = synthetic_adapter(tmp_path / "src", tensors)
    for k in (0.01, 0.2):
        compeft.compress(src, tmp_path / f"cpu{k}", density=k, device="cpu")
        compeft.compress(src, tmp_path / f"cuda{k}", density=k, device="cuda")
        assert (tmp_path / f"cpu{k}/compeft.safetensors").read_bytes() == (tmp_path / f"cuda{k}/compeft.safetensors").read_bytes()


def test_full_residual_cuda_matches_cpu(tmp_path):
    """Full fine-tune residual: CUDA compress gives the CPU bytes, CUDA decompress the CPU model files."""
    from test_fullmodel import FullModels, read_model_dir

    models = FullModels(tmp_path / "models")
    ft_dir, base_dir = models.dirs["sharded"]
    compeft.compress(ft_dir, tmp_path / "cpu", base=base_dir, density=0.1, device="cpu")
    compeft.compress(ft_dir, tmp_path / "cuda", base=base_dir, density=0.1, device="cuda")
    assert (tmp_path / "cpu/compeft.safetensors").read_bytes() == (tmp_path / "cuda/compeft.safetensors").read_bytes()
    compeft.decompress(tmp_path / "cpu", tmp_path / "m-cpu", base=base_dir, device="cpu")
    compeft.decompress(tmp_path / "cpu", tmp_path / "m-cuda", base=base_dir, device="cuda")
    assert_tensors_identical(read_model_dir(tmp_path / "m-cuda"), read_model_dir(tmp_path / "m-cpu"), "full cuda")


@pytest.mark.parametrize("options", [{"density": 0.1}, {"density": 0.7}, {"density": 1.0}, {"density": 0.1, "codec": "bitmask"}],
                         ids=["k0.1", "k0.7-mode1", "k1-zeros", "bitmask"])
@pytest.mark.parametrize("block", [1 << 20, 1 << 24], ids=["blocks-of-one-chunk", "device-blocks"])
def test_full_residual_device_ways_give_the_cpu_bytes(tmp_path, monkeypatch, options, block):
    """CUDA compress of a full pair (read-ahead into page-locked slots, candidates in device memory, golomb coded
    on the device) writes the CPU's bytes, with a tensor cut into several blocks or not."""
    from test_fullmodel_stream import synthetic_pair

    from compeft import fullmodel

    monkeypatch.setattr(fullmodel, "DEVICE_BLOCK", block)
    ft, base = synthetic_pair(tmp_path / "pair")
    compeft.compress(ft, tmp_path / "cpu", base=base, device="cpu", **options)
    compeft.compress(ft, tmp_path / "cuda", base=base, device="cuda", **options)
    assert (tmp_path / "cpu/compeft.safetensors").read_bytes() == (tmp_path / "cuda/compeft.safetensors").read_bytes()


def test_auto_device_picks_cuda(workshop, tmp_path):
    """device='auto' with CUDA present compresses (same bytes as CPU) and load(device='cuda:0') works."""
    src = workshop.adapter("lora-all-linear").path
    compeft.compress(src, tmp_path / "auto", density=0.1)
    compeft.compress(src, tmp_path / "cpu", density=0.1, device="cpu")
    assert (tmp_path / "auto/compeft.safetensors").read_bytes() == (tmp_path / "cpu/compeft.safetensors").read_bytes()
    out = compeft.load(tmp_path / "auto", device="cuda:0")
    assert {t.device.type for t in out.values()} == {"cuda"}
    ref = load_file(str(src / "adapter_model.safetensors"))
    assert sorted(out) == sorted(ref)
