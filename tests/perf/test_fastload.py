"""load_bytes / load_fast give exactly api.load's tensors (golomb and bitmask, LoRA and (IA)³-like)."""

from __future__ import annotations

import pytest
import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir
from compeft import api
from compeft.errors import ChecksumError
from compeft.container import container_path, read_bytes
from compeft.fastload import load_bytes, load_fast


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("fastload")
    return write_adapter_dir(root / "adapter", lora_tensors(SHAPES["tiny"], seed=1), SHAPES["tiny"])


@pytest.mark.parametrize("codec", ["golomb", "bitmask"])
def test_load_fast_equals_api_load(adapter, tmp_path, codec):
    dst = tmp_path / "art"
    api.compress(adapter, dst, density=0.1, codec=codec, device="cpu")
    ref = api.load(dst, device="cpu")
    fast = load_fast(dst, "cpu")
    assert set(fast) == set(ref)
    for name in ref:
        assert fast[name].dtype == ref[name].dtype and torch.equal(fast[name], ref[name])


def test_load_bytes_refuses_flipped_payload(adapter, tmp_path):
    dst = tmp_path / "art"
    api.compress(adapter, dst, density=0.05, device="cpu")
    data = read_bytes(container_path(dst), pin=True).clone()
    data[-3] ^= 0x10
    with pytest.raises(ChecksumError):
        load_bytes(data, "cpu")


def test_mixed_dtypes_fall_back(tmp_path):
    from safetensors.torch import save_file

    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"peft_type": "IA3", "base_model_name_or_path": "x"}')
    g = torch.Generator().manual_seed(0)
    tensors = {
        "m.layers.0.ia3_l.weight": (1 + 0.1 * torch.randn(300, generator=g)).to(torch.float16),
        "m.layers.1.ia3_l.weight": (1 + 0.1 * torch.randn(200, generator=g)).to(torch.bfloat16),
    }
    save_file(tensors, str(src / "adapter_model.safetensors"))
    dst = tmp_path / "art"
    api.compress(src, dst, density=0.3, device="cpu")
    ref, fast = api.load(dst), load_fast(dst)
    for name in ref:
        assert torch.equal(fast[name], ref[name])
