"""Publishers to a local dir, real S3 (SeaweedFS) and a Hub-compatible server: idempotent, with provenance."""

from __future__ import annotations

import pytest
from storage_testlib import HUB_TOKEN, adapter_files

from compeft.hashing import sha256_file
from storage.errors import AddressError, PublishError
from storage.publishers import Publisher, open_publisher
from storage.publishers.naming import MARKER
from storage.values import Provenance


def provenance_for(artifact, name: str = "lora-a") -> Provenance:
    return Provenance(
        source_uri=f"hf://bob/{name}", source_name=name, source_revision="a" * 40,
        options={"codec": "golomb", "density": 0.1, "alpha": 1.0}, package_version="0.1.0",
        artifact_sha256=sha256_file(artifact / "compeft.safetensors"),
    )


def published_files(directory) -> dict[str, bytes]:
    """The artifact files of a publication (without compeft's marker file)."""
    return {k: v for k, v in adapter_files(directory).items() if k != MARKER}


def test_local_publisher_is_idempotent_and_replaces_changed(tmp_path, artifact_factory):
    publisher = open_publisher(str(tmp_path / "pub"))
    assert isinstance(publisher, Publisher)
    art = artifact_factory(seed=1)
    first = publisher.publish(art, provenance_for(art))
    assert first.created and first.uri == str(tmp_path / "pub" / "lora-a")
    assert published_files(tmp_path / "pub" / "lora-a") == adapter_files(art)
    assert not publisher.publish(art, provenance_for(art)).created
    new = artifact_factory(seed=2)
    replaced = publisher.publish(new, provenance_for(new))
    assert replaced.created and published_files(tmp_path / "pub" / "lora-a") == adapter_files(new)
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
    assert {k: v for k, v in repo.head.files.items() if k not in (".gitattributes", MARKER)} == adapter_files(art)
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
    assert published_files(tmp_path / "pub" / "multi") == adapter_files(root)
    assert not publisher.publish(sub, layout_provenance(sub, "tasks/a")).created
    assert not publisher.publish(root, layout_provenance(root, "")).created  # its subfolders do not count as changes
    assert publisher.publish(newer, layout_provenance(newer, "")).created
    assert published_files(tmp_path / "pub" / "multi") == adapter_files(newer)
    assert adapter_files(tmp_path / "pub" / "multi" / "tasks" / "a") == adapter_files(sub)
    assert sorted(p.name for p in (tmp_path / "pub" / "multi").iterdir()) == sorted([*adapter_files(newer), MARKER, "tasks"])
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
    files = {k: v for k, v in repo.head.files.items() if k not in (".gitattributes", MARKER)}
    assert files == {**adapter_files(root), **{f"task_a/{n}": b for n, b in adapter_files(sub).items()}}
    assert not publisher.publish(sub, layout_provenance(sub, "task_a")).created


# ---- issue 15 items 1 and 2: publishers replace only their own publications; names are unique per destination ----

def other_source(art, name: str = "lora-a", uri: str = "hf://carol/lora-a") -> Provenance:
    """A provenance of another source whose name renders like ``name``."""
    return Provenance(source_uri=uri, source_name=name, source_revision=None, options={"codec": "golomb"},
                      package_version="0.1.0", artifact_sha256=sha256_file(art / "compeft.safetensors"))


def test_local_publisher_never_replaces_what_it_did_not_write(tmp_path, artifact_factory):
    """A directory of the adapter's name that compeft did not publish (no marker) is left byte for byte; the
    publication goes to the source's stable disambiguated name, and stays there on re-runs."""
    from storage.publishers.naming import source_tag

    mine = tmp_path / "pub" / "lora-a"
    mine.mkdir(parents=True)
    (mine / "adapter_model.safetensors").write_bytes(b"the user's own adapter")
    art = artifact_factory(seed=1)
    publisher = open_publisher(str(tmp_path / "pub"))
    result = publisher.publish(art, provenance_for(art))
    assert result.uri == str(tmp_path / "pub" / f"lora-a-{source_tag('hf://bob/lora-a')}")
    assert adapter_files(mine) == {"adapter_model.safetensors": b"the user's own adapter"}
    assert not publisher.publish(art, provenance_for(art)).created
    assert publisher.publish(artifact_factory(seed=2), provenance_for(artifact_factory(seed=2))).uri == result.uri


@pytest.mark.parametrize("names", [("lora-a", "lora-a"), ("a b", "a-b")], ids=["same-name", "sanitised-alike"])
def test_local_names_are_unique_per_destination(tmp_path, artifact_factory, names):
    """Two sources whose names render alike (team1/lora and team2/lora; 'a b' and 'a-b') get two publications,
    each holding its own artifact; re-publishing either keeps its name and writes nothing."""
    first, second = artifact_factory(seed=1), artifact_factory(seed=2)
    publisher = open_publisher(str(tmp_path / "pub"))
    one = publisher.publish(first, other_source(first, names[0], "s3://b/team1/x"))
    two = publisher.publish(second, other_source(second, names[1], "s3://b/team2/x"))
    assert one.uri != two.uri
    from pathlib import Path

    assert published_files(Path(one.uri)) == adapter_files(first) and published_files(Path(two.uri)) == adapter_files(second)
    assert not publisher.publish(first, other_source(first, names[0], "s3://b/team1/x")).created
    assert not publisher.publish(second, other_source(second, names[1], "s3://b/team2/x")).created


