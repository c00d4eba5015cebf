"""Sources over a local tree, a real S3 server (SeaweedFS) and a Hub-compatible server (real client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from storage_testlib import HUB_TOKEN, adapter_files, make_adapter

from compeft.hashing import sha256_file
from storage.errors import HashMismatchError, SourceError, TransientError
from storage.sources import AdapterRef, Skipped, Source, open_source


def split(items):
    refs = [i for i in items if isinstance(i, AdapterRef)]
    skipped = [i for i in items if isinstance(i, Skipped)]
    return refs, skipped


def populate_tree(root: Path) -> None:
    make_adapter(root / "team" / "lora-a", seed=1)
    make_adapter(root / "team" / "lora-b", seed=2, peft_type="IA3", base_model="other/base")
    legacy = root / "legacy"
    legacy.mkdir(parents=True)
    (legacy / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (legacy / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    broken = root / "broken"
    make_adapter(broken, seed=3)
    (broken / "adapter_config.json").write_text("{not json")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("nothing here")


# -- local ----------------------------------------------------------------------------------------
def test_local_source_finds_adapters_and_records_skips(tmp_path):
    populate_tree(tmp_path / "src")
    source = open_source(str(tmp_path / "src"))
    assert isinstance(source, Source)
    refs, skipped = split(list(source.iter_adapters()))
    assert sorted(r.name for r in refs) == ["team/lora-a", "team/lora-b"]  # folders below the root are repos
    by_name = {r.subfolder: r for r in refs}
    assert by_name["lora-a"].peft_type == "LORA" and by_name["lora-a"].base_model == "tiny/base"
    assert by_name["lora-b"].peft_type == "IA3" and by_name["lora-b"].base_model == "other/base"
    assert by_name["lora-a"].repo_name == "team" and by_name["lora-a"].repo == str(tmp_path / "src" / "team")
    assert by_name["lora-a"].layout == "peft" and by_name["lora-a"].dtype == "F32"
    reasons = {Path(s.uri).name: s.reason for s in skipped}
    assert "pickle" in reasons["legacy"]
    assert "not valid JSON" in reasons["broken"]
    assert "notes" not in reasons
    out = source.fetch(by_name["lora-a"], tmp_path / "fetched")
    assert adapter_files(out) == adapter_files(tmp_path / "src" / "team" / "lora-a")
    again = {r.subfolder: r for r in split(list(open_source(str(tmp_path / "src")).iter_adapters()))[0]}
    assert again["lora-a"].revision == by_name["lora-a"].revision  # a content hash: stable across listings


def test_local_source_skips_model_directories_with_a_reason(tmp_path):
    """A pickle-only model lying beside adapters is reported as skipped, not silently ignored; a safetensors model
    directory is a full fine-tune candidate (issue 17: the catalog decides on its base)."""
    make_adapter(tmp_path / "src" / "lora")
    model = tmp_path / "src" / "base-model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    pickled = tmp_path / "src" / "pickled-model"
    pickled.mkdir(parents=True)
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\0" * 16)
    (tmp_path / "src" / "notes").mkdir()
    (tmp_path / "src" / "notes" / "readme.txt").write_text("hello")
    refs, skipped = split(list(open_source(str(tmp_path / "src")).iter_adapters()))
    assert [(r.name, r.peft_type) for r in refs] == [("base-model", "FULL"), ("lora", "LORA")]
    reasons = {Path(s.uri).name: s.reason for s in skipped}
    assert set(reasons) == {"pickled-model"} and "not a PEFT adapter" in reasons["pickled-model"]


def test_local_source_size_cap_and_missing_root(tmp_path):
    make_adapter(tmp_path / "src" / "big")
    refs, skipped = split(list(open_source(str(tmp_path / "src"), max_file_bytes=100).iter_adapters()))
    assert not refs and "exceeds" in skipped[0].reason
    with pytest.raises(SourceError, match="does not exist"):
        list(open_source(str(tmp_path / "nope")).iter_adapters())


# -- S3 -------------------------------------------------------------------------------------------
def upload_tree(client, bucket: str, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


def test_s3_source_lists_pages_and_fetches(s3_client, bucket, tmp_path):
    populate_tree(tmp_path / "src")
    upload_tree(s3_client, bucket, tmp_path / "src", "zoo")
    for n in range(3):  # enough extra objects to need several pages at MaxKeys=2
        s3_client.put_object(Bucket=bucket, Key=f"zoo/misc/file{n}.txt", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="elsewhere/adapter_config.json", Body=b"{}")
    s3_client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                   lambda params, **kw: params.setdefault("MaxKeys", 2))
    source = open_source(f"s3://{bucket}/zoo")
    assert source.uri == f"s3://{bucket}/zoo"
    source.client = s3_client
    refs, skipped = split(list(source.iter_adapters()))
    assert sorted(r.uri for r in refs) == [f"s3://{bucket}/zoo/team/lora-a", f"s3://{bucket}/zoo/team/lora-b"]
    assert {s.uri.rsplit("/", 1)[-1] for s in skipped} == {"legacy", "broken"}
    ref = next(r for r in refs if r.name == "team/lora-a")
    assert ref.peft_type == "LORA" and all(f.etag for f in ref.files) and ref.size > 0
    out = source.fetch(ref, tmp_path / "got")
    assert adapter_files(out) == adapter_files(tmp_path / "src" / "team" / "lora-a")


def test_s3_fetch_refuses_changed_object(s3_client, bucket, tmp_path):
    make_adapter(tmp_path / "src" / "one", seed=4)
    upload_tree(s3_client, bucket, tmp_path / "src", "p")
    source = open_source(f"s3://{bucket}/p", s3_client=s3_client)
    (ref,) = split(list(source.iter_adapters()))[0]
    s3_client.put_object(Bucket=bucket, Key="p/one/adapter_model.safetensors", Body=b"replaced")
    with pytest.raises(HashMismatchError, match="changed since"):
        source.fetch(ref, tmp_path / "got")
    assert not (tmp_path / "got").exists()


def test_s3_missing_bucket_is_a_source_error(s3_env):
    with pytest.raises(SourceError, match="NoSuchBucket"):
        list(open_source("s3://no-such-bucket-here/x").iter_adapters())


# -- Hub ------------------------------------------------------------------------------------------
def hub_repo(hub, repo_id: str, directory: Path, tags=("peft",)) -> str:
    return hub.state.add_repo(repo_id, adapter_files(directory), tags=list(tags))


@pytest.fixture
def hub_zoo(hub, tmp_path):
    a = make_adapter(tmp_path / "a", seed=1, base_model="meta/llama-tiny")
    b = make_adapter(tmp_path / "b", seed=2, base_model="other/base")
    shas = {
        "bob/lora-a": hub_repo(hub, "bob/lora-a", a, ("peft", "base_model:adapter:meta/llama-tiny")),
        "bob/lora-b": hub_repo(hub, "bob/lora-b", b, ("peft", "base_model:adapter:other/base")),
        "bob/lora-c": hub_repo(hub, "bob/lora-c", make_adapter(tmp_path / "c", seed=5), ("peft",)),
    }
    hub.state.add_repo("bob/pickled", {"adapter_config.json": b'{"peft_type":"LORA"}', "adapter_model.bin": b"\x80"},
                       tags=["peft"])
    hub.state.add_repo("bob/full-model", {"config.json": b"{}", "pytorch_model.bin": b"x" * 10}, tags=[])  # pickles
    hub.state.add_repo("carol/lora-x", adapter_files(a), tags=["peft", "base_model:adapter:meta/llama-tiny"])
    return shas


def test_hub_author_lists_every_adapter_with_skips(hub, hub_zoo, monkeypatch, tmp_path, fast_retry):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    source = open_source("hf://bob", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    refs, skipped = split(list(source.iter_adapters()))
    assert sorted(r.uri for r in refs) == sorted(f"hf://{k}@{v}" for k, v in hub_zoo.items())
    reasons = {s.uri.split("@")[0]: s.reason for s in skipped}
    assert "pickle" in reasons["hf://bob/pickled"]
    assert "no adapter_config.json" in reasons["hf://bob/full-model"]
    assert hub.state.count("GET", r"^/api/models\?") >= 3  # paged: 5 repos at page size 2
    assert hub.state.count("GET", r"^/api/models/bob/(pickled|full-model)") == 0  # skipped from the listing
    ref = next(r for r in refs if r.name == "lora-a")
    assert ref.base_model == "meta/llama-tiny" and ref.peft_type == "LORA" and ref.revision == hub_zoo["bob/lora-a"]
    weights = next(f for f in ref.files if f.name == "adapter_model.safetensors")
    assert weights.sha256 == sha256_file(tmp_path / "a" / "adapter_model.safetensors")
    out = source.fetch(ref, tmp_path / "fetched")
    assert adapter_files(out) == adapter_files(tmp_path / "a")
    assert not any("README" in r.path or "model.bin" in r.path for r in hub.state.requests if "/resolve/" in r.path)


def test_hub_query_by_base_model_and_search(hub, hub_zoo, fast_retry):
    source = open_source("hf://?base_model=meta/llama-tiny", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    refs, _ = split(list(source.iter_adapters()))
    assert sorted(r.repo for r in refs) == ["bob/lora-a", "carol/lora-x"]
    source = open_source("hf://?search=lora&author=bob&limit=2", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    refs, _ = split(list(source.iter_adapters()))
    assert sorted(r.repo for r in refs) == ["bob/lora-a", "bob/lora-b"]


def test_hub_repo_is_pinned_to_the_listed_commit(hub, hub_zoo, tmp_path, fast_retry):
    source = open_source("hf://bob/lora-a", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    (ref,) = split(list(source.iter_adapters()))[0]
    old_weights = adapter_files(tmp_path / "a")["adapter_model.safetensors"]
    new_sha = hub.state.add_repo("bob/lora-a", {"adapter_model.safetensors": b"newer weights"})
    assert new_sha != ref.revision
    out = source.fetch(ref, tmp_path / "pinned")
    assert (out / "adapter_model.safetensors").read_bytes() == old_weights
    at_rev = open_source(f"hf://bob/lora-a@{ref.revision}", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    assert split(list(at_rev.iter_adapters()))[0][0].revision == ref.revision


def test_hub_retries_429_and_5xx_then_succeeds(hub, hub_zoo, fast_retry):
    hub.state.fail_next(r"^/api/models/bob/lora-a", 429, count=2, retry_after=0.01)
    hub.state.fail_next(r"^/bob/lora-a/resolve/", 503, count=1)
    source = open_source("hf://bob/lora-a", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    (ref,) = split(list(source.iter_adapters()))[0]
    assert ref.revision == hub_zoo["bob/lora-a"]
    assert hub.state.count("GET", r"^/api/models/bob/lora-a(\?|$)") == 3


def test_hub_gives_up_after_persistent_5xx(hub, hub_zoo, fast_retry):
    hub.state.fail_next(r"^/api/models/bob/lora-a", 500, count=100)
    source = open_source("hf://bob/lora-a", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    with pytest.raises(TransientError, match="gave up after 4 attempts"):
        list(source.iter_adapters())
    assert hub.state.count("GET", r"^/api/models/bob/lora-a") == 4


def test_hub_listing_skips_a_repo_the_hub_keeps_failing_on(hub, hub_zoo, fast_retry):
    """One repo answering 5xx past the retries is a recorded skip; the rest of the author is still listed."""
    hub.state.fail_next(r"^/api/models/bob/lora-b", 500, count=100)
    source = open_source("hf://bob", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    refs, skipped = split(list(source.iter_adapters()))
    assert sorted(r.repo for r in refs) == ["bob/lora-a", "bob/lora-c"]
    reasons = {s.uri.split("@")[0]: s.reason for s in skipped}
    assert "gave up after 4 attempts" in reasons["hf://bob/lora-b"]
    assert hub.state.count("GET", r"^/api/models/bob/lora-b") == 4


@pytest.mark.parametrize("status", [400, 404, 403])
def test_hub_never_retries_4xx(hub, hub_zoo, status, fast_retry):
    hub.state.fail_next(r"^/api/models/bob/lora-a", status, count=100)
    source = open_source("hf://bob/lora-a", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    with pytest.raises(SourceError, match=f"HTTP {status}"):
        list(source.iter_adapters())
    assert hub.state.count("GET", r"^/api/models/bob/lora-a") == 1


def test_hub_missing_repo_and_bad_listing_names(hub, hub_zoo, fast_retry):
    with pytest.raises(SourceError, match="HTTP 404"):
        list(open_source("hf://bob/missing", hf_endpoint=hub.endpoint, retry_policy=fast_retry).iter_adapters())
    hub.state.add_repo("bob/..evil", {"adapter_config.json": b"{}", "adapter_model.safetensors": b"x"})
    source = open_source("hf://bob", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    _, skipped = split(list(source.iter_adapters()))
    assert any("invalid Hub repo id" in s.reason for s in skipped)


def test_hub_size_cap_skips_before_downloading(hub, hub_zoo, fast_retry):
    source = open_source("hf://bob", hf_endpoint=hub.endpoint, retry_policy=fast_retry, max_file_bytes=64)
    refs, skipped = split(list(source.iter_adapters()))
    assert not refs and any("exceeds" in s.reason for s in skipped)
    assert hub.state.count("GET", r"/resolve/") == 0


def test_hub_private_repo_uses_hf_token_from_env(hub, tmp_path, monkeypatch, fast_retry):
    hub.state.add_repo("alice/private-lora", adapter_files(make_adapter(tmp_path / "p")), tags=["peft"])
    hub.state.repos["alice/private-lora"].private = True
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SourceError, match="HTTP 401"):
        list(open_source("hf://alice/private-lora", hf_endpoint=hub.endpoint, retry_policy=fast_retry).iter_adapters())
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    source = open_source("hf://alice/private-lora", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    (ref,) = split(list(source.iter_adapters()))[0]
    source.fetch(ref, tmp_path / "got")
    assert hub.state.requests[-1].header("Authorization") == f"Bearer {HUB_TOKEN}"
    assert HUB_TOKEN not in repr(source.hub) and HUB_TOKEN not in json.dumps(ref.config)


class _RawBody:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_kwargs):
        yield self.data


def inject_s3_failures(client, operation: str, statuses: list[int]):
    """Make the next sends of ``operation`` answer the given HTTP statuses (fault injection SeaweedFS can't do)."""
    from botocore.awsrequest import AWSResponse

    pending = list(statuses)
    seen = {"calls": 0}

    def before_send(request, **_kwargs):
        seen["calls"] += 1
        if not pending:
            return None
        status = pending.pop(0)
        code = {503: "SlowDown", 500: "InternalError", 403: "AccessDenied", 400: "InvalidArgument"}[status]
        body = f"<Error><Code>{code}</Code><Message>injected {status}</Message></Error>".encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _RawBody(body))

    client.meta.events.register(f"before-send.s3.{operation}", before_send)
    return seen


