"""The example catalog: layout, adapter configs, and each adapter clearly beating the base."""

from __future__ import annotations

import json

import pytest

from compeft.adapters import read_adapter
from examples.catalog_builder import BASE_NAME, read_catalog
from examples.language import pretraining_sentences, vocabulary

# (adapter, minimum score, maximum base score) on the validation split: the margins the fixtures promise
PROMISES = {
    "lora-color": (0.9, 0.5),
    "lora-pair": (0.9, 0.5),
    "lora-plus": (0.9, 0.5),
    "ia3-next": (0.95, 0.9),
}


def test_language_is_deterministic():
    assert pretraining_sentences(50, 7) == pretraining_sentences(50, 7)
    assert len(vocabulary()) == len(set(vocabulary()))


def test_catalog_layout(catalog):
    assert read_catalog(catalog.root) == catalog
    assert (catalog.base_dir / "config.json").is_file() and (catalog.base_dir / "tokenizer.json").is_file()
    doc = json.loads((catalog.root / "catalog.json").read_text())
    assert doc["base"] == BASE_NAME
    kinds = {a.peft_type for a in catalog.adapters}
    assert kinds == {"LORA", "IA3", "FULL"}
    for a in catalog.adapters:
        assert a.path.parent == catalog.root and a.task_yaml.is_file()
        if a.peft_type == "FULL":
            assert (a.path / "model.safetensors").is_file() and (a.path / "tokenizer.json").is_file()
            continue
        adapter = read_adapter(a.path)
        assert adapter.peft_type == a.peft_type
        ref = adapter.config["base_model_name_or_path"]
        if a.name == "lora-pair":
            assert ref == ""  # like adapters trained on a model built from a config
        else:
            assert (a.path / ref).resolve() == catalog.base_dir.resolve()


def test_catalog_stays_small(catalog):
    total = sum(f.stat().st_size for f in catalog.root.rglob("*") if f.is_file())
    assert total < 8 << 20


@pytest.mark.parametrize("name", sorted(PROMISES))
def test_adapter_clearly_beats_the_base(catalog, score_adapter_dir, name):
    fixture = catalog.adapter(name)
    low, base_high = PROMISES[name]
    tuned = score_adapter_dir(fixture.path, fixture.task_yaml)
    base = score_adapter_dir(None, fixture.task_yaml)
    assert tuned.value >= low, tuned
    assert base.value <= base_high, base
    assert tuned.value - base.value >= 0.1


def test_full_fine_tune_beats_the_base(catalog, score_model_dir, score_adapter_dir):
    fixture = catalog.adapter("full-color")
    assert score_model_dir(fixture.path, fixture.task_yaml).value >= 0.9
    assert score_adapter_dir(None, fixture.task_yaml).value <= 0.5


def test_refuses_to_build_over_unrelated_files(tmp_path):
    from examples.catalog_builder import build_example_catalog

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no complete catalog"):
        build_example_catalog(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bundled_catalog_is_current(catalog):
    from examples.catalog_builder import BUNDLED, bundled_catalog

    assert bundled_catalog() is not None, (
        "the builder (examples/) changed since the bundled catalog was built: run `python -m examples.catalog_builder "
        "--regen` (or, if only files moved, put the new builder_hash() into examples/catalog/provenance.json)")
    assert catalog.root == BUNDLED


@pytest.mark.slow
def test_builder_rebuilds_an_equivalent_catalog(catalog, tmp_path, score_adapter_dir):
    """The builder still runs end to end; its adapters match the bundled ones in layout and beat the base.

    Bytes may differ from the bundled build on another CPU or library version (float training)."""
    from examples.catalog_builder import build_example_catalog

    fresh = build_example_catalog(tmp_path / "catalog")
    files = lambda root: sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())  # noqa: E731
    assert files(fresh.root) == [f for f in files(catalog.root) if f != "provenance.json"]
    fixture = fresh.adapter("lora-plus")
    assert score_adapter_dir(fixture.path, fixture.task_yaml, on=fresh).value >= PROMISES["lora-plus"][0]