def test_s3_names_are_unique_and_foreign_objects_kept(s3_client, bucket, artifact_factory):
    """S3: objects compeft did not write under the adapter's name are never overwritten; two sources with one
    name get two prefixes; the same source resumes its own prefix."""
    s3_client.put_object(Bucket=bucket, Key="published/lora-a/README.md", Body=b"someone else's")
    publisher = open_publisher(f"s3://{bucket}/published")
    first, second = artifact_factory(seed=1), artifact_factory(seed=2)
    one = publisher.publish(first, provenance_for(first))
    two = publisher.publish(second, other_source(second))
    assert len({one.uri, two.uri, f"s3://{bucket}/published/lora-a"}) == 3
    body = s3_client.get_object(Bucket=bucket, Key="published/lora-a/README.md")["Body"].read()
    assert body == b"someone else's"
    assert not publisher.publish(first, provenance_for(first)).created


def test_hub_names_are_unique_per_destination(hub, artifact_factory, monkeypatch, fast_retry):
    """Hub: a second source with the same repo name gets the disambiguated repo; into one fixed repo, a second
    source fails with a clear reason and the first source's files stay."""
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    first, second = artifact_factory(seed=1), artifact_factory(seed=2)
    publisher = open_publisher("hf://acme", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    one = publisher.publish(first, provenance_for(first))
    two = publisher.publish(second, other_source(second))
    assert one.uri.split("@")[0] == "hf://acme/lora-a-compeft" and two.uri.split("@")[0].startswith("hf://acme/lora-a-compeft-")
    fixed = open_publisher("hf://acme/fixed", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    fixed.publish(first, provenance_for(first))
    with pytest.raises(PublishError, match="names are unique per destination"):
        fixed.publish(second, other_source(second))
    head = hub.state.repos["acme/fixed"].head.files
    assert head["compeft.safetensors"] == (first / "compeft.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("destination", "source", "store", "where"),
    [
        ("{cat}", "{cat}", None, "the same place as the source"),
        ("{cat}/published", "{cat}", None, "inside the source"),
        ("{root}", "{cat}", None, "around the source"),
        ("{root}/out", "{cat}", "{root}/out/store", "around the artifact store"),
        ("s3://bkt/cat/pub", "s3://bkt/cat", None, "inside the source"),
        ("s3://bkt", "s3://bkt/cat", None, "around the source"),
        ("hf://acme/x-compeft", "hf://acme", None, "inside the source"),
        ("hf://acme", "hf://acme/x", None, "around the source"),
        ("hf://acme/x", "hf://?author=acme&search=lora", None, "inside the source"),
    ],
)
def test_destination_at_inside_or_around_the_source_or_store_is_refused(tmp_path, destination, source, store, where):
    """Issue 15 item 1: a publish destination equal to, inside or containing the source or the artifact store is
    one AddressError line, before anything is published."""
    from storage.publishers.safety import check_publish_destination

    fill = {"cat": str(tmp_path / "cat"), "root": str(tmp_path)}
    with pytest.raises(AddressError, match=where):
        check_publish_destination(destination.format(**fill), [source.format(**fill)], store and store.format(**fill),
                                  s3_endpoint="http://127.0.0.1:1", hf_endpoint="http://127.0.0.1:2")
    check_publish_destination(str(tmp_path / "elsewhere"), [str(tmp_path / "cat")], str(tmp_path / "store"))
    check_publish_destination("hf://acme", ["hf://?search=lora"], None, hf_endpoint="http://127.0.0.1:2")


def test_publication_rows_describe_what_is_at_their_uri(sqlite_url):
    """Issue 15 item 2: when another artifact is published to the same URI, the rows that said the old one was
    there go (a Hub URI names its commit, so its rows stay true)."""
    from storage_testlib import adapter_record

    from storage.registry import ArtifactRecord, open_registry

    with open_registry(sqlite_url) as registry:
        adapter = registry.get_or_create_adapter(adapter_record(1))
        ids = []
        for n in range(2):
            record = ArtifactRecord(source_sha256=adapter.content_sha256, options_hash=f"{n}" * 64, options={"n": n},
                                    codec="golomb", density=0.1, alpha=1.0, bytes=10, sha256=f"{n + 1}" * 64,
                                    package_version="0.1.0")
            ids.append(registry.get_or_create_artifact(adapter.id, record)[0].id)
        registry.get_or_create_publication(ids[0], "/pub", "/pub/lora-a", "r0")
        registry.get_or_create_publication(ids[0], "hf://acme", "hf://acme/x@c0", "c0")
        registry.get_or_create_publication(ids[1], "/pub", "/pub/lora-a", "r1")
        registry.get_or_create_publication(ids[1], "hf://acme", "hf://acme/x@c1", "c1")
        assert [p.uri for p in registry.get_artifact(ids[0]).publications] == ["hf://acme/x@c0"]
        assert sorted(p.uri for p in registry.get_artifact(ids[1]).publications) == ["/pub/lora-a", "hf://acme/x@c1"]
