"""Hostile artifacts (issue 15): crafted containers with valid checksums (tests/core/hostile.py recomputes them as
the writer does) are refused by every reader — inspect, load, decompress, the fast and resident loads and the
CLI — with one line naming the file and exit code 2, before anything large is allocated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hostile import FILE, craft

import compeft
from compeft.cli import main as cli
from compeft.container import read_bytes
from compeft.errors import AdapterFormatError, ContainerError, InputError
from compeft.fastload import ResidentArtifact, load_bytes
from tests.adapters import lora_config, write_adapter

GOLDEN_V1 = Path(__file__).resolve().parents[1] / "golden" / "v1"
HEAD = "base_model.model.score.weight"  # carried: not a delta component


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A golomb artifact of a small LoRA with one carried tensor (k = 0.2)."""
    root = tmp_path_factory.mktemp("hostile")
    g = torch.Generator().manual_seed(5)
    tensors = {HEAD: torch.randn(3, 16, generator=g)}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(4, 16, generator=g)
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(16, 4, generator=g)
    src = write_adapter(root / "src", tensors, lora_config())
    compeft.compress(src, root / "art", density=0.2, device="cpu")
    return root / "art"


def refused(art: Path, tmp: Path, match: str | None = None, *, error: type[InputError] = InputError) -> None:
    """Every reader refuses ``art`` with ``error``: one line naming the file (and ``match``), exit code 2."""
    path = art / FILE
    readers = {
        "inspect": lambda: compeft.inspect(art),
        "load": lambda: compeft.load(art),
        "decompress": lambda: compeft.decompress(art, tmp / "never", device="cpu"),
        "load_bytes": lambda: load_bytes(read_bytes(path), label=str(path)),
        "load_bytes unverified": lambda: load_bytes(read_bytes(path), verify=False, label=str(path)),
        "resident": lambda: ResidentArtifact.open(art).load(),
    }
    for what, read in readers.items():
        with pytest.raises(error) as info:
            read()
        message = str(info.value)
        assert "\n" not in message and len(message) < 400, f"{what}: {message!r}"
        assert str(path) in message, f"{what}: the error does not name the file: {message}"
        if match is not None:
            assert match in message, f"{what}: {message}"
        assert info.value.exit_code == 2
    assert not (tmp / "never").exists()


