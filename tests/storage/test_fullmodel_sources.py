"""Full fine-tunes as catalog candidates (issue 17): the base a model names, and an S3 prefix yielding one
(local and Hub sources run whole catalogs in tests/flows/test_fullmodel_catalog.py)."""

from __future__ import annotations

from pathlib import Path

import compeft
from bench.fullpair import ModelShape, write_pair
from storage.fullmodels import card_base_model, declared_base, is_full_model, model_files, resolve_full_base
from storage.sources import open_source


def test_which_directories_are_full_models_and_their_files():
    assert is_full_model(["config.json", "model.safetensors"])
    assert is_full_model(["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"])
    assert not is_full_model(["config.json", "pytorch_model.bin"])  # pickles: never
    assert not is_full_model(["config.json", "model.safetensors", "adapter_config.json"])  # an adapter
    assert model_files(["config.json", "model.safetensors", "tokenizer.json", "notes.txt", "sub/x.safetensors",
                        "training_args.bin"]) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_the_base_a_fine_tune_names():
    card = "---\nlicense: mit\nbase_model: meta/llama-7b\ntags:\n- x\n---\n# card\n"
    assert card_base_model(card) == "meta/llama-7b"
    assert card_base_model("---\nbase_model:\n  - 'org/base'\n  - other/base\n---\n") == "org/base"
    assert card_base_model("# no metadata\nbase_model: x\n") is None
    assert declared_base({"_name_or_path": "from/config"}, card) == "meta/llama-7b"  # the card first
    assert declared_base({"_name_or_path": "from/config"}, None) == "from/config"
    assert declared_base({"_name_or_path": ""}, "no card metadata") is None
    assert resolve_full_base("ft", "declared/base", {"ft": "mapped/base"}) == "mapped/base"  # the mapping first
    assert resolve_full_base("ft", None, {}) is None
    assert resolve_full_base("ft", "../base", {}, "/data/catalog/ft") == str(Path("/data/catalog/base").resolve())


def test_s3_prefix_yields_full_fine_tunes(s3_client, bucket, tmp_path):
    ft, base = write_pair(ModelShape("t", 64, 128, 2, 256), tmp_path / "pair", shard_bytes=40_000)
    (ft / "README.md").write_text(f"---\nbase_model: {base}\n---\n")
    for p in ft.iterdir():
        s3_client.put_object(Bucket=bucket, Key=f"zoo/ft-a/{p.name}", Body=p.read_bytes())
    s3_client.put_object(Bucket=bucket, Key="zoo/old/config.json", Body=b"{}")
    s3_client.put_object(Bucket=bucket, Key="zoo/old/pytorch_model.bin", Body=b"\x80")
    source = open_source(f"s3://{bucket}/zoo")
    source.client = s3_client
    refs = [r for r in source.iter_adapters() if hasattr(r, "peft_type")]
    assert [(r.name, r.peft_type, r.base_model) for r in refs] == [("ft-a", "FULL", str(base))]
    assert {f.name for f in refs[0].files} == {p.name for p in ft.iterdir()}
    fetched = source.fetch(refs[0], tmp_path / "fetched")
    info = compeft.compress(fetched, tmp_path / "art", base=base, density=0.1, device="cpu")
    assert info.kind == "full" and info.ratio > 4
