"""Assertions shared by the core tests: compare compeft's outputs with the reference implementation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import compeft_reference as ref
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

SAFETENSORS_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def read_doc(artifact: Path) -> dict:
    """The compeft document of an artifact, read with safetensors alone."""
    with safe_open(str(Path(artifact) / "compeft.safetensors"), "pt") as f:
        meta = f.metadata()
    return json.loads(meta["compeft"])


def read_records(artifact: Path) -> list[dict]:
    """The delta records {name, shape, dtype, theta_init, offset} of an artifact, read with safetensors alone:
    the document's ``tensors`` list (format version 1) or the ``records/*`` columns (version 2)."""
    doc = read_doc(artifact)
    if doc["format_version"] == 1:
        return doc["tensors"]
    with safe_open(str(Path(artifact) / "compeft.safetensors"), "np") as f:
        col = {k.split("/", 1)[1]: f.get_tensor(k) for k in f.keys() if k.startswith("records/")}
    names, ends, ndim, dims = bytes(col["names"]), col["name_ends"].tolist(), col["ndim"].tolist(), col["dims"].tolist()
    out, start, dim, offset = [], 0, 0, 0
    for i, end in enumerate(ends):
        shape = dims[dim : dim + ndim[i]]
        out.append({"name": names[start:end].decode("utf-8"), "shape": shape, "dtype": doc["record_dtypes"][int(col["dtype"][i])],
                    "theta_init": float(col["theta_init"][i]), "offset": offset})
        start, dim, offset = end, dim + ndim[i], offset + int(np.prod(shape, dtype=np.int64))
    assert len(out) == doc["records"] and start == len(names) and dim == len(dims)
    return out


def bytes_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (dtype, shape and every byte)."""
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def assert_tensors_identical(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str = "") -> None:
    assert sorted(actual) == sorted(expected), f"{what}: key sets differ: {sorted(set(actual) ^ set(expected))}"
    for k in sorted(expected):
        a, e = actual[k].cpu(), expected[k].cpu()
        assert a.dtype == e.dtype, f"{what}: {k} dtype {a.dtype} != {e.dtype}"
        assert tuple(a.shape) == tuple(e.shape), f"{what}: {k} shape {tuple(a.shape)} != {tuple(e.shape)}"
        if not bytes_equal(a, e):
            diff = int((a.to(torch.float64) != e.to(torch.float64)).sum()) if a.is_floating_point() else -1
            raise AssertionError(f"{what}: {k} differs in {diff} of {e.numel()} entries")


def check_artifact_against_reference(artifact: Path, source: Mapping[str, torch.Tensor], density: float, alpha: float,
                                     codec: str, theta=None) -> ref.AdapterReference:
    """The artifact's document and compeft.load output match the reference compression of ``source`` (``theta``:
    each key's θ_init, see ``compeft_reference.reference_adapter``)."""
    import compeft

    r = ref.reference_adapter(source, density, alpha, theta)
    doc = read_doc(artifact)
    assert doc["format"] == "compeft" and doc["format_version"] == 2
    assert doc["codec"] == codec
    assert doc["density"] == density and doc["alpha"] == alpha
    assert doc["d"] == r.d
    records = read_records(artifact)
    assert [t["name"] for t in records] == r.names
    for rec in records:
        assert rec["offset"] == r.offsets[rec["name"]]
        assert tuple(rec["shape"]) == r.shapes[rec["name"]]
        assert rec["theta_init"] == r.inits[rec["name"]]
        assert rec["dtype"] == SAFETENSORS_DTYPE[r.dtypes[rec["name"]]]
    assert sorted(c["name"] for c in doc["carried"]) == sorted(r.carried)
    assert doc["kept"] == r.tern.kept, f"kept {doc['kept']} != reference {r.tern.kept} (m={r.tern.m})"
    assert doc["threshold"] == r.tern.threshold
    assert abs(doc["sigma"] - ref.f32(r.tern.sigma)) <= ref.ulp32(r.tern.sigma)
    assert abs(doc["scale"] - r.scale) <= ref.ulp32(r.scale), (doc["scale"], r.scale)
    assert doc["scale"] == ref.f32(doc["scale"])  # stored as a float32 value
    expected = r.reconstruct(s=doc["scale"])
    loaded = compeft.load(artifact, device="cpu")
    # masks and signs first (clear message), then every byte
    for name in r.names:
        got = loaded[name].to(torch.float64).reshape(-1).numpy() - ref.f32(r.inits[name])
        got_signs = np.sign(got).astype(np.int8)
        want = r.signs_of(name)
        mismatch = int(np.count_nonzero(got_signs != want))
        assert mismatch == 0, f"{name}: {mismatch} mask/sign mismatches against the reference"
    assert_tensors_identical(loaded, expected, f"load({artifact.name})")
    # carried tensors are the source's bit for bit
    for name in r.carried:
        assert bytes_equal(loaded[name], source[name]), name
    return r


def load_source(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
