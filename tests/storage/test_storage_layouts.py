"""Repo layouts, the same on a local tree, a real S3 server (SeaweedFS) and the Hub test server: adapters below the
root, peft's multi-adapter save, per-task folders, training checkpoints, pickles, and a layout without a config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from storage_testlib import FOUND_ALL, FOUND_FINAL, SKIPPED_FINAL, adapter_files, build_tree, make_adapter

from compeft import adapters as adapter_layouts
from compeft.adapters import PEFT_LAYOUT, Layout
from storage.adapter_facts import adapter_record
from storage.catalog import known_content
from storage.hashing import content_hash, file_hashes
from storage.sources import AdapterRef, Skipped, open_source

DIFFUSERS = Layout("diffusers", "pytorch_lora_weights.safetensors")  # no config file, as diffusers saves LoRAs


class Catalog:
    """One tree served by one kind of source; ``where`` maps a found or skipped uri back to REPO/SUB."""

    def __init__(self, kind: str, root: Path, request) -> None:
        self.kind, self.root = kind, root
        if kind == "local":
            self.address, self.prefix = str(root), str(root) + "/"
        elif kind == "s3":
            self.client, bucket = request.getfixturevalue("s3_client"), request.getfixturevalue("bucket")
            self.reads: list[tuple[str, str | None]] = []
            self.client.meta.events.register("before-parameter-build.s3.GetObject",
                                             lambda params, **_: self.reads.append((params["Key"], params.get("Range"))))
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    self.client.put_object(Bucket=bucket, Key=f"zoo/{path.relative_to(root).as_posix()}",
                                           Body=path.read_bytes())
            self.address, self.prefix = f"s3://{bucket}/zoo", f"s3://{bucket}/zoo/"
        else:
            self.hub = request.getfixturevalue("hub")
            self.hub.state.tree_page_size = 3  # the repos' tree listings come in several pages
            for repo in sorted(p for p in root.iterdir() if p.is_dir()):
                files = {f.relative_to(repo).as_posix(): f.read_bytes() for f in sorted(repo.rglob("*")) if f.is_file()}
                self.hub.state.add_repo(f"acme/{repo.name}", files, tags=["peft"])
            self.address, self.prefix = "hf://acme", "hf://acme/"

    def source(self, **options):
        extra = {"s3_client": self.client} if self.kind == "s3" else {}
        if self.kind == "hf":
            extra["hf_endpoint"] = self.hub.endpoint
        return open_source(self.address, **extra, **options)

    def where(self, uri: str) -> str:
        text = uri[len(self.prefix):]
        if self.kind == "hf":  # REPO@SHA[/SUB]
            repo, _, rest = text.partition("@")
            return "/".join(p for p in (repo, rest.partition("/")[2]) if p)
        return text

    def fetched_files(self) -> set[str]:
        """Names of the adapter files read whole from the server (configs during listing, weights when fetched);
        a listing's ranged reads of the weights' headers are not fetches."""
        if self.kind == "s3":
            return {key.rsplit("/", 1)[-1] for key, byte_range in self.reads if byte_range is None}
        if self.kind == "hf":
            return {r.path.rsplit("/", 1)[-1] for r in self.hub.state.requests
                    if "/resolve/" in r.path and r.header("Range") is None}
        return set()


@pytest.fixture(params=["local", "s3", "hf"])
def catalog(request, tmp_path):
    return Catalog(request.param, build_tree(tmp_path / "tree"), request)


def crawl(source) -> tuple[dict[str, AdapterRef], dict[str, str]]:
    items = list(source.iter_adapters())
    return ({r.uri: r for r in items if isinstance(r, AdapterRef)},
            {s.uri: s.reason for s in items if isinstance(s, Skipped)})


def test_adapters_below_the_root_multi_adapter_repos_and_checkpoints(catalog, tmp_path):
    refs, skipped = crawl(catalog.source())
    found = {catalog.where(uri): ref for uri, ref in refs.items()}
    assert set(found) == FOUND_FINAL
    assert {name: ref.name for name, ref in found.items()} == {name: name for name in FOUND_FINAL}
    assert (found["multi/other"].subfolder, found["multi/other"].repo_name) == ("other", "multi")
    assert found["multi/other"].base_model == "other/base" and found["multi"].base_model == "tiny/base"
    assert found["tasks/task_b/nested"].subfolder == "task_b/nested" and found["run"].subfolder == ""
    reasons = {catalog.where(uri): reason for uri, reason in skipped.items()}
    assert set(reasons) == set(SKIPPED_FINAL)
    for name, words in SKIPPED_FINAL.items():
        assert words in reasons[name], (name, reasons[name])
    # the listing read the adapters' configs and their weights' headers (by range), nothing else: no weights, no
    # trainer state, no pickle
    assert catalog.fetched_files() <= {"adapter_config.json"}
    # a fetch of a training checkpoint reads its adapter files only, never the optimizer or scheduler
    refs_all, _ = crawl(catalog.source(checkpoints="all"))
    assert {catalog.where(uri) for uri in refs_all} == FOUND_ALL
    ckpt = next(r for r in refs_all.values() if catalog.where(r.uri) == "run/checkpoint-20")
    assert [f.name for f in ckpt.files] == list(PEFT_LAYOUT.files)
    out = catalog.source(checkpoints="all").fetch(ckpt, tmp_path / "got")
    assert adapter_files(out) == {n: (catalog.root / "run" / "checkpoint-20" / n).read_bytes() for n in PEFT_LAYOUT.files}
    assert catalog.fetched_files() <= set(PEFT_LAYOUT.files)
    nested = next(r for r in refs.values() if r.subfolder == "task_b/nested")
    out = catalog.source().fetch(nested, tmp_path / "nested")
    assert adapter_files(out) == adapter_files(catalog.root / "tasks" / "task_b" / "nested")


def test_a_layout_without_a_config_flows_through_sources_hashing_and_registry(monkeypatch, tmp_path, request):
    """A layout with only a weights file (as diffusers saves LoRAs) is found, fetched, hashed and recorded."""
    monkeypatch.setattr(adapter_layouts, "LAYOUTS", (PEFT_LAYOUT, DIFFUSERS))
    root = tmp_path / "tree"
    make_adapter(root / "mixed", seed=1)
    style = root / "mixed" / "style"
    style.mkdir(parents=True)
    save_file({"unet.down.0.lora.down.weight": torch.ones(2, 4, dtype=torch.float16)}, str(style / DIFFUSERS.weights))
    (style / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04 never unpickled")  # a pickled copy beside it
    legacy = root / "legacy"
    legacy.mkdir()
    (legacy / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04 never unpickled")
    for kind in ("local", "s3", "hf"):
        catalog = Catalog(kind, root, request)
        refs, skipped = crawl(catalog.source())
        found = {catalog.where(uri): ref for uri, ref in refs.items()}
        assert set(found) == {"mixed", "mixed/style"}, kind
        ref = found["mixed/style"]
        # a config-less layout's kind comes from its tensor names, read from its header (remote: by byte ranges)
        assert (ref.layout, ref.peft_type, ref.dtype, ref.config, ref.subfolder) == ("diffusers", "LORA", "F16", {}, "style")
        assert [f.name for f in ref.files] == [DIFFUSERS.weights]
        reasons = {catalog.where(uri): reason for uri, reason in skipped.items()}
        assert "pickle" in reasons["legacy"] and DIFFUSERS.weights in reasons["legacy"], kind
        out = catalog.source().fetch(ref, tmp_path / f"got-{kind}")
        assert adapter_files(out) == {DIFFUSERS.weights: (style / DIFFUSERS.weights).read_bytes()}
        record = adapter_record(out, uri=ref.uri, repo=ref.repo, revision=ref.revision, subfolder=ref.subfolder)
        assert record.file_hashes == file_hashes(style, [DIFFUSERS.weights])
        assert record.content_sha256 == content_hash(record.file_hashes)
        assert (record.layout, record.dtype, record.peft_type, record.subfolder) == ("diffusers", "F16", "LORA", "style")
        assert record.parameter_count == 8 and record.bytes == (style / DIFFUSERS.weights).stat().st_size
        if kind == "local":  # the listing hashed the files: the content is known without a fetch
            assert known_content(None, ref) == record.content_sha256
