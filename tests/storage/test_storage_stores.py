"""Artifact stores: content addressing, idempotent put, verified get, atomic visibility (local + real S3)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from compeft.hashing import sha256_file
from storage.errors import (
    AddressError,
    ArtifactNotFoundError,
    HashMismatchError,
    StoreError,
    ValidationError,
)
from storage.stores import ArtifactStore, open_store
from storage.stores.manifest import MANIFEST


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return open_store(tmp_path / "store")
    bucket = request.getfixturevalue("bucket")
    return open_store(f"s3://{bucket}/artifacts")


def test_put_is_content_addressed_and_idempotent(store, artifact_factory, tmp_path):
    art = artifact_factory(seed=1)
    sha = sha256_file(art / "compeft.safetensors")
    assert not store.exists(sha)
    first = store.put(art)
    assert first.sha256 == sha and first.created and first.uri == store.uri_for(sha)
    assert sha in first.uri
    again = store.put(artifact_factory(seed=1))  # same bytes, another directory
    assert not again.created and again.uri == first.uri
    assert store.exists(sha)
    out = store.get(sha, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "compeft.safetensors"]
    for name in ("README.md", "adapter_config.json", "compeft.safetensors"):
        assert (out / name).read_bytes() == (art / name).read_bytes()


def test_get_unknown_and_invalid_sha(store, tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        store.get("0" * 64, tmp_path / "x")
    with pytest.raises(ValidationError):
        store.get("../../etc/passwd", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_put_rejects_non_artifacts_and_pickles(store, tmp_path, artifact_factory):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StoreError, match="compeft.safetensors"):
        store.put(empty)
    art = artifact_factory(seed=2)
    (art / "extra.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValidationError, match="pickle"):
        store.put(art)


def test_local_get_detects_tampering(tmp_path, artifact_factory):
    store = open_store(tmp_path / "store")
    stored = store.put(artifact_factory(seed=3))
    target = Path(stored.uri) / "compeft.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(HashMismatchError, match="sha256"):
        store.get(stored.sha256, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_s3_get_detects_tampering(s3_client, bucket, tmp_path, artifact_factory):
    store = open_store(f"s3://{bucket}/p")
    stored = store.put(artifact_factory(seed=4))
    s3_client.put_object(Bucket=bucket, Key=f"p/{stored.sha256}/README.md", Body=b"# evil\n")
    with pytest.raises(HashMismatchError, match="README.md"):
        store.get(stored.sha256, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_s3_crashed_upload_is_never_visible(s3_client, bucket, tmp_path, artifact_factory):
    """Kill the upload after the first copy: no manifest, so the artifact is absent; a retry completes it."""
    store = open_store(f"s3://{bucket}/p", s3_client=s3_client)
    art = artifact_factory(seed=5)
    sha = sha256_file(art / "compeft.safetensors")
    calls = {"n": 0}

    def crash_after_first_copy(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")

    s3_client.meta.events.register("before-call.s3.CopyObject", crash_after_first_copy)
    with pytest.raises(KeyboardInterrupt):
        store.put(art)
    s3_client.meta.events.unregister("before-call.s3.CopyObject", crash_after_first_copy)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.startswith(f"p/{sha}/") for k in keys)  # one file was copied...
    assert f"p/{sha}/{MANIFEST}" not in keys  # ...but nothing marks it complete
    assert not store.exists(sha)
    with pytest.raises(ArtifactNotFoundError):
        store.get(sha, tmp_path / "out")
    assert store.put(art).created
    assert store.get(sha, tmp_path / "out").is_dir()
    leftovers = [k for k in (o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]) if "/.tmp/" in k]
    assert all(k.startswith("p/.tmp/") for k in leftovers)  # only the crashed attempt's temp keys remain


def test_local_crashed_copy_is_never_visible(tmp_path, artifact_factory, monkeypatch):
    import storage.stores.local as local_mod

    store = open_store(tmp_path / "store")
    art = artifact_factory(seed=6)
    real_copy = local_mod.shutil.copyfile
    calls = {"n": 0}

    def flaky_copy(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(local_mod.shutil, "copyfile", flaky_copy)
    with pytest.raises(StoreError, match="disk full"):
        store.put(art)
    monkeypatch.setattr(local_mod.shutil, "copyfile", real_copy)
    sha = sha256_file(art / "compeft.safetensors")
    assert not store.exists(sha)
    assert not [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(".")]  # no partial copy left
    assert store.put(art).created


def test_concurrent_puts_converge(store, artifact_factory):
    arts = [artifact_factory(seed=7) for _ in range(4)]
    results, errors = [], []

    def put(path):
        try:
            results.append(store.put(path))
        except Exception as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=put, args=(a,)) for a in arts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.uri for r in results}) == 1
    assert sum(r.created for r in results) >= 1


def test_open_store_rejects_hub_addresses():
    with pytest.raises(AddressError, match="artifact store"):
        open_store("hf://someone")
