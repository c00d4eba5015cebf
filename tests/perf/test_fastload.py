"""load_bytes / load_fast / ResidentArtifact give exactly api.load's tensors (golomb and bitmask, LoRA and (IA)³-like)."""

from __future__ import annotations

import re

import pytest
import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir
from compeft import api
from compeft.container import container_path, read_bytes
from compeft.errors import ChecksumError, CompeftError
from compeft.fastload import ResidentArtifact, load_bytes, load_fast
from tests.perf.helpers import payload_span


def assert_same_tensors(got: dict, ref: dict) -> None:
    """The same names, dtypes and values (bit for bit)."""
    assert set(got) == set(ref)
    for name in ref:
        assert got[name].dtype == ref[name].dtype and torch.equal(got[name], ref[name]), name


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("fastload")
    return write_adapter_dir(root / "adapter", lora_tensors(SHAPES["tiny"], seed=1), SHAPES["tiny"])


@pytest.mark.parametrize("codec", ["golomb", "bitmask"])
def test_load_fast_equals_api_load(adapter, tmp_path, codec):
    dst = tmp_path / "art"
    api.compress(adapter, dst, density=0.1, codec=codec, device="cpu")
    ref = api.load(dst, device="cpu")
    assert_same_tensors(load_fast(dst, "cpu"), ref)


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
    assert_same_tensors(load_fast(dst), api.load(dst))


@pytest.mark.parametrize("codec", ["golomb", "bitmask"])
def test_resident_artifact_loads_like_api_load_every_time(adapter, tmp_path, codec):
    dst = tmp_path / "art"
    api.compress(adapter, dst, density=0.1, codec=codec, device="cpu")
    ref = api.load(dst, device="cpu")
    resident = ResidentArtifact.open(dst)
    first = resident.load("cpu")
    for t in first.values():
        t.zero_()  # each load returns fresh tensors
    assert_same_tensors(resident.load("cpu"), ref)


def test_resident_artifact_checks_once_at_construction(adapter, tmp_path):
    dst = tmp_path / "art"
    api.compress(adapter, dst, density=0.05, device="cpu")
    data = read_bytes(container_path(dst)).clone()
    data[-3] ^= 0x10
    with pytest.raises(ChecksumError, match="checksum mismatch in tensor"):
        ResidentArtifact(data, label="flipped")
    header = read_bytes(container_path(dst)).clone()
    header[200] ^= 0x01  # inside the JSON header
    with pytest.raises(CompeftError):
        ResidentArtifact(header)


@pytest.mark.parametrize("seed", range(12))
def test_resident_artifact_refuses_what_load_bytes_refuses(adapter, tmp_path_factory, seed):
    """Unverified bytes with one flipped payload bit: the same error (at construction or at load) or the same tensors."""
    dst = tmp_path_factory.mktemp("r") / "art"
    api.compress(adapter, dst, density=0.1, device="cpu")
    data = read_bytes(container_path(dst)).clone()
    start, end = payload_span(data)
    g = torch.Generator().manual_seed(seed)
    i = int(torch.randint(start, end, (1,), generator=g))
    data[i] ^= 1 << int(torch.randint(0, 8, (1,), generator=g))
    try:
        expected = load_bytes(data, "cpu", verify=False)
    except CompeftError as err:
        with pytest.raises(type(err), match=re.escape(str(err))):
            ResidentArtifact(data, verify=False).load("cpu")
    else:
        assert_same_tensors(ResidentArtifact(data, verify=False).load("cpu"), expected)


def test_resident_artifact_of_mixed_dtypes_falls_back(tmp_path):
    test_mixed_dtypes_fall_back(tmp_path)
    assert_same_tensors(ResidentArtifact.open(tmp_path / "art").load("cpu"), api.load(tmp_path / "art"))