def cli_refuses(capsys, *argv: str) -> str:
    """The CLI's one stderr line for ``argv``, which must exit 2."""
    capsys.readouterr()
    assert cli(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compeft: error: ") and "\n" not in err, err
    return err


def _rename_carried_to_first_record(doc: dict, tensors: dict) -> None:
    from checks import read_record_table

    first = read_record_table(tensors["records/table"].numpy().tobytes(), doc["records"], doc["record_dtypes"])[0]["name"]
    doc["carried"][0]["name"] = first
    tensors["carried/" + first] = tensors.pop("carried/" + HEAD)


def _rank_100(records: list[dict]) -> None:
    records[0]["shape"] = [1] * (100 - len(records[0]["shape"])) + list(records[0]["shape"])


DOCUMENT_EDITS = {
    # item 5: the document is canonical and fully type-checked
    "duplicate-key": (dict(doc_text=lambda t: t.replace('"kind":"adapter"', '"kind":"full","kind":"adapter"')), "repeated key"),
    "deep-nesting": (dict(doc_text=lambda t: t[:-1] + ',"zz":' + "[" * 200_000 + "]" * 200_000 + "}"), "not valid JSON"),
    "codec-not-a-string": (dict(doc=lambda d: d.update(codec=5)), "codec"),
    "source-not-an-object": (dict(doc=lambda d: d.update(source=[1])), "'source'"),
    "carried-name-a-list": (dict(doc=lambda d: d["carried"][0].update(name=["x"])), "carried record"),
    "carried-shape-a-fraction": (dict(doc=lambda d: d["carried"][0].update(shape=[1.5, 16])), "carried record"),
    "package-version-missing": (dict(doc=lambda d: d.pop("package_version")), "'package_version' is missing"),
    "scale-1e308": (dict(doc=lambda d: d.update(scale=1e308)), "'scale'"),
    "scale-not-alpha-sigma": (dict(doc=lambda d: d.update(scale=d["scale"] * 2)), "float32(alpha·sigma)"),
    "d-fraction": (dict(doc=lambda d: d.update(d=d["d"] + 0.9)), "'d'"),
    "d-string": (dict(doc=lambda d: d.update(d=str(d["d"]))), "'d'"),
    "kept-true": (dict(doc=lambda d: d.update(kept=True)), "'kept'"),
    "alpha-an-integer": (dict(doc=lambda d: d.update(alpha=1)), "'alpha'"),
    "unknown-field": (dict(doc=lambda d: d.update(zz=1)), "'zz' is not part of format version"),
    "unknown-source-field": (dict(doc=lambda d: d["source"].update(zz="x")), "'source.zz'"),
    "source-layout-not-a-string": (dict(doc=lambda d: d["source"].update(layout=3)), "'source.layout'"),
    "source-hash-not-hex": (dict(doc=lambda d: d["source"]["files"].update({"adapter_config.json": "x"})), "sha256"),
    "source-merge-weight-a-string": (dict(doc=lambda d: d["source"].update(merge={
        "operation": "merge", "method": "ties", "lam": 1.0, "inputs": [{"path": "a", "sha256": "0" * 64, "weight": "1"}]})),
        "'source.merge.inputs[0].weight'"),
    "source-merge-unknown-field": (dict(doc=lambda d: d["source"].update(merge={
        "operation": "merge", "method": "ties", "lam": 1.0, "inputs": [], "zz": 1})), "'source.merge.zz'"),
    "base-on-an-adapter": (dict(doc=lambda d: d.update(base={"tensor_sha256": {}})), "full fine-tune"),
    "non-canonical-spacing": (dict(doc_text=lambda t: t.replace(",", ", ", 1)), "canonical"),
    "non-canonical-escape": (dict(doc_text=lambda t: t.replace('"adapter"', '"\\u0061dapter"')), "canonical"),
    "non-canonical-number": (dict(doc_text=lambda t: t.replace('"alpha":1.0', '"alpha":1.0e0')), "canonical"),
    "non-canonical-key-order": (dict(doc_text=lambda t: '{"zz":0,' + t[1:].replace(',"zz":0', "")), "canonical"),
    "nan": (dict(doc_text=lambda t: t.replace('"alpha":1.0', '"alpha":NaN')), "non-finite"),
    "non-canonical-header": (dict(header_bytes=lambda b: b.replace(b'{"__metadata__"', b'{ "__metadata__"')), "canonical"),
    "header-duplicate-key": (dict(header_bytes=lambda b: b.replace(b'{"__metadata__"', b'{"payload":{},"__metadata__"')),
                             "repeated key"),
    # records: θ_init beyond float32, a carried tensor shadowing a record, a rank-100 record
    "theta-init-1e308": (dict(records=lambda r: r[0].update(theta_init=1e308)), "theta_init"),
    "carried-named-like-a-record": (dict(doc=lambda d: None), "name of a delta record"),
    "rank-100-record": (dict(records=_rank_100), "dimensions"),
}


@pytest.mark.parametrize("case", sorted(DOCUMENT_EDITS))
def test_hostile_document_is_refused_everywhere(tmp_path, artifact, capsys, case):
    """Issue 15 item 5: duplicate keys, deep nesting, wrong types, out-of-range numbers, unknown keys, a
    non-canonical text or header, θ_init beyond float32, a carried tensor named like a record and a rank-100
    record are each one exit-2 line naming the file, from inspect, load, decompress and the fast loads."""
    edits, match = DOCUMENT_EDITS[case]
    if case == "non-canonical-key-order":
        edits = dict(doc=lambda d: d.update(zz=0), **edits)
        match = "canonical"  # refused as non-canonical before the unknown key is seen
    if case == "carried-named-like-a-record":
        from hostile import put_together, take_apart

        art = tmp_path / "art"
        shutil.copytree(artifact, art)
        doc, tensors = take_apart(art / FILE)
        _rename_carried_to_first_record(doc, tensors)
        put_together(art / FILE, doc, tensors)
    else:
        art = craft(artifact, tmp_path / "art", **edits)
    refused(art, tmp_path, match)
    assert str(art / FILE) in cli_refuses(capsys, "inspect", str(art))
    cli_refuses(capsys, "decompress", str(art), str(tmp_path / "out"))


def test_source_keys_of_other_layouts_are_accepted(tmp_path, artifact):
    """The source object takes the string-valued keys other adapter layouts record (layout, weights_file)."""
    art = craft(artifact, tmp_path / "art", doc=lambda d: d["source"].update(layout="diffusers", weights_file="x.safetensors"))
    info = compeft.inspect(art)
    assert info.source["layout"] == "diffusers" and info.source["weights_file"] == "x.safetensors"
    assert compeft.load(art).keys() == compeft.load(artifact).keys()


@pytest.mark.parametrize("value", [True, "16", 16.0, -1])
def test_version_1_records_are_not_coerced(tmp_path, value):
    """Issue 15 item 5: a version-1 record's offset or dimension given as a bool, a string, a float or a negative
    number is refused, not coerced."""
    for edit in (lambda d: d["tensors"][1].update(offset=value), lambda d: d["tensors"][0]["shape"].__setitem__(0, value)):
        shutil.rmtree(tmp_path / "art", ignore_errors=True)
        art = craft(GOLDEN_V1 / "lora-golomb", tmp_path / "art", doc=edit)
        with pytest.raises(ContainerError):
            compeft.inspect(art)
        with pytest.raises(ContainerError):
            load_bytes(read_bytes(art / FILE))


def test_deeply_nested_adapter_config_is_one_line(tmp_path, capsys):
    """Issue 15 item 5: an adapter_config.json of 200,000 nested brackets is an AdapterFormatError, not a
    RecursionError traceback."""
    src = write_adapter(tmp_path / "src", {"m.lora_A.weight": torch.ones(2, 2)}, lora_config())
    (src / "adapter_config.json").write_text('{"peft_type":"LORA","x":' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(AdapterFormatError, match="not valid JSON"):
        compeft.compress(src, tmp_path / "out", device="cpu")
    assert "adapter_config.json" in cli_refuses(capsys, "compress", str(src), str(tmp_path / "out2"))


def test_writer_output_passes_its_own_canonical_checks(artifact):
    """The writer's document is what the schema accepts: every key known, floats as floats."""
    from hostile import take_apart

    doc, _ = take_apart(artifact / FILE)
    assert all(type(doc[k]) is float for k in ("density", "alpha", "sigma", "scale", "threshold"))
    assert json.loads(json.dumps(doc)) == doc


# ---- issue 15 items 3, 4, 6: bombs, reading before checking, inspect's structural checks ----

def zero_golomb_payload(d: int, declared: int | None = None) -> torch.Tensor:
    """A valid golomb payload of d zeros: chunks of MAX_CHUNK entries that code nothing (24 bytes each); its
    header says ``declared`` entries when given."""
    import numpy as np

    from compeft.codecs.golomb.format import MAX_CHUNK, TABLE_DTYPE, header_bytes

    lengths = [min(MAX_CHUNK, d - s) for s in range(0, d, MAX_CHUNK)]
    table = np.zeros(len(lengths), dtype=TABLE_DTYPE)
    table["length"], table["m"] = lengths, 1
    return torch.frombuffer(bytearray(header_bytes(d if declared is None else declared, table)), dtype=torch.uint8)


def declare_entries(d: int, payload: torch.Tensor | None = None):
    """Edits making a container declare one record of d float32 entries, nothing kept, coded by ``payload``
    (default: a valid all-zero golomb payload of d entries)."""
    from hostile import record_table

    def doc(document: dict) -> None:
        document.update(d=d, kept=0, sigma=0.0, scale=0.0, threshold=0.0, records=1, record_dtypes=["F32"], carried=[])

    def tensors(t: dict) -> None:
        t.clear()
        t.update({"payload": zero_golomb_payload(d) if payload is None else payload,
                  "records/table": record_table([{"name": "bomb.lora_A.weight", "shape": [d], "dtype": "F32",
                                                  "theta_init": 0.0}], ["F32"])})

    return dict(doc=doc, tensors=tensors)


def test_consistent_bomb_is_refused_before_allocating(tmp_path, artifact, capsys, monkeypatch):
    """Issue 15 item 3: a 1.5 MB artifact with valid checksums and a valid payload that declares 2³⁶ entries
    (256 GiB of float32) is one exit-2 line naming the bytes it needs and the limit, from every decode path;
    inspect (which decodes nothing) describes it."""
    art = craft(artifact, tmp_path / "art", **declare_entries(1 << 36))
    assert (art / FILE).stat().st_size < 2 << 20
    monkeypatch.setenv("COMPEFT_MEMORY_LIMIT", "1G")
    from compeft.errors import ResourceLimitError

    refused_paths = {
        "load": lambda: compeft.load(art),
        "decompress": lambda: compeft.decompress(art, tmp_path / "never", device="cpu"),
        "load_bytes": lambda: load_bytes(read_bytes(art / FILE), label=str(art / FILE)),
        "resident": lambda: ResidentArtifact.open(art).load(),
    }
    for what, read in refused_paths.items():
        with pytest.raises(ResourceLimitError, match=r"needs 274,877,906,944 bytes, more than the memory limit of 1,073,741,824") as info:
            read()
        assert info.value.exit_code == 2 and "\n" not in str(info.value), what
    err = cli_refuses(capsys, "decompress", str(art), str(tmp_path / "out"))
    assert "274,877,906,944 bytes" in err and "COMPEFT_MEMORY_LIMIT" in err
    assert compeft.inspect(art).d == 1 << 36
    monkeypatch.delenv("COMPEFT_MEMORY_LIMIT")  # the default limit (the machine's memory) refuses it too
    with pytest.raises(ResourceLimitError):
        compeft.load(art)


def _inflate_first_count(t: dict) -> None:
    """Chunk 0 of the golomb payload claims every entry of its chunk coded (its unary plane is far too short)."""
    import numpy as np

    from compeft.codecs.golomb.format import ENTRY, HEADER, TABLE_DTYPE

    raw = bytearray(t["payload"].numpy().tobytes())
    entry = np.frombuffer(raw, dtype=TABLE_DTYPE, count=1, offset=HEADER.size).copy()
    entry["count"] = entry["length"]
    raw[HEADER.size : HEADER.size + ENTRY.size] = entry.tobytes()
    t["payload"] = torch.frombuffer(raw, dtype=torch.uint8)


PAYLOAD_EDITS = {
    # d beyond what the payload's chunks can describe (one chunk, 2⁴⁰ entries): refused before the table is read
    "d-beyond-the-chunks": (declare_entries(1 << 40, zero_golomb_payload(16, 1 << 40)), "cannot describe"),
    # more coded positions than the chunk's unary bits can end
    "count-beyond-the-unary-bits": (dict(tensors=_inflate_first_count), "unary bytes"),
    # a chunk table cut short
    "chunk-table-corrupt": (dict(tensors=lambda t: t.update(payload=t["payload"][:40].clone())), "golomb"),
    "unknown-codec": (dict(doc=lambda d: d.update(codec="no-such-codec")), "unknown codec"),
}


@pytest.mark.parametrize("case", sorted(PAYLOAD_EDITS))
def test_payload_structure_is_checked_by_inspect_and_every_decode_path(tmp_path, artifact, capsys, case):
    """Issue 15 items 3 and 6: a payload whose structure is out of proportion to its bytes or inconsistent is
    refused by inspect (which no longer says "verified" for what decompress refuses), by every decode path and
    by the codec's own prepare, before d entries are allocated."""
    edits, match = PAYLOAD_EDITS[case]
    art = craft(artifact, tmp_path / "art", **edits)
    refused(art, tmp_path, match)
    assert match in cli_refuses(capsys, "inspect", str(art))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_codec_backends_refuse_payloads_out_of_proportion(backend):
    """Issue 15 item 3: the golomb backends decode only through a checked plan, and the plan refuses a payload
    declaring more entries or positions than its bytes allow (the Triton plan is made from the same table)."""
    from compeft.codecs import get_codec
    from compeft.errors import CodecError

    codec = get_codec("golomb")
    with pytest.raises(CodecError, match="cannot describe"):
        codec.prepare(zero_golomb_payload(16, 1 << 40), 1 << 40)
    payload = zero_golomb_payload(3 << 20)
    plan = codec.prepare(payload, 3 << 20)
    out = torch.empty(3 << 20, dtype=torch.int8)
    codec.decode_into(plan, payload, out, torch.tensor([-1, 0, 1], dtype=torch.int8), backend=backend)()
    assert not out.any()
    inflated = {"payload": payload.clone()}
    _inflate_first_count(inflated)
    with pytest.raises(CodecError, match="unary bytes"):
        codec.prepare(inflated["payload"], 3 << 20)


def test_oversized_file_is_refused_from_its_header(tmp_path, artifact):
    """Issue 15 item 4: a 1 TB (sparse) file whose header describes a few KB of tensors is refused after reading
    its header, without reading (or allocating) the file."""
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    with open(art / FILE, "r+b") as f:
        try:
            f.truncate(1 << 40)
        except OSError:
            pytest.skip("the file system holds no 1 TB sparse file")
    for read in (lambda: compeft.inspect(art), lambda: compeft.load(art), lambda: read_bytes(art / FILE)):
        with pytest.raises(ContainerError, match="data section is"):
            read()


def test_memory_limit_refuses_a_large_input_with_one_line(tmp_path, capsys, monkeypatch):
    """Issue 15 items 3 and 8: compressing an input larger than COMPEFT_MEMORY_LIMIT is one exit-2 line naming the
    bytes and the limit; running out of memory below the limit is one line too, not a MemoryError traceback."""
    src = write_adapter(tmp_path / "src", {"m.lora_A.weight": torch.ones(64, 1024)}, lora_config())
    monkeypatch.setenv("COMPEFT_MEMORY_LIMIT", "64K")
    err = cli_refuses(capsys, "compress", str(src), str(tmp_path / "out"))
    assert "adapter_model.safetensors" in err and "65,536 bytes" in err
    monkeypatch.setenv("COMPEFT_MEMORY_LIMIT", "lots")
    assert "COMPEFT_MEMORY_LIMIT='lots'" in cli_refuses(capsys, "compress", str(src), str(tmp_path / "out"))
    monkeypatch.delenv("COMPEFT_MEMORY_LIMIT")
    import compeft.pipeline

    for failure in (MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")):
        def boom(*args, failure=failure, **kwargs):
            raise failure

        monkeypatch.setattr(compeft.pipeline, "ternarize", boom)
        err = cli_refuses(capsys, "compress", str(src), str(tmp_path / "out"))
        assert "out of memory" in err and str(src) in err
    assert not (tmp_path / "out").exists()


def test_object_valued_base_model_is_refused_not_written_into_the_card(tmp_path, capsys):
    """Issue 15 item 8: base_model_name_or_path given as an object is one exit-2 line from compress (it never
    reaches the model card's YAML as a mapping), and a catalog listing records the base model as unknown."""
    from storage.sources import open_source

    root = tmp_path / "cat"
    config = lora_config(base=None)
    config["base_model_name_or_path"] = {"name": "x", "revision": "main"}
    src = write_adapter(root / "odd", {"m.lora_A.weight": torch.ones(2, 2)}, config)
    err = cli_refuses(capsys, "compress", str(src), str(tmp_path / "out"))
    assert "base_model_name_or_path must be a string" in err and not (tmp_path / "out").exists()
    (ref,) = [e for e in open_source(str(root)).iter_adapters() if getattr(e, "name", None) == "odd"]
    assert ref.base_model is None
