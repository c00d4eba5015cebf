"""Faults of the stores the service talks to (issue 15, "what was not tried"): the real SeaweedFS server killed
in the middle of a listing, a download, an upload to the artifact store or a publication, and the Hub test
server answering 429/5xx bursts or stalling past the client's timeout during crawl, download and commit. In
every case the run ends with one error line or completes on retries, nothing half-written is visible, a re-run
completes, no object is duplicated and nothing is registered that is not where its row says."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_testlib import (
    HUB_TOKEN,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    WeedServer,
    adapter_files,
    make_adapter,
    run_catalog,
)

from compeft.errors import CompeftError
from storage.addresses import parse_address
from storage.publishers import open_publisher
from storage.publishers.s3 import S3Publisher
from storage.registry import open_registry
from storage.sources import open_source
from storage.stores import open_store
from storage.stores.manifest import MANIFEST
from storage.stores.s3 import S3Store

ADAPTERS = ("lora-a", "lora-b")
ARTIFACT_FILES = {"README.md", "adapter_config.json", "compeft.safetensors"}


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    """A SeaweedFS server of this module's own, killed and restarted by its tests."""
    server = WeedServer(tmp_path_factory.mktemp("weed-faults"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(weed, monkeypatch):
    """(server, client, bucket): a fresh bucket holding two adapters under adapters/, the server running."""
    import uuid

    from storage.s3client import make_s3_client

    if weed.proc is None or weed.proc.poll() is not None:
        weed.start()
    for name, value in (("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", weed.endpoint)):
        monkeypatch.setenv(name, value)
    client = make_s3_client(weed.endpoint)
    bucket = f"f-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    for n, name in enumerate(ADAPTERS):
        adapter = make_adapter(Path(weed.root) / "src" / bucket / name, seed=n)
        for file, data in adapter_files(adapter).items():
            client.put_object(Bucket=bucket, Key=f"adapters/{name}/{file}", Body=data)
    return weed, client, bucket


class Outage:
    """A boto3 client whose store goes away (the server is killed) when the n-th call of ``method`` is made."""

    def __init__(self, client, server: WeedServer, method: str, nth: int) -> None:
        self._client, self._server, self._method, self._nth, self.calls = client, server, method, nth, 0

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name != self._method:
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls == self._nth:
                self._server.kill()
            return attr(*args, **kwargs)

        return call


def parts(bucket: str, fast_retry):
    """A fresh source, store and publisher over the bucket (new clients, as a re-run makes)."""
    source = open_source(f"s3://{bucket}/adapters", retry_policy=fast_retry)
    store = S3Store(parse_address(f"s3://{bucket}/store"), policy=fast_retry)
    publisher = S3Publisher(parse_address(f"s3://{bucket}/published"), "{name}", policy=fast_retry)
    return source, store, publisher


# where the store goes away: (which part, its client method, the call that finds it gone)
OUTAGES = {
    "listing": ("source", "get_object", 1),  # reading the first adapter_config.json of the crawl
    "download": ("source", "get_object", 4),  # the first adapter's weights, after its config
    "store-upload": ("store", "put_object", 2),  # between the artifact's files
    "publish-upload": ("publisher", "put_object", 2),  # between the publication's files
}


@pytest.mark.parametrize("where", sorted(OUTAGES))
def test_s3_going_away_mid_run_then_a_rerun_completes(s3, tmp_path, fast_retry, where):
    server, client, bucket = s3
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    source, store, publisher = parts(bucket, fast_retry)
    which, method, nth = OUTAGES[where]
    part = {"source": source, "store": store, "publisher": publisher}[which]
    part.client = Outage(part.client, server, method, nth)
    with pytest.raises(CompeftError) as info:
        run_catalog(source, store, registry, [publisher], tmp_path / "run1")
    assert "\n" not in str(info.value)
    assert not [p for p in (tmp_path / "run1").rglob("*") if p.name.startswith(".")], "a half-written local directory"
    server.start()

    # what the outage left is invisible: nothing registered that the store does not hold complete (its manifest is
    # written last), no publication with a container (written last) that is not complete
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    for key in (k for k in keys if k.startswith("published/") and k.endswith("/compeft.safetensors")):
        assert {key.rsplit("/", 1)[0] + "/" + f for f in ARTIFACT_FILES} <= keys
    registered = {a.artifact.sha256 for a in registry.list_artifacts()[0]}
    assert all(store.exists(sha) for sha in registered), "a registered artifact is not in the store"

    source, store, publisher = parts(bucket, fast_retry)
    counts = run_catalog(source, store, registry, [publisher], tmp_path / "run2")
    assert counts["found"] == 2 and counts["compressed"] + counts["reused"] == 2

    items, total = registry.list_artifacts()
    assert total == 2
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    expected = {f"adapters/{n}/{f}" for n in ADAPTERS for f in ("adapter_config.json", "adapter_model.safetensors")}
    for item in items:
        sha = item.artifact.sha256
        expected |= {f"store/{sha}/{f}" for f in (*ARTIFACT_FILES, MANIFEST)}
        (publication,) = registry.get_artifact(item.artifact.id).publications
        name = publication.uri.rsplit("/", 1)[-1]
        expected |= {f"published/{name}/{f}" for f in ARTIFACT_FILES}
        head = client.head_object(Bucket=bucket, Key=f"published/{name}/compeft.safetensors")
        assert head["Metadata"]["artifact-sha256"] == sha  # the row describes what is at its URI
    assert keys == expected  # no orphan temporary objects, no duplicates
    registry.close()


def test_hub_bursts_and_stalls_are_retried_and_nothing_is_misregistered(hub, tmp_path, monkeypatch, fast_retry):
    """429/5xx bursts during crawl, download and commit and a request stalled past the client's timeout are
    retried and the run completes; a burst longer than the retries fails the run with one line, leaves no
    publication row for what was not committed, and a re-run publishes it once."""
    from storage.retry import RetryPolicy

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("COMPEFT_HUB_TIMEOUT", "1")
    for n, name in enumerate(ADAPTERS):
        hub.state.add_repo(f"alice/{name}", adapter_files(make_adapter(tmp_path / "src" / name, seed=n)), tags=["peft"])
    policy = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    store = open_store(tmp_path / "store")

    def run(work: str):
        source = open_source("hf://alice", hf_endpoint=hub.endpoint, retry_policy=policy)
        publisher = open_publisher("hf://acme", hf_endpoint=hub.endpoint, retry_policy=policy)
        return run_catalog(source, store, registry, [publisher], tmp_path / work)

    hub.state.fail_next(r"^/api/models$", 429, count=2, retry_after=0)  # the crawl's listing
    hub.state.fail_next(r"/resolve/", 503, count=2)  # downloads
    hub.state.stall_next(r"^/api/models/alice/lora-b", 60.0, count=1)  # a request that is not answered in time
    hub.state.fail_next(r"/commit/", 502, count=2)  # the publication's commit
    first = run("run1")
    assert first == {"found": 2, "skipped": 0, "compressed": 2, "reused": 0, "published": 2}
    assert hub.state.abandoned == 1  # the stalled request timed out and was asked again, not waited for

    # a burst longer than the retries: the commit of a changed artifact fails; its publication is not recorded
    hub.state.add_repo("alice/lora-a", adapter_files(make_adapter(tmp_path / "src2" / "lora-a", seed=7)))
    hub.state.fail_next(r"/commit/", 503, count=50)
    with pytest.raises(CompeftError) as info:
        run("run2")
    assert "\n" not in str(info.value) and "503" in str(info.value)
    for item in registry.list_artifacts()[0]:
        for publication in registry.get_artifact(item.artifact.id).publications:
            repo_id, sha = publication.uri[len("hf://"):].split("@")
            assert any(c.sha == sha for c in hub.state.repos[repo_id].commits), "a publication row names no commit"
    hub.state.faults.clear()
    again = run("run3")
    assert again["found"] == 2 and again["published"] == 1
    repo = hub.state.repos["acme/lora-a-compeft"]
    assert len(repo.commits) == 3  # created, first artifact, changed artifact: nothing committed twice
    latest = max(registry.list_artifacts()[0], key=lambda i: i.artifact.id)
    uris = [p.uri for p in registry.get_artifact(latest.artifact.id).publications]
    assert uris == [f"hf://acme/lora-a-compeft@{repo.head.sha}"]
    registry.close()
