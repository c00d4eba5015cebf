"""The compeft.safetensors container and artifact directory (issue 2, "Container"): openness, checksums, determinism, atomicity."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from checks import read_doc, read_records
from hostile import checksums, craft, put_together, take_apart
from safetensors import safe_open
from safetensors.numpy import load_file as np_load_file

import compeft
import compeft.artifact
import compeft.pipeline
from compeft.errors import (
    CompeftError,
    ContainerError,
    DestinationExistsError,
    InputError,
)

FILE = "compeft.safetensors"


def split_file(raw: bytes) -> tuple[int, dict, bytes]:
    """(header length N, header JSON, data section) of a safetensors file, parsed by hand."""
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8 : 8 + n]), raw[8 + n :]


def rewrite_document(path: Path, edit) -> None:
    """Apply ``edit(doc)`` to the document and re-hash it, keeping the file otherwise valid (a consistent tamper)."""
    doc, tensors = take_apart(path)
    doc["checksums"] = checksums(tensors)
    edit(doc)
    put_together(path, doc, tensors)


def test_any_safetensors_reader_lists_the_container(head_artifact):
    """safetensors.safe_open and the numpy loader read compeft.safetensors: uint8 payload, carried tensors, record
    columns, metadata document."""
    path = head_artifact / FILE
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        assert f.get_tensor("payload").dtype == torch.uint8
        carried = {k: f.get_tensor(k) for k in keys if k.startswith("carried/")}
    columns = {"records/table"}
    assert keys == {"payload", *carried, *columns} and carried
    assert set(meta) == {"compeft", "compeft_sha256"}
    assert np_load_file(str(path))["payload"].dtype == np.uint8
    doc = json.loads(meta["compeft"])
    assert sorted("carried/" + c["name"] for c in doc["carried"]) == sorted(carried)


def test_document_fields_and_checksums(head_artifact, head_dir):
    """The document holds format/version, codec, k, α, σ, s, d, kept, records, source hashes, version and per-tensor sha256."""
    raw = (head_artifact / FILE).read_bytes()
    n, header, data = split_file(raw)
    assert (8 + n) % 8 == 0
    meta = header.pop("__metadata__")
    assert hashlib.sha256(meta["compeft"].encode()).hexdigest() == meta["compeft_sha256"]
    doc = json.loads(meta["compeft"])
    for key in ("format", "format_version", "codec", "density", "alpha", "sigma", "scale", "d", "kept", "records", "record_dtypes",
                "carried", "source", "package_version", "checksums"):
        assert key in doc, key
    assert doc["format"] == "compeft" and doc["format_version"] == 3 and doc["codec"] == "bitmask"
    assert doc["density"] == 0.2 and doc["alpha"] == 1.0 and doc["package_version"] == compeft.__version__
    records = read_records(head_artifact)
    assert len(records) == doc["records"] > 0 and sum(math.prod(r["shape"]) for r in records) == doc["d"]
    files = doc["source"]["files"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert files[name] == hashlib.sha256((head_dir / name).read_bytes()).hexdigest()
    # every tensor in the file (payload and carried) is covered by a checksum of its bytes
    assert set(doc["checksums"]) == set(header)
    spans = sorted(tuple(info["data_offsets"]) for info in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    for name, info in header.items():
        a, b = info["data_offsets"]
        assert doc["checksums"][name] == hashlib.sha256(data[a:b]).hexdigest(), name
    assert header["payload"]["dtype"] == "U8"


def test_artifact_directory_layout(lora_artifact, lora_dir):
    """An artifact dir is adapter_config.json (byte copy), README.md with YAML front matter, compeft.safetensors."""
    assert sorted(p.name for p in lora_artifact.iterdir()) == ["README.md", "adapter_config.json", FILE]
    assert (lora_artifact / "adapter_config.json").read_bytes() == (lora_dir / "adapter_config.json").read_bytes()
    card = (lora_artifact / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert isinstance(front, dict)
    assert "compeft" in front.get("tags", [])
    assert front.get("base_model") == json.loads((lora_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    text = json.dumps(front)
    doc = read_doc(lora_artifact)
    assert str(doc["kept"]) in text or f"{doc['kept']:,}" in card  # compression stats are in the card
    assert "compeft decompress" in card or "compeft.load" in card  # how to load


def test_inspect_reports_document_figures(lora_artifact):
    """compeft.inspect returns the document's figures and sizes derived from the file."""
    info = compeft.inspect(lora_artifact).to_dict()
    doc = read_doc(lora_artifact)
    for key in ("codec", "density", "alpha", "sigma", "scale", "d", "kept", "format_version"):
        assert info[key] == doc[key], key
    size = (lora_artifact / FILE).stat().st_size
    assert info["bytes_artifact"] == size
    assert info["sha256"] == hashlib.sha256((lora_artifact / FILE).read_bytes()).hexdigest()
    _, header, _ = split_file((lora_artifact / FILE).read_bytes())
    payload = header["payload"]["shape"][0]
    assert info["bits_per_param"] == pytest.approx(8 * payload / doc["d"])


