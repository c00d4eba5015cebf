"""Crawl -> fetch -> compress -> store -> register -> publish, twice, with real servers; and no credential
ever reaches the database, logs, artifacts, model cards, S3 objects or Hub commits."""

from __future__ import annotations

import json
import logging

from sqlalchemy import MetaData, select
from storage_testlib import (
    HUB_TOKEN,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    adapter_files,
    make_adapter,
    run_catalog,
)

from storage.publishers import open_publisher
from storage.registry import open_registry
from storage.sources import open_source
from storage.stores import open_store


def test_pipeline_is_idempotent_and_never_leaks_credentials(
    hub, s3_env, s3_client, bucket, tmp_path, monkeypatch, caplog, fast_retry
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    for n, name in enumerate(["lora-one", "lora-two"]):
        hub.state.add_repo(f"alice/{name}", adapter_files(make_adapter(tmp_path / "src" / name, seed=n)), tags=["peft"])
        hub.state.repos[f"alice/{name}"].private = True  # readable only with the token
    hub.state.add_repo("alice/not-an-adapter", {"README.md": b"hello"})

    db_url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = open_registry(db_url)
    store = open_store(f"s3://{bucket}/store")
    publishers = [
        open_publisher("hf://acme", hf_endpoint=hub.endpoint, retry_policy=fast_retry),
        open_publisher(f"s3://{bucket}/published"),
    ]
    source = open_source("hf://alice", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    first = run_catalog(source, store, registry, publishers, tmp_path / "run1")
    assert first == {"found": 2, "skipped": 1, "compressed": 2, "reused": 0, "published": 4}
    commits_after_first = {r: len(v.commits) for r, v in hub.state.repos.items()}
    second = run_catalog(source, store, registry, publishers, tmp_path / "run2")
    assert second == {"found": 2, "skipped": 1, "compressed": 0, "reused": 2, "published": 0}
    assert {r: len(v.commits) for r, v in hub.state.repos.items()} == commits_after_first

    items, total = registry.list_artifacts()
    assert total == 2 and all(i.artifact.storage_uri.startswith(f"s3://{bucket}/store/") for i in items)
    detail = registry.get_artifact(items[0].artifact.id)
    assert len(detail.publications) == 2 and detail.adapter.peft_type == "LORA"
    published = hub.state.repos["acme/lora-one-compeft"].head
    assert "compeft.safetensors" in published.files and "README.md" in published.files
    assert "hf://alice/lora-one@" in published.message

    secrets = [HUB_TOKEN, S3_SECRET_KEY, S3_ACCESS_KEY]
    haystacks: dict[str, str] = {}
    metadata = MetaData()
    metadata.reflect(registry.engine)
    with registry.engine.connect() as conn:
        for table in metadata.sorted_tables:
            haystacks[f"db:{table.name}"] = json.dumps([list(map(str, row)) for row in conn.execute(select(table))])
    registry.close()
    haystacks["db-file"] = (tmp_path / "registry.db").read_bytes().decode("latin-1")
    haystacks["logs"] = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for path in (tmp_path / "run1").rglob("*"):
        if path.is_file():
            haystacks[f"file:{path}"] = path.read_bytes().decode("latin-1")
    for obj in s3_client.list_objects_v2(Bucket=bucket)["Contents"]:
        got = s3_client.get_object(Bucket=bucket, Key=obj["Key"])
        haystacks[f"s3:{obj['Key']}"] = got["Body"].read().decode("latin-1") + json.dumps(got["Metadata"])
    for repo in hub.state.repos.values():
        for commit in repo.commits:
            haystacks[f"hub:{repo.repo_id}@{commit.sha}"] = commit.message + "".join(
                v.decode("latin-1") for v in commit.files.values())
    for request in hub.state.requests:
        if request.method == "POST":
            haystacks[f"hub-request-body:{request.path}"] = request.body.decode("latin-1")
    assert len(haystacks) > 20
    leaks = [(where, secret[:6]) for where, text in haystacks.items() for secret in secrets if secret in text]
    # botocore's own DEBUG request dump shows the access key *id* (never the secret) in the SigV4 header;
    # that id is an identifier, not a credential, and it appears only at DEBUG from botocore itself.
    info_logs = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    leaks = [leak for leak in leaks if leak != ("logs", S3_ACCESS_KEY[:6])]
    assert S3_ACCESS_KEY not in info_logs
    assert not any(S3_ACCESS_KEY in r.getMessage() for r in caplog.records if not r.name.startswith("botocore"))
    assert leaks == []
    # and the token really was used: private repos were only readable with it
    assert any(r.header("Authorization") == f"Bearer {HUB_TOKEN}" for r in hub.state.requests)
