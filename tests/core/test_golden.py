"""Golden container fixtures (tests/golden): today's compressor reproduces the committed bytes; committed artifacts decode as committed.

Regenerate (only when a format change is intended): ``COMPEFT_REGEN_GOLDEN=1 pytest tests/core/test_golden.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import compeft_reference as ref
import pytest
from checks import assert_tensors_identical, read_doc, read_records
from golden_gen import CASES, GOLDEN, REGEN_ENV, regenerate, write_input
from safetensors.torch import load_file

import compeft

NAMES = sorted(CASES)


@pytest.fixture(scope="module", autouse=True)
def maybe_regenerate():
    if os.environ.get(REGEN_ENV) == "1":
        regenerate()
    missing = [n for n in NAMES if not (GOLDEN / "artifacts" / n / "compeft.safetensors").is_file()]
    assert not missing, f"golden fixtures missing: {missing}; run {REGEN_ENV}=1 pytest tests/core/test_golden.py"


@pytest.mark.parametrize("name", NAMES)
def test_golden_inputs_regenerate_identically(tmp_path, name):
    """The committed golden inputs are exactly what the seeded generator produces today."""
    fresh = write_input(name, tmp_path / name)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        assert (fresh / f).read_bytes() == (GOLDEN / "inputs" / name / f).read_bytes(), f"{name}/{f}"


@pytest.mark.parametrize("name", NAMES)
def test_compress_reproduces_golden_bytes(tmp_path, name):
    """Compressing the committed input today gives the committed compeft.safetensors byte for byte (format unchanged)."""
    dst = tmp_path / name
    compeft.compress(GOLDEN / "inputs" / name, dst, device="cpu", **CASES[name])
    committed = GOLDEN / "artifacts" / name
    assert (dst / "adapter_config.json").read_bytes() == (committed / "adapter_config.json").read_bytes()
    new, old = (dst / "compeft.safetensors").read_bytes(), (committed / "compeft.safetensors").read_bytes()
    if new != old:
        a, b = read_doc(dst), read_doc(committed)
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        pytest.fail(
            f"{name}: compeft.safetensors differs from the golden fixture (document fields changed: {changed}); "
            f"if the format change is intended, regenerate with {REGEN_ENV}=1 and bump format_version where readers are affected"
        )


@pytest.mark.parametrize("name", NAMES)
def test_golden_artifact_decodes_to_expected(name):
    """compeft.load of the committed artifact equals the committed expected tensors, which equal the reference reconstruction."""
    art = GOLDEN / "artifacts" / name
    expected = load_file(str(GOLDEN / "expected" / f"{name}.safetensors"))
    assert_tensors_identical(compeft.load(art, device="cpu"), expected, f"golden {name}")
    source = load_file(str(GOLDEN / "inputs" / name / "adapter_model.safetensors"))
    opts = CASES[name]
    r = ref.reference_adapter(source, opts["density"], opts["alpha"])
    doc = read_doc(art)
    assert doc["codec"] == opts["codec"] and doc["kept"] == r.tern.kept
    assert abs(doc["scale"] - r.scale) <= ref.ulp32(r.scale)
    assert_tensors_identical(expected, r.reconstruct(s=doc["scale"]), f"golden {name} vs reference")


def test_golden_fixture_set_is_small_and_complete():
    """One golomb, one bitmask and one IA3 artifact with carried tensors, each case under 20 KB in total."""
    codecs = {read_doc(GOLDEN / "artifacts" / n)["codec"] for n in NAMES}
    assert codecs == {"golomb", "bitmask"}
    ia3 = read_doc(GOLDEN / "artifacts" / "ia3-head-golomb")
    assert ia3["carried"] and all(t["theta_init"] == 1.0 for t in read_records(GOLDEN / "artifacts" / "ia3-head-golomb"))
    for n in NAMES:
        files = [GOLDEN / "artifacts" / n, GOLDEN / "inputs" / n]
        size = sum(p.stat().st_size for d in files for p in Path(d).iterdir()) + (GOLDEN / "expected" / f"{n}.safetensors").stat().st_size
        assert size < 20_000, f"{n}: {size} bytes"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_older_format_versions_still_load(name, version):
    """Artifacts written before format version 3 (version 1: records as a JSON list; version 2: records as six
    columns) load to the same tensors, on the API, fast and resident paths, inspect reports their version, and
    they hold the same records as today's version 3."""
    from compeft.container import container_path, read_bytes
    from compeft.fastload import ResidentArtifact, load_bytes

    old, new = GOLDEN / f"v{version}" / name, GOLDEN / "artifacts" / name
    assert read_doc(old)["format_version"] == version and read_doc(new)["format_version"] == 3
    assert read_records(old) == read_records(new)
    expected = load_file(str(GOLDEN / "expected" / f"{name}.safetensors"))
    assert_tensors_identical(compeft.load(old, device="cpu"), expected, f"v{version} {name}")
    data = read_bytes(container_path(old))
    assert_tensors_identical(load_bytes(data), expected, f"v{version} {name} load_bytes")
    assert_tensors_identical(ResidentArtifact(data).load(), expected, f"v{version} {name} resident")
    info = compeft.inspect(old)
    assert info.format_version == version and info.tensors == len(read_records(old))
    with pytest.raises(AssertionError):  # the old bytes are kept as they were written, never regenerated
        assert (old / "compeft.safetensors").read_bytes() == (new / "compeft.safetensors").read_bytes()