def test_s3_source_retries_5xx_but_not_4xx(s3_env, bucket, tmp_path, fast_retry):
    from storage.s3client import make_s3_client

    make_adapter(tmp_path / "src" / "one", seed=4)
    client = make_s3_client(s3_env, max_attempts=1)  # no botocore retries: our policy does them
    upload_tree(client, bucket, tmp_path / "src", "p")
    seen = inject_s3_failures(client, "ListObjectsV2", [503, 500])
    source = open_source(f"s3://{bucket}/p", s3_client=client, retry_policy=fast_retry)
    refs, _ = split(list(source.iter_adapters()))
    assert len(refs) == 1 and seen["calls"] == 3
    seen = inject_s3_failures(client, "ListObjectsV2", [403])
    with pytest.raises(SourceError, match="AccessDenied"):
        list(source.iter_adapters())
    assert seen["calls"] == 1
    seen = inject_s3_failures(client, "ListObjectsV2", [503] * 10)
    with pytest.raises(TransientError, match="gave up after 4 attempts"):
        list(source.iter_adapters())


def test_hub_listing_survives_rate_limiting(hub, hub_zoo, fast_retry):
    """429 on a listing page (first and a later, Link-header page) is retried; the crawl is complete."""
    hub.state.fail_next(r"^/api/models$", 429, count=1, retry_after=0)
    source = open_source("hf://bob", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    refs, _ = split(list(source.iter_adapters()))
    assert len(refs) == 3
    assert hub.state.count("GET", r"^/api/models\?") >= 4  # one 429 + the pages
