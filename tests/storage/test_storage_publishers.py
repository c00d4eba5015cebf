"""Publishers to a local dir, real S3 (SeaweedFS) and a Hub-compatible server: idempotent, with provenance."""

from __future__ import annotations

import pytest
from storage_testlib import HUB_TOKEN, adapter_files

from compeft.hashing import sha256_file
from storage.errors import AddressError, PublishError
from storage.publishers import Publisher, open_publisher
from storage.values import Provenance


def provenance_for(artifact, name: str = "lora-a") -> Provenance:
    return Provenance(
        source_uri=f"hf://bob/{name}", source_name=name, source_revision="a" * 40,
        options={"codec": "golomb", "density": 0.1, "alpha": 1.0}, package_version="0.1.0",
        artifact_sha256=sha256_file(artifact / "compeft.safetensors"),
    )


def test_local_publisher_is_idempotent_and_replaces_changed(tmp_path, artifact_factory):
    publisher = open_publisher(str(tmp_path / "pub"))
    assert isinstance(publisher, Publisher)
    art = artifact_factory(seed=1)
    first = publisher.publish(art, provenance_for(art))
    assert first.created and first.uri == str(tmp_path / "pub" / "lora-a")
    assert adapter_files(tmp_path / "pub" / "lora-a") == adapter_files(art)
    assert not publisher.publish(art, provenance_for(art)).created
    new = artifact_factory(seed=2)
    replaced = publisher.publish(new, provenance_for(new))
    assert replaced.created and adapter_files(tmp_path / "pub" / "lora-a") == adapter_files(new)
    assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == ["lora-a"]  # no temp dirs left


def test_name_templates_are_validated(tmp_path, artifact_factory):
    art = artifact_factory(seed=1)
    pub = open_publisher(str(tmp_path / "pub"), name_template="{name}-{codec}-{short_sha}")
    result = pub.publish(art, provenance_for(art))
    assert result.uri.endswith(f"lora-a-golomb-{provenance_for(art).artifact_sha256[:12]}")
    with pytest.raises(AddressError, match="unknown field"):
        open_publisher(str(tmp_path / "pub"), name_template="{token}").publish(art, provenance_for(art))
    evil = open_publisher(str(tmp_path / "pub"), name_template="../../{name}")
    published = evil.publish(art, provenance_for(art))
    assert (tmp_path / "pub") in __import__("pathlib").Path(published.uri).parents