def _regions(raw: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of the parts of a container file: length prefix, header JSON, document text, each tensor."""
    n, header, _ = split_file(raw)
    text = raw[8 : 8 + n]
    doc_start = text.index(b'"compeft":"') + len(b'"compeft":"')
    regions = {"length": (0, 8), "header": (8, 8 + n), "document": (8 + doc_start, 8 + doc_start + 200),
               "padding": (8 + len(text.rstrip(b" ")), 8 + n)}
    for name, info in header.items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            regions[name] = (8 + n + a, 8 + n + b)
    return regions


def _assert_refused(artifact: Path, tmp: Path, api=("load", "inspect", "decompress")) -> None:
    for fn in api:
        with pytest.raises(ContainerError) as info:
            if fn == "load":
                compeft.load(artifact, device="cpu")
            elif fn == "inspect":
                compeft.inspect(artifact)
            else:
                compeft.decompress(artifact, tmp / "never", device="cpu")
        assert "\n" not in str(info.value)
        assert str(artifact) in str(info.value), f"error does not name the file: {info.value}"
        assert not (tmp / "never").exists()


@pytest.mark.parametrize("which", ["head_artifact", "lora_artifact"])
def test_every_sampled_bit_flip_is_refused(request, tmp_path, which):
    """A single flipped bit anywhere (length, header, document, padding, payload, carried tensors) makes load/inspect/decompress
    raise ContainerError."""
    src = request.getfixturevalue(which)
    art = tmp_path / "art"
    shutil.copytree(src, art)
    path = art / FILE
    raw = path.read_bytes()
    rng = np.random.default_rng(42)
    positions = set(range(64))  # every bit of the header length
    for name, (a, b) in _regions(raw).items():
        if b <= a:
            continue
        count = 60 if name in ("header", "document") else 40
        positions.update(int(x) for x in rng.integers(8 * a, 8 * b, size=count))
    positions.update(int(x) for x in rng.integers(0, 8 * len(raw), size=100))
    positions.add(8 * len(raw) - 1)
    checked = 0
    for i, bit in enumerate(sorted(positions)):
        damaged = bytearray(raw)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        api = ("load", "inspect", "decompress") if i % 10 == 0 else ("load",)
        try:
            _assert_refused(art, tmp_path, api)
        except BaseException as err:  # pytest's "DID NOT RAISE" is a BaseException
            raise AssertionError(
                f"flip of bit {bit} (byte {bit // 8}) not refused with ContainerError: {type(err).__name__}: {err}") from err
        checked += 1
    path.write_bytes(raw)
    assert compeft.load(art)  # the undamaged copy still loads
    assert checked > 300


def test_truncation_is_refused(tmp_path, head_artifact):
    """A container cut at any point (random, within the length prefix, at the header end, one byte short) raises ContainerError."""
    art = tmp_path / "art"
    shutil.copytree(head_artifact, art)
    raw = (art / FILE).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    rng = np.random.default_rng(7)
    cuts = {0, 1, 7, 8, 9, 8 + n - 1, 8 + n, 8 + n + 1, len(raw) - 1} | {int(x) for x in rng.integers(0, len(raw), size=40)}
    for i, cut in enumerate(sorted(c for c in cuts if c < len(raw))):
        (art / FILE).write_bytes(raw[:cut])
        _assert_refused(art, tmp_path, ("load", "inspect", "decompress") if i % 8 == 0 else ("load",))


def test_appended_bytes_are_refused(tmp_path, head_artifact):
    """Trailing bytes after the last tensor are refused."""
    art = tmp_path / "art"
    shutil.copytree(head_artifact, art)
    (art / FILE).write_bytes((art / FILE).read_bytes() + b"\0" * 8)
    _assert_refused(art, tmp_path)


@pytest.mark.parametrize("version", [4, 0, "1", "3", True, None])
def test_unknown_format_version_is_refused(tmp_path, head_artifact, version):
    """A (correctly hashed) document with another format_version is refused, naming that version."""
    art = tmp_path / "art"
    shutil.copytree(head_artifact, art)
    rewrite_document(art / FILE, lambda doc: doc.__setitem__("format_version", version))
    for fn in (compeft.load, compeft.inspect):
        with pytest.raises(ContainerError, match="version") as info:
            fn(art)
        assert repr(version) in str(info.value) or str(version) in str(info.value)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda doc: doc.__setitem__("d", doc["d"] + 1), id="d"),
        pytest.param(lambda doc: doc.__setitem__("records", doc["records"] + 1), id="record-count"),
        pytest.param(lambda doc: doc.__setitem__("record_dtypes", ["XX"]), id="record-dtypes"),
        pytest.param(lambda doc: doc.__setitem__("record_dtypes", [["BF16"]]), id="record-dtypes-unhashable"),
        pytest.param(lambda doc: doc["carried"][0].__setitem__("dtype", "F16"), id="carried-dtype"),
        pytest.param(lambda doc: doc.__setitem__("kept", doc["d"] + 5), id="kept"),
        pytest.param(lambda doc: doc.__setitem__("format", "other"), id="format"),
        pytest.param(lambda doc: doc["checksums"].__setitem__("payload", "0" * 64), id="payload-checksum"),
        pytest.param(lambda doc: doc.__setitem__("codec", "golomb"), id="codec-swapped"),
        pytest.param(lambda doc: doc.__setitem__("codec", "no-such-codec"), id="codec-unknown"),
    ],
)
def test_consistently_hashed_but_inconsistent_document_is_refused(tmp_path, head_artifact, edit):
    """A tampered document with a valid hash but contents that disagree with the file is refused with a one-line error naming the file."""
    art = tmp_path / "art"
    shutil.copytree(head_artifact, art)
    rewrite_document(art / FILE, edit)
    with pytest.raises(CompeftError) as info:
        compeft.load(art)
    err = info.value
    assert isinstance(err, InputError) and err.exit_code == 2
    assert str(art / FILE) in str(err) and "\n" not in str(err)
    from compeft.container import read_bytes
    from compeft.fastload import load_bytes

    with pytest.raises(CompeftError):  # the fast load reads some fields before it checks them
        load_bytes(read_bytes(art / FILE))


def rewrite_records(path: Path, edit) -> None:
    """Apply ``edit(columns, doc)`` to the record columns (numpy arrays, by column name) and write the file again
    with consistent checksums (a consistent tamper)."""
    doc, tensors = take_apart(path)
    cols = {k.split("/", 1)[1]: t.numpy().copy() for k, t in tensors.items() if k.startswith("records/")}
    edit(cols, doc)
    tensors = {k: t for k, t in tensors.items() if not k.startswith("records/")}
    tensors.update({"records/" + k: torch.from_numpy(v) for k, v in cols.items()})
    put_together(path, doc, tensors)


def _same_name_twice(cols, doc):
    names, ends = bytes(cols["names"]), cols["name_ends"]
    parts = [names[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    parts[1] = parts[0]
    cols["names"] = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
    cols["name_ends"] = np.cumsum([len(p) for p in parts]).astype(np.int64)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c, d: c["dims"].__setitem__(0, c["dims"][0] + 1), id="shape"),
        pytest.param(lambda c, d: c["ndim"].__setitem__(0, c["ndim"][0] + 1), id="ndim"),
        pytest.param(lambda c, d: c["theta_init"].__setitem__(0, np.nan), id="theta-init-nan"),
        pytest.param(lambda c, d: c["name_ends"].__setitem__(0, c["name_ends"][1] + 1), id="name-ends"),
        pytest.param(lambda c, d: c["names"].__setitem__(0, 0xFF), id="names-not-utf8"),
        pytest.param(lambda c, d: c["dtype"].__setitem__(0, 7), id="dtype-index"),
        pytest.param(lambda c, d: c.pop("ndim"), id="column-missing"),
        pytest.param(lambda c, d: c.__setitem__("theta_init", c["theta_init"].astype(np.float32)), id="column-dtype"),
        pytest.param(lambda c, d: c.__setitem__("dtype", c["dtype"][:-1]), id="column-length"),
        pytest.param(_same_name_twice, id="name-repeated"),
    ],
)
def test_consistently_hashed_but_inconsistent_record_columns_are_refused(tmp_path, edit):
    """Format version 2's record columns with valid checksums but contents that disagree with each other or the
    document are refused with a one-line error naming the file."""
    art = tmp_path / "art"
    shutil.copytree(Path(__file__).parents[1] / "golden" / "v2" / "ia3-head-golomb", art)
    rewrite_records(art / FILE, edit)
    _assert_refused(art, tmp_path, ("load", "inspect"))
    for verify in (True, False):
        from compeft.container import read_bytes
        from compeft.fastload import ResidentArtifact, load_bytes

        with pytest.raises(ContainerError):
            load_bytes(read_bytes(art / FILE), verify=verify, label=str(art / FILE))
        with pytest.raises(ContainerError):
            ResidentArtifact(read_bytes(art / FILE), verify=verify)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda doc: doc["tensors"][0].__setitem__("shape", [doc["tensors"][0]["shape"][0] + 1,
                                                                          *doc["tensors"][0]["shape"][1:]]), id="record-shape"),
        pytest.param(lambda doc: doc["tensors"][1].__setitem__("offset", doc["tensors"][1]["offset"] + 1), id="record-offset"),
        pytest.param(lambda doc: doc["tensors"][0].__setitem__("theta_init", float("nan")), id="theta-init-nan"),
        pytest.param(lambda doc: doc.__setitem__("tensors", {}), id="tensors-not-a-list"),
        pytest.param(lambda doc: doc["tensors"][0].__setitem__("dtype", ["BF16"]), id="dtype-unhashable"),
        pytest.param(lambda doc: doc["tensors"][0].__setitem__("theta_init", "x"), id="theta-init-string"),
        pytest.param(lambda doc: [t.__setitem__("theta_init", "x") for t in doc["tensors"]], id="theta-init-all-strings"),
    ],
)
def test_inconsistent_version_1_records_are_refused(tmp_path, edit):
    """Format version 1 keeps its records in the document; tampered ones (consistently hashed) are refused,
    also by the fast load, which reads the records' dtypes before it checks them."""
    from compeft.container import read_bytes
    from compeft.fastload import load_bytes

    art = tmp_path / "art"
    shutil.copytree(Path(__file__).parents[1] / "golden" / "v1" / "ia3-head-golomb", art)
    assert compeft.load(art)
    rewrite_document(art / FILE, edit)
    _assert_refused(art, tmp_path, ("load", "inspect"))
    with pytest.raises(ContainerError):
        load_bytes(read_bytes(art / FILE))


def test_extra_tensor_with_consistent_checksums_is_refused(tmp_path, head_artifact):
    """A container holding a tensor other than payload and carried/* is refused even when every checksum matches."""
    art = craft(head_artifact, tmp_path / "art",
                tensors=lambda t: t.update(smuggled=torch.tensor([1, 2, 3, 4], dtype=torch.uint8)))
    with safe_open(str(art / FILE), "pt") as f:  # still a valid safetensors file
        assert "smuggled" in set(f.keys())
    _assert_refused(art, tmp_path)


def test_tampered_adapter_config_is_refused_on_decompress(tmp_path, lora_artifact):
    """decompress checks the adapter_config.json beside the container against the recorded source hash."""
    art = tmp_path / "art"
    shutil.copytree(lora_artifact, art)
    cfg = art / "adapter_config.json"
    cfg.write_bytes(cfg.read_bytes().replace(b'"r": 4', b'"r": 5'))
    with pytest.raises(ContainerError):
        compeft.decompress(art, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_compression_is_deterministic(tmp_path, head_dir, lora_dir):
    """Compressing the same input twice (to different destinations) gives byte-identical compeft.safetensors."""
    for src, codec in ((head_dir, "bitmask"), (lora_dir, "golomb")):
        a, b = tmp_path / f"{codec}-a", tmp_path / f"{codec}-b" / "nested"
        compeft.compress(src, a, density=0.07, alpha=1.5, codec=codec, device="cpu")
        compeft.compress(src, b, density=0.07, alpha=1.5, codec=codec, device="cpu")
        assert (a / FILE).read_bytes() == (b / FILE).read_bytes()
        assert (a / "adapter_config.json").read_bytes() == (b / "adapter_config.json").read_bytes()


def test_existing_destination_is_refused_unless_overwrite(tmp_path, lora_dir):
    """An existing DST is refused (exit code 2) and left untouched; overwrite=True replaces it."""
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(DestinationExistsError) as info:
        compeft.compress(lora_dir, dst, device="cpu")
    assert info.value.exit_code == 2
    assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
    compeft.compress(lora_dir, dst, device="cpu", overwrite=True)
    assert sorted(p.name for p in dst.iterdir()) == ["README.md", "adapter_config.json", FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


def test_failure_in_the_middle_leaves_nothing(tmp_path, lora_dir, monkeypatch):
    """A crash while writing the container leaves no DST and no visible (or hidden) partial directory."""
    parent = tmp_path / "out"
    parent.mkdir()

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(compeft.artifact, "write_container", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        compeft.compress(lora_dir, parent / "dst", device="cpu")
    assert list(parent.iterdir()) == []


def test_failure_with_overwrite_keeps_the_old_destination(tmp_path, lora_dir, lora_artifact, monkeypatch):
    """With overwrite, a crash before the swap leaves the previous DST as it was."""
    dst = tmp_path / "dst"
    shutil.copytree(lora_artifact, dst)
    before = {p.name: p.read_bytes() for p in dst.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(compeft.artifact, "write_container", boom)
    with pytest.raises(RuntimeError):
        compeft.compress(lora_dir, dst, density=0.5, device="cpu", overwrite=True)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


def test_decompress_failure_leaves_nothing(tmp_path, lora_artifact, monkeypatch):
    """A crash while writing the decompressed adapter leaves no DST and no partial directory."""
    parent = tmp_path / "out"
    parent.mkdir()

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(compeft.pipeline, "write_adapter", boom)
    with pytest.raises(RuntimeError):
        compeft.decompress(lora_artifact, parent / "dst", device="cpu")
    assert list(parent.iterdir()) == []


def test_load_of_missing_artifact_is_a_container_error(tmp_path):
    """load/inspect of a directory without compeft.safetensors raise ContainerError naming the file."""
    (tmp_path / "empty").mkdir()
    for fn in (compeft.load, compeft.inspect):
        with pytest.raises(ContainerError, match="compeft.safetensors"):
            fn(tmp_path / "empty")


def test_load_accepts_the_container_file_path(lora_artifact):
    """load/inspect accept the compeft.safetensors path as well as the artifact directory."""
    from checks import assert_tensors_identical

    assert_tensors_identical(compeft.load(lora_artifact / FILE), compeft.load(lora_artifact), "file vs dir")
    assert compeft.inspect(lora_artifact / FILE).kept == compeft.inspect(lora_artifact).kept


def test_decompress_without_adapter_config_is_refused(tmp_path, lora_artifact):
    """decompress of an artifact missing adapter_config.json raises ContainerError and writes nothing."""
    art = tmp_path / "art"
    shutil.copytree(lora_artifact, art)
    (art / "adapter_config.json").unlink()
    with pytest.raises(ContainerError, match="adapter_config.json"):
        compeft.decompress(art, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_compress_onto_its_own_source_is_refused(tmp_path, lora_dir):
    """compress SRC SRC --overwrite is refused (exit code 2) and the source adapter is left intact."""
    src = tmp_path / "src"
    shutil.copytree(lora_dir, src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    with pytest.raises(InputError):
        compeft.compress(src, src, device="cpu", overwrite=True)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
