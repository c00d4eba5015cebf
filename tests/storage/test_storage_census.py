"""The census, without Prefect: the one computation, its numbers checked against a catalog built and compressed in
the test (SQLite and PostgreSQL), ``compeft registry census`` and ``compeft catalog --dry-run`` (no weights read)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
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
from tests.adapters import lora_config, write_adapter


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
    """``compeft catalog hf://ORG --dry-run`` reads the Hub's listings, the adapters' configs and their weights'
    headers (by ranged GETs), nothing else."""
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
    assert census["dtypes"] == {"F32": 6}  # from the weights' headers
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.state.requests if "/resolve/" in r.path}
    assert fetched == {"adapter_config.json", "adapter_model.safetensors"}  # no optimizer state, no pickles
    weights = [r for r in hub.state.requests if r.path.endswith("/adapter_model.safetensors")]
    assert len(weights) == 6 and all(r.method == "GET" and r.header("Range") for r in weights)  # headers only
    assert main(["catalog", "hf://acme/run", "--dry-run", "--checkpoints", "all", "--hf-endpoint", hub.endpoint]) == 0
    text = capsys.readouterr().out
    assert "run/checkpoint-10" in text and "3 adapter(s) found, 0 skipped" in text


def remote_adapters(root: Path) -> dict[str, int]:
    """Two adapters whose dtypes the census must tell: a BF16 LoRA larger than a header's first read (100 kB) and a
    small one mixing BF16 and F32; {folder: weights size}."""
    g = torch.Generator().manual_seed(7)
    big = {f"base_model.model.model.layers.{i}.self_attn.{p}.lora_{ab}.weight":
           torch.randn(*((8, 2048) if ab == "A" else (2048, 8)), generator=g).to(torch.bfloat16)
           for i in range(2) for p in ("q_proj", "v_proj") for ab in "AB"}
    write_adapter(root / "big", big, lora_config(rank=8))
    mixed = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, 16, generator=g),
             "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(16, 4, dtype=torch.bfloat16)}
    write_adapter(root / "mixed", mixed, lora_config())
    return {name: (root / name / "adapter_model.safetensors").stat().st_size for name in ("big", "mixed")}


EXPECTED_DTYPES = {"BF16": 1, "BF16+F32": 1}


def test_s3_dry_run_reads_dtypes_from_headers_by_range(s3_client, bucket, tmp_path, capsys, monkeypatch):
    """``compeft catalog s3://… --dry-run`` reports real dtypes: ranged GetObjects read the weights' headers only."""
    from compeft.cli import main
    from storage.sources import s3 as s3_source

    sizes = remote_adapters(tmp_path / "src")
    for path in sorted((tmp_path / "src").rglob("*")):
        if path.is_file():
            s3_client.put_object(Bucket=bucket, Key=f"zoo/{path.relative_to(tmp_path / 'src').as_posix()}",
                                 Body=path.read_bytes())
    gets: list[tuple[str, str | None, int]] = []  # (key, Range asked, bytes the store answered)
    asked: dict[str, str | None] = {}
    made = s3_source.make_s3_client

    def counting_client(endpoint):
        client = made(endpoint)
        client.meta.events.register("before-parameter-build.s3.GetObject",
                                    lambda params, **kw: asked.__setitem__(params["Key"], params.get("Range")))
        client.meta.events.register("after-call.s3.GetObject", lambda http_response, parsed, model, **kw: gets.append(
            (http_response.url.rsplit("/zoo/", 1)[1], asked.get("zoo/" + http_response.url.rsplit("/zoo/", 1)[1]),
             parsed["ContentLength"])))
        return client

    monkeypatch.setattr(s3_source, "make_s3_client", counting_client)
    assert main(["catalog", f"s3://{bucket}/zoo", "--dry-run", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {a["name"]: a["dtype"] for a in result["adapters"]} == {"big": "BF16", "mixed": "BF16+F32"}
    assert result["census"]["dtypes"] == EXPECTED_DTYPES
    weights = {key: (rng, n) for key, rng, n in gets if key.endswith(".safetensors")}
    assert set(weights) == {"big/adapter_model.safetensors", "mixed/adapter_model.safetensors"}
    assert all(rng and rng.startswith("bytes=0-") for rng, _ in weights.values())
    assert weights["big/adapter_model.safetensors"][1] < sizes["big"] // 2  # the header, not the weights
    assert main(["catalog", f"s3://{bucket}/zoo", "--dry-run"]) == 0
    assert "BF16+F32" in capsys.readouterr().out


def test_hub_dry_run_reads_dtypes_from_headers_by_range(hub, tmp_path, capsys, monkeypatch):
    """``compeft catalog hf://… --dry-run`` reports real dtypes: ranged GETs of the resolve URL read the headers
    only (the test Hub answers ``Range`` with 206 and counts the bytes it sent)."""
    from compeft.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    sizes = remote_adapters(tmp_path / "src")
    for name in sizes:
        hub.state.add_repo(f"acme/{name}", {f.name: f.read_bytes() for f in (tmp_path / "src" / name).iterdir()},
                           tags=["peft"])
    assert main(["catalog", "hf://acme", "--dry-run", "--json", "--hf-endpoint", hub.endpoint]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {a["name"]: a["dtype"] for a in result["adapters"]} == {"big": "BF16", "mixed": "BF16+F32"}
    assert result["census"]["dtypes"] == EXPECTED_DTYPES
    sent = {path.split("/")[2]: n for path, n in hub.state.sent.items() if path.endswith("/adapter_model.safetensors")}
    assert set(sent) == {"big", "mixed"} and sent["mixed"] == sizes["mixed"]  # a small file fits the first read
    assert sent["big"] < sizes["big"] // 2  # the header, not the weights
    assert all(r.header("Range") for r in hub.state.requests if r.path.endswith(".safetensors"))


def test_hub_ranged_reads_are_retried_and_survive_a_server_that_ignores_range(hub, tmp_path, fast_retry):
    """``HubClient.read_range``: a 503 is retried like every Hub call; a server answering 200 with the whole file
    still gives exactly the bytes asked for; a header read fails over to ``unknown``, never a wrong dtype."""
    from storage.hub import HubClient
    from storage.sources import open_source

    remote_adapters(tmp_path / "src")
    data = (tmp_path / "src" / "big" / "adapter_model.safetensors").read_bytes()
    sha = hub.state.add_repo("acme/big", {f.name: f.read_bytes() for f in (tmp_path / "src" / "big").iterdir()})
    client = HubClient(hub.endpoint, token=False, policy=fast_retry)
    hub.state.fail_next(r"/adapter_model\.safetensors$", 503, count=1)
    assert client.read_range("acme/big", "adapter_model.safetensors", sha, 1000, 50) == data[1000:1050]
    assert hub.state.count("GET", r"/adapter_model\.safetensors$") == 2
    hub.state.ignore_range = True
    assert client.read_range("acme/big", "adapter_model.safetensors", sha, 1000, 50) == data[1000:1050]
    (ref,) = open_source("hf://acme/big", hf_endpoint=hub.endpoint, retry_policy=fast_retry).iter_adapters()
    assert ref.dtype == "BF16"
    hub.state.ignore_range = False
    hub.state.add_repo("acme/big", {"adapter_model.safetensors": b"\xff" * 8 + data[8:]})  # a header over the cap
    (ref,) = open_source("hf://acme/big", hf_endpoint=hub.endpoint, retry_policy=fast_retry).iter_adapters()
    assert ref.dtype is None and ref.peft_type == "LORA"


def test_a_remote_header_is_read_in_at_most_two_ranges_and_capped(tmp_path):
    """``fetch_header``: the first read, then the rest of a longer header; the cap is checked before the second
    read; a reader that comes back short is a truncated file, one line naming it."""
    from compeft.safetensors_header import MAX_HEADER_BYTES, fetch_header
    from storage.errors import SourceError

    path = tmp_path / "w.safetensors"
    save_file({f"t{i}": torch.zeros(64) for i in range(40)}, str(path))
    data = path.read_bytes()
    reads: list[tuple[int, int]] = []

    def read(start: int, length: int) -> bytes:
        reads.append((start, length))
        return data[start:start + length]

    header, start = fetch_header(read, len(data), "w", SourceError, first=64)
    assert len(header) == 40 and reads == [(0, 64), (64, start - 64)] and start < len(data)
    reads.clear()
    assert fetch_header(read, len(data), "w", SourceError, first=start + 10)[1] == start and len(reads) == 1
    huge = struct.pack("<Q", MAX_HEADER_BYTES + 1) + data[8:]
    reads.clear()
    with pytest.raises(SourceError, match="exceeds the"):
        fetch_header(lambda s, n: (reads.append((s, n)), huge[s:s + n])[1], len(huge), "w", SourceError, first=64)
    assert len(reads) == 1
    with pytest.raises(SourceError, match="^w: truncated"):
        fetch_header(lambda s, n: data[s:min(s + n, 100)], len(data), "w", SourceError, first=64)