def test_s3_publisher_idempotent_with_metadata(s3_client, bucket, artifact_factory):
    publisher = open_publisher(f"s3://{bucket}/published")
    art = artifact_factory(seed=3)
    prov = provenance_for(art)
    result = publisher.publish(art, prov)
    assert result.created and result.uri == f"s3://{bucket}/published/lora-a"
    head = s3_client.head_object(Bucket=bucket, Key="published/lora-a/compeft.safetensors")
    assert head["Metadata"]["artifact-sha256"] == prov.artifact_sha256
    assert head["Metadata"]["source-uri"] == "hf://bob/lora-a"
    body = s3_client.get_object(Bucket=bucket, Key="published/lora-a/README.md")["Body"].read()
    assert body == (art / "README.md").read_bytes()
    before = {o["Key"]: o["LastModified"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    again = publisher.publish(art, prov)
    assert not again.created
    after = {o["Key"]: o["LastModified"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert before == after


def test_hub_publisher_creates_repo_one_commit_then_noop(hub, artifact_factory, monkeypatch, fast_retry):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    publisher = open_publisher("hf://acme", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    art = artifact_factory(seed=4)
    prov = provenance_for(art)
    result = publisher.publish(art, prov)
    repo = hub.state.repos["acme/lora-a-compeft"]
    assert result.created and result.revision == repo.head.sha and result.uri == f"hf://acme/lora-a-compeft@{repo.head.sha}"
    assert len(repo.commits) == 2  # repo creation + exactly one commit with every file
    assert {k: v for k, v in repo.head.files.items() if k != ".gitattributes"} == adapter_files(art)
    message = repo.head.message
    assert "hf://bob/lora-a@" + "a" * 40 in message and "density=0.1" in message and "compeft 0.1.0" in message
    again = publisher.publish(art, prov)
    assert not again.created and again.revision == result.revision and len(repo.commits) == 2
    assert hub.state.count("POST", r"/commit/") == 1
    new = artifact_factory(seed=5)
    updated = publisher.publish(new, provenance_for(new))
    assert updated.created and len(repo.commits) == 3


def test_hub_publisher_to_fixed_repo_and_errors(hub, artifact_factory, monkeypatch, fast_retry):
    art = artifact_factory(seed=6)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    anonymous = open_publisher("hf://acme/fixed", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    with pytest.raises(PublishError, match="HTTP 401"):
        anonymous.publish(art, provenance_for(art))
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    with pytest.raises(PublishError, match="HTTP 403"):
        open_publisher("hf://someone-else", hf_endpoint=hub.endpoint, retry_policy=fast_retry).publish(
            art, provenance_for(art))
    assert hub.state.count("POST", r"/api/repos/create") == 2  # 4xx never retried
    fixed = open_publisher("hf://acme/fixed", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    hub.state.fail_next(r"/commit/", 502, count=1)
    assert fixed.publish(art, provenance_for(art)).created  # 5xx on commit retried
    assert "acme/fixed" in hub.state.repos
    with pytest.raises(AddressError, match="not a revision"):
        open_publisher("hf://acme/fixed@main", hf_endpoint=hub.endpoint)


def test_hub_publisher_rejects_mismatched_provenance(hub, artifact_factory, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    art = artifact_factory(seed=7)
    wrong = Provenance("hf://bob/x", "x", None, {}, "0.1.0", "0" * 64)
    with pytest.raises(PublishError, match="does not match"):
        open_publisher("hf://acme", hf_endpoint=hub.endpoint).publish(art, wrong)


def layout_provenance(artifact, subfolder: str) -> Provenance:
    from dataclasses import replace

    return replace(provenance_for(artifact, "multi"), subfolder=subfolder)


def test_local_publisher_keeps_the_source_layout(tmp_path, artifact_factory):
    """A repo's adapters land in one folder with the source's layout; replacing the root adapter's artifact keeps
    the adapters below it."""
    publisher = open_publisher(str(tmp_path / "pub"))
    sub, root, newer = artifact_factory(seed=1), artifact_factory(seed=2), artifact_factory(seed=3)
    assert publisher.publish(sub, layout_provenance(sub, "tasks/a")).uri == str(tmp_path / "pub" / "multi" / "tasks" / "a")
    assert publisher.publish(root, layout_provenance(root, "")).created
    assert adapter_files(tmp_path / "pub" / "multi") == adapter_files(root)
    assert not publisher.publish(sub, layout_provenance(sub, "tasks/a")).created
    assert not publisher.publish(root, layout_provenance(root, "")).created  # its subfolders do not count as changes
    assert publisher.publish(newer, layout_provenance(newer, "")).created
    assert adapter_files(tmp_path / "pub" / "multi") == adapter_files(newer)
    assert adapter_files(tmp_path / "pub" / "multi" / "tasks" / "a") == adapter_files(sub)
    assert sorted(p.name for p in (tmp_path / "pub" / "multi").iterdir()) == [*sorted(adapter_files(newer)), "tasks"]
    with pytest.raises(AddressError, match="source layout"):
        publisher.publish(sub, layout_provenance(sub, "../escape"))


def test_s3_publisher_keeps_the_source_layout(s3_client, bucket, artifact_factory):
    publisher = open_publisher(f"s3://{bucket}/pub")
    root, sub = artifact_factory(seed=4), artifact_factory(seed=5)
    assert publisher.publish(root, layout_provenance(root, "")).uri == f"s3://{bucket}/pub/multi"
    assert publisher.publish(sub, layout_provenance(sub, "other")).uri == f"s3://{bucket}/pub/multi/other"
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted([f"pub/multi/{n}" for n in adapter_files(root)] + [f"pub/multi/other/{n}" for n in adapter_files(sub)])
    assert not publisher.publish(sub, layout_provenance(sub, "other")).created


def test_hub_publisher_keeps_the_source_layout(hub, artifact_factory, monkeypatch, fast_retry):
    """One repo per source repo, each adapter in its folder; a commit that lost a race (412) is made again."""
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    publisher = open_publisher("hf://acme", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    root, sub = artifact_factory(seed=6), artifact_factory(seed=7)
    first = publisher.publish(root, layout_provenance(root, ""))
    hub.state.fail_next(r"/commit/", 412, count=1)  # as if a sibling adapter's commit had landed first
    second = publisher.publish(sub, layout_provenance(sub, "task_a"))
    repo = hub.state.repos["acme/multi-compeft"]
    assert second.uri == f"hf://acme/multi-compeft@{repo.head.sha}/task_a" and first.uri.endswith(first.revision)
    files = {k: v for k, v in repo.head.files.items() if k != ".gitattributes"}
    assert files == {**adapter_files(root), **{f"task_a/{n}": b for n, b in adapter_files(sub).items()}}
    assert not publisher.publish(sub, layout_provenance(sub, "task_a")).created
