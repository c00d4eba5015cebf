"""The census, without Prefect: the one computation, its numbers checked against a catalog built and compressed in
the test (SQLite and PostgreSQL), ``compeft registry census`` and ``compeft catalog --dry-run`` (no weights read)."""

from __future__ import annotations

import json

from storage_testlib import FOUND_FINAL, SKIPPED_FINAL, build_tree

from compeft.api import compress
from compeft.config import CompressionConfig
from compeft.hashing import sha256_file
from storage import catalog
from storage.census import CensusItem, reason_key, registry_census, run_census, source_census, take_census
from storage.cli import registry_main
from storage.registry import open_registry
from storage.sources import open_source
from storage.values import StoredArtifact


def test_reason_keys_and_the_pure_computation():
    assert reason_key("/data/x/adapter_config.json: config is not valid JSON (line 1)") == "config is not valid JSON (line 1)"
    assert reason_key("hf://a/b@0123/sub: HTTP 500: boom") == "HTTP 500: boom"
    assert reason_key("refusing file 'w.safetensors': 123 bytes exceeds the 64-byte cap") == \
        "refusing file 'w.safetensors': N bytes exceeds the N-byte cap"
    census = take_census(
        [CensusItem("LORA", "peft", "F32", "m/a", 100, 10), CensusItem("LORA", "peft", "BF16", "m/a", 300),
         CensusItem("diffusers", "diffusers", "F16", "unknown", 50, 5)],
        ["/x/a: pickle", "/y/b: pickle", "no adapter"])
    assert census.adapters == 3 and census.families == {"LORA": 2, "diffusers": 1}
    assert list(census.base_models) == ["m/a", "unknown"] and census.dtypes == {"BF16": 1, "F16": 1, "F32": 1}
    assert (census.bytes_before, census.compressed, census.bytes_before_compressed, census.bytes_after) == (450, 2, 150, 15)
    assert census.ratio == 10.0 and census.skipped == 3 and census.skip_reasons == {"pickle": 2, "no adapter": 1}
    markdown = census.markdown("Census of x")
    assert markdown.startswith("# Census of x") and "| LORA | 2 |" in markdown and "| pickle | 2 |" in markdown
    assert "compressed 2 of them: 150 → 15 bytes (10.0×)" in census.text()


def test_census_of_a_catalog_built_in_the_test(database_url, tmp_path, capsys):
    """Three of the six adapters compressed and registered: the run's and the registry's census add up."""
    root = build_tree(tmp_path / "tree")
    source = open_source(str(root))
    refs, skipped = catalog.crawl(source)
    assert {r.name for r in refs} == FOUND_FINAL and len(skipped) == len(SKIPPED_FINAL)
    config = CompressionConfig(density=0.1)
    chosen = sorted(refs, key=lambda r: r.name)[:3]
    outcomes, after = [], 0
    with open_registry(database_url, upgrade=True) as registry:
        for i, ref in enumerate(chosen):
            fetched = source.fetch(ref, tmp_path / f"fetched-{i}")
            adapter = catalog.register_adapter(registry, fetched, ref)
            info = compress(fetched, tmp_path / f"artifact-{i}", config)
            sha = sha256_file(tmp_path / f"artifact-{i}" / "compeft.safetensors")
            stored = StoredArtifact(uri=str(tmp_path / f"artifact-{i}"), sha256=sha, bytes=info.bytes_artifact, created=True)
            artifact = catalog.register_artifact(registry, adapter, info, stored, config.key_fields(), config.key())
            outcomes.append(catalog.outcome(ref, "compressed", artifact))
            after += info.bytes_artifact
        outcomes += [catalog.AdapterOutcome(uri=s.uri, name=s.uri, status="skipped", reason=s.reason) for s in skipped]
        registry.start_run("run-1", {"source": str(root)})
        registry.finish_run("run-1", "completed", catalog.counts(outcomes), catalog.failures(outcomes))

        census = run_census(refs, skipped, outcomes, registry)
        assert census.adapters == 6 and census.families == {"LORA": 6} and census.layouts == {"peft": 6}
        assert census.dtypes == {"F32": 6} and census.base_models == {"tiny/base": 5, "other/base": 1}
        assert census.bytes_before == sum(r.size for r in refs) and census.compressed == 3
        assert census.bytes_before_compressed == sum(r.size for r in chosen) and census.bytes_after == after
        expected_reasons = {reason_key(s.reason): 0 for s in skipped}
        for s in skipped:
            expected_reasons[reason_key(s.reason)] += 1
        assert census.skipped == 4 and census.skip_reasons == expected_reasons
        assert sorted(census.skip_reasons.values()) == [1, 1, 2]  # the two checkpoints beside a final adapter: one line

        stored = registry_census(registry)
        assert stored.adapters == 3 and stored.compressed == 3 and stored.bytes_after == after
        assert stored.bytes_before == sum(r.size for r in chosen) and stored.skip_reasons == expected_reasons
        assert stored.dtypes == {"F32": 3} and stored.layouts == {"peft": 3}
        assert source_census(refs, skipped).compressed == 0
    assert registry_main(["census", "--json", "--database-url", database_url]) == 0
    assert json.loads(capsys.readouterr().out) == stored.to_dict()
    assert registry_main(["census", "--database-url", database_url]) == 0
    assert "3 adapter(s) found, 4 skipped" in capsys.readouterr().out


def test_dry_run_lists_and_counts_without_reading_weights(hub, tmp_path, capsys, monkeypatch):
    """``compeft catalog hf://ORG --dry-run`` reads the Hub's listings and the adapters' configs, nothing else."""
    from compeft.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    root = build_tree(tmp_path / "tree")
    for repo in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {f.relative_to(repo).as_posix(): f.read_bytes() for f in sorted(repo.rglob("*")) if f.is_file()}
        hub.state.add_repo(f"acme/{repo.name}", files, tags=["peft"])
    assert main(["catalog", "hf://acme", "--dry-run", "--json", "--hf-endpoint", hub.endpoint]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {a["name"] for a in result["adapters"]} == FOUND_FINAL
    census = result["census"]
    assert (census["adapters"], census["skipped"], census["compressed"]) == (6, 4, 0)
    assert census["families"] == {"LORA": 6} and census["base_models"] == {"tiny/base": 5, "other/base": 1}
    assert census["bytes_before"] == sum(a["bytes_before"] for a in result["adapters"]) > 0
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.state.requests if "/resolve/" in r.path}
    assert fetched == {"adapter_config.json"}  # six configs; no weights, no optimizer state, no pickles
    assert main(["catalog", "hf://acme/run", "--dry-run", "--checkpoints", "all", "--hf-endpoint", hub.endpoint]) == 0
    text = capsys.readouterr().out
    assert "run/checkpoint-10" in text and "3 adapter(s) found, 0 skipped" in text
