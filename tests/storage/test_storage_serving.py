"""storage.serving.ArtifactResolver: registry ids, store hashes, published S3 prefixes and Hub repos, and local
directories become the same checked ResidentArtifact (container bytes and adapter config as compressed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_testlib import HUB_TOKEN

from compeft import api
from compeft.config import CompressionConfig
from compeft.hashing import sha256_file
from storage import catalog
from storage.errors import AddressError, StoreError
from storage.publishers import open_publisher
from storage.registry import open_registry
from storage.serving import ArtifactResolver
from storage.sources import open_source
from storage.stores import open_store
from storage.values import Provenance

CONFIG = CompressionConfig(density=0.5, device="cpu")


@pytest.fixture
def artifact(tmp_path, adapter_factory):
    src = adapter_factory("lora-a", seed=3)
    return src, api.compress(src, tmp_path / "art", CONFIG)


def same(resident, info) -> bool:
    """The resolved artifact holds exactly the compressed container and adapter config."""
    container = Path(info.path) / "compeft.safetensors"
    return (bytes(resident.container.payload.numpy()) in container.read_bytes()
            and resident.container.file_bytes == container.stat().st_size
            and resident.adapter_config == (container.parent / "adapter_config.json").read_bytes())


def test_registry_ids_and_hashes_resolve_through_the_store(tmp_path, artifact, sqlite_url):
    src, info = artifact
    registry = open_registry(sqlite_url)
    store = open_store(tmp_path / "store")
    ref = next(iter(open_source(str(src.parent)).iter_adapters()))
    adapter = catalog.register_adapter(registry, src, ref)
    stored = store.put(Path(info.path))
    row = catalog.register_artifact(registry, adapter, info, stored, CONFIG.key_fields(), CONFIG.key())
    with_store = ArtifactResolver(registry=registry, store=store)
    assert same(with_store(f"registry:{row.id}"), info)
    assert same(with_store(f"sha256:{stored.sha256}"), info)
    assert same(ArtifactResolver(registry=registry)(f"registry:{row.id}"), info)  # the store its location names
    assert same(with_store(info.path), info)
    with pytest.raises(StoreError, match="needs a registry"):
        ArtifactResolver()(f"registry:{row.id}")
    with pytest.raises(AddressError, match="integer id"):
        with_store("registry:x")
    with pytest.raises(StoreError, match="needs a store"):
        ArtifactResolver()(f"sha256:{stored.sha256}")
    with pytest.raises(AddressError, match="not one artifact"):
        with_store("hf://acme")
    registry.close()


def provenance(info) -> Provenance:
    return Provenance(source_uri="hf://bob/lora-a", source_name="lora-a", source_revision="a" * 40,
                      options=CONFIG.key_fields(), package_version="0.1.0",
                      artifact_sha256=sha256_file(Path(info.path) / "compeft.safetensors"))


def test_published_s3_prefixes_resolve(artifact, bucket, s3_client):
    _, info = artifact
    open_publisher(f"s3://{bucket}/published", s3_client=s3_client).publish(Path(info.path), provenance(info))
    assert same(ArtifactResolver(s3_client=s3_client)(f"s3://{bucket}/published/lora-a"), info)


def test_published_hub_repos_resolve(artifact, hub, monkeypatch, fast_retry):
    _, info = artifact
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    publication = open_publisher("hf://acme", hf_endpoint=hub.endpoint, retry_policy=fast_retry).publish(
        Path(info.path), provenance(info))
    resolve = ArtifactResolver(hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    assert same(resolve("hf://acme/lora-a-compeft"), info)
    assert same(resolve(publication.uri), info)  # pinned to the published commit
