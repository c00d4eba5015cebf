"""read_adapter(pinned=True): one read into page-locked memory, the safetensors layout checks, and a τ
bit-identical to the pageable path (the GPU compress input; here with plain memory on the CPU)."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch

from compeft.adapters import ADAPTER_WEIGHTS, read_adapter, read_safetensors_pinned
from compeft.errors import AdapterFormatError
from compeft.taskvector import build_task_vector, task_vector_from_blob
from tests.core.builders import synthetic_adapter

TENSORS = {
    "base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(4, 16),
    "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(16, 4, dtype=torch.float64).to(torch.bfloat16),
    "base_model.model.layers.0.k_proj.ia3_l": torch.rand(16, dtype=torch.float16),
    "base_model.model.score.weight": torch.randn(3, 16),  # carried, not a delta
}


def write_raw(path, header: dict, data: bytes, header_len: int | None = None) -> None:
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head) if header_len is None else header_len) + head + data)


def test_pinned_read_equals_the_pageable_read(tmp_path):
    src = synthetic_adapter(tmp_path / "a", TENSORS)
    plain, pinned = read_adapter(src), read_adapter(src, pinned=True)
    assert pinned.blob is not None and plain.blob is None
    assert pinned.source_sha256 == plain.source_sha256
    assert set(pinned.tensors) == set(plain.tensors)
    for name, t in plain.tensors.items():
        assert pinned.tensors[name].dtype == t.dtype and torch.equal(pinned.tensors[name], t)
    a = build_task_vector(plain.tensors, plain.theta_inits, "cpu")
    b = task_vector_from_blob(pinned.blob, pinned.tensors, pinned.theta_inits, "cpu", src / ADAPTER_WEIGHTS)
    assert a.records == b.records and torch.equal(a.tau, b.tau)


def test_non_finite_delta_names_the_tensor_on_both_paths(tmp_path):
    bad = dict(TENSORS)
    bad["base_model.model.layers.0.q_proj.lora_A.weight"] = torch.full((4, 16), float("nan"))
    src = synthetic_adapter(tmp_path / "a", bad)
    with pytest.raises(AdapterFormatError) as plain:
        read_adapter(src)
    pinned = read_adapter(src, pinned=True)  # finiteness is left to the device
    with pytest.raises(AdapterFormatError) as fast:
        task_vector_from_blob(pinned.blob, pinned.tensors, pinned.theta_inits, "cpu", src / ADAPTER_WEIGHTS)
    assert str(fast.value) == str(plain.value)
    assert "q_proj.lora_A.weight" in str(fast.value) and "NaN or Inf" in str(fast.value)


GOOD = {"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize(("header", "data", "header_len", "why"), [
    (GOOD, b"\0" * 15, None, "tensors cover 16"),  # data shorter than the tensors
    (GOOD, b"\0" * 20, None, "tensors cover 16"),  # trailing bytes
    ({"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [4, 20]}}, b"\0" * 20, None, "not contiguous"),  # a gap
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16, None, "does not match"),
    ({"x": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4, None, "Q7"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "not contiguous"),  # overlap
    (GOOD, b"\0" * 16, 1 << 40, "exceeds the"),
    (["not", "an", "object"], b"", None, "not a JSON object"),
])
def test_malformed_files_are_one_line_naming_the_file(tmp_path, header, data, header_len, why):
    path = tmp_path / "w.safetensors"
    write_raw(path, header, data, header_len)
    with pytest.raises(AdapterFormatError) as err:
        read_safetensors_pinned(path)
    msg = str(err.value)
    assert str(path) in msg and why in msg and "\n" not in msg


def test_truncated_file(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(AdapterFormatError, match="too short"):
        read_safetensors_pinned(path)


def test_accepts_what_safetensors_writes(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = {"a": torch.arange(6, dtype=torch.int64).reshape(2, 3), "b": torch.zeros(0), "c": torch.ones(5, dtype=torch.bfloat16)}
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"format": "pt"})
    _, views, sha = read_safetensors_pinned(tmp_path / "w.safetensors")
    assert sha == hashlib.sha256((tmp_path / "w.safetensors").read_bytes()).hexdigest()
    ref = load_file(str(tmp_path / "w.safetensors"))
    assert set(views) == set(ref) and all(torch.equal(views[k], ref[k]) for k in ref)


def test_unaligned_data_section_is_realigned(tmp_path):
    """A header whose length is not a multiple of 8 (safetensors pads its own; other writers may not)."""
    path = tmp_path / "w.safetensors"
    values = torch.arange(4, dtype=torch.float32)
    head = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    assert (8 + len(head)) % 4
    path.write_bytes(struct.pack("<Q", len(head)) + head + values.numpy().tobytes())
    data, views, _ = read_safetensors_pinned(path)
    assert torch.equal(views["x"], values) and data.data_ptr() % 8 == 0
